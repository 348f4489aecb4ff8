-- member.lua: apply one operation's plan to one member, atomically. Every change to a member goes
-- through here (events, spends, coupon uses, game steps, scheduled care moments); every key
-- shares the member's hash tag, so one call touches one slot.
-- KEYS[1] profile hash   (xp, pts = balance, tier = tier id, debt = points owed, nx = soonest
--                         lot expiry ms, and the profile facts the shop sent)
-- KEYS[2] state hash     (q:<quest>:<period> progress, dq:... completion marker, c:<rule>:<day>
--                         cap use, n:<counter> limited counters; each field expires with its period,
--                         set when the field is created and kept by later writes)
-- KEYS[3] ledger stream  (k kind: g grant | s spend | x expire | r refund | d debt settled;
--                         d points delta, b balance after, r reason, e operation id)
-- KEYS[4] feed stream    (one entry an operation: d = msgpack {{type, data}...}, e = operation id), capped
-- KEYS[5] coupons hash   (coupon id -> msgpack [item, granted at ms, reason, operation id,
--                         state 0 granted | 1 used | 2 revoked, valid until ms, used at ms, order];
--                         a field expires once the coupon is history: used or revoked, the
--                         history period after that; with an end, the period after the end;
--                         without one and unused, never)
-- KEYS[6] lots hash      (expiry ms, "0" for never -> points left of every grant expiring then)
-- KEYS[7] grant records of the operation's own time bucket, "<tag>:g:<bucket>" (field: 10-byte
--         id digest; value: msgpack record of what a refundable operation granted, see RECORD)
-- KEYS[8] dedupe hash of the operation's own time bucket, "<tag>:d:<bucket>" (field: 10-byte id
--         digest; value: 6-byte fingerprint, then, when the operation had a feed entry, its id in
--         5 bytes: see REF_SEQS)
-- KEYS[9..] the other dedupe buckets an earlier sighting of the id could be in; then, for a
--         refund, the last n keys: the grant-record buckets its original could be in
-- ARGV[1] msgpack plan (engine/operations.py, MemberArgs):
--   [1 operation id, 2 fingerprint, 3 now ms, 4 dedupe field, 5 dedupe bucket expiry ms,
--    6 feed length, 7 grants, 8 quests, 9 lot expiry ms (0 never), 10 debits, 11 coupon uses,
--    12 limited counters, 13 effects, 14 coupons to grant, 15 record, 16 reverse,
--    17 ledger audit period ms (entries older, by the server's clock, are trimmed),
--    18 coupon history ms (how long a coupon used, revoked or past its end is kept),
--    19 coupons to revoke (ids: a compensation takes back what a reversed step granted),
--    20 inventory, 21 streak]
--   grant:   [currency "x"|"p", amount, reason, cap field, cap (0 none), cap field expiry ms,
--             1 when the tier's points multiplier applies]
--   quest:   [id, field, increment, target, field expiry ms (0 never), xp, points, {{item, valid ms}}]
--   debit:   [amount of points, reason]  (refused whole when the live balance cannot cover it)
--   coupon use: [coupon id, order]
--   counter: [field, increment, limit, field expiry ms (0 never)]
--   effect:  msgpack [type, data], packed by the caller: passed to the feed byte for byte (never
--            unpacked here, so {} stays a map and integers past 2^53 stay exact)
--   inventory: [state field, delta, cap (0 none), field expiry ms (0 never), item label]: counted
--            items a member holds (spins, cards); a debit below zero refuses the whole operation,
--            a grant past the cap is cut to it
--   streak:  {} or [state field, day number, make-up day (0: a check-in of that day), make-up
--            max age days, thresholds {{days, xp, points, {{item, valid ms}}, {inventory}}...},
--            name]: the
--            rules of engine/streaks.py (state "last:current:longest:gap:before:paid:before_paid")
--   coupon:  [item, valid ms (0: no end), reason]
--   record:  {} or [kept until ms, the operation's amount (0 none), its time ms, its type's tag]:
--             keep what the operation grants, for a refund, under its id digest (as dedupe)
--   reverse: {} or [id digest of the original, amount (0: all that remains), refund window ms,
--             the original type's tag, n record buckets]: take back (a share of) what it granted
-- ARGV[2] msgpack tiers, flat: {id, xp threshold, points multiplier in thousandths, id, ...}
-- ARGV[3] pub/sub channel of the member ("" publishes nothing: a dry run on copied keys)
-- ARGV[4] msgpack tier rewards: {[xp, points, {{item, valid ms}}]} by tier, unpacked only when a
--         member climbs (nested tables cost several times a flat one to unpack, every call)
-- returns, when applied, the message it published: msgpack [feed entry id, operation id,
--   [[type, data]...]] (entry id "" when the operation had no effect); [2] same id, other body;
--   [3, reason, index] refused, nothing written (reason: insufficient_points | not_found |
--   already_used | revoked | expired | limit_reached | unknown_original | already_refunded |
--   refund_window_passed | no_amount | amount_exceeds_original | insufficient_items | not_missed |
--   too_old | out_of_order; index: which debit, use, counter or inventory line);
--   a duplicate: [0, feed entry id, effects] while the feed keeps the original entry,
--   [0, feed entry id] once trimmed, [0] when the original had no effect

local plan = cmsgpack.unpack(ARGV[1])
local op_id, fingerprint, now_ms, dd_field, dd_expire_ms, feed_length = plan[1], plan[2], plan[3], plan[4], plan[5], plan[6]
local grants, quests, lot_expiry, debits, uses, counters, passed = plan[7], plan[8], plan[9], plan[10], plan[11], plan[12], plan[13]
local coupon_grants, record, reverse, ledger_keep_ms, coupon_keep_ms = plan[14], plan[15], plan[16], plan[17], plan[18]
local revokes, inventory, streak = plan[19], plan[20], plan[21]
local RECORDS, DEDUPE = 7, 8
local last_dedupe = #KEYS - (reverse[5] or 0)

-- A dedupe entry names the operation's feed entry <ms>-<seq> in 5 bytes (every byte of an entry
-- is multiplied by the operations retained): ms as an offset from the start of the bucket holding
-- the entry (7 days of operation time; it was applied between a skew before and a retention
-- after), biased to stay positive, times REF_SEQS, plus seq. Past its bounds: no reference.
local BUCKET_MS = 7 * 86400000  -- keys.DEDUPE_BUCKET_MS
local REF_SEQS = 64
local REF_BIAS_MS = 2147483648  -- 2^31 ms, about 24 days before the bucket's start
local REF_MAX = 1099511627776  -- 2^40
local function bucket_start_ms(key) return tonumber(string.match(key, ':d:(%-?%d+)$')) * BUCKET_MS end

for i = DEDUPE, last_dedupe do
  local seen = redis.call('HGET', KEYS[i], dd_field)
  if seen then
    if string.sub(seen, 1, 6) ~= fingerprint then return cmsgpack.pack({2}) end
    if #seen < 11 then return cmsgpack.pack({0}) end
    -- Replay the original, as a payment API replays its first response: a caller that lost the
    -- first reply learns what was applied (while the feed still keeps the entry).
    local packed_ref = struct.unpack('>I5', seen, 7)
    local seq = packed_ref % REF_SEQS
    local ms = bucket_start_ms(KEYS[i]) + (packed_ref - seq) / REF_SEQS - REF_BIAS_MS
    local original = string.format('%d-%d', ms, seq)
    local entry = redis.call('XRANGE', KEYS[4], original, original)
    if #entry == 0 then return cmsgpack.pack({0, original}) end
    local packed = pairs_of(entry[1][2])['d']
    if not packed then return cmsgpack.pack({0, original}) end
    return '\147' .. cmsgpack.pack(0) .. cmsgpack.pack(original) .. packed
  end
end

-- The dedupe entry is written last, with the feed entry id of what was applied.
local function remember(entry_id)
  local value = fingerprint
  if entry_id then
    local dash = string.find(entry_id, '-', 1, true)
    local seq = tonumber(string.sub(entry_id, dash + 1))
    local offset = tonumber(string.sub(entry_id, 1, dash - 1)) - bucket_start_ms(KEYS[DEDUPE]) + REF_BIAS_MS
    local ref = offset * REF_SEQS + seq
    if seq < REF_SEQS and offset >= 0 and ref < REF_MAX then value = value .. struct.pack('>I5', ref) end
  end
  redis.call('HSET', KEYS[DEDUPE], dd_field, value)
  expire_no_sooner(KEYS[DEDUPE], dd_expire_ms)
end

-- [entry id, operation id, effects] built from parts, so the effects are packed once for the
-- stream entry, the message and the reply alike (0x93: a msgpack array of three).
local function message_of(entry_id, packed_effects)
  return '\147' .. cmsgpack.pack(entry_id) .. cmsgpack.pack(op_id) .. packed_effects
end

local stored = redis.call('HMGET', KEYS[1], 'xp', 'pts', 'tier', 'debt', 'nx')
local xp = tonumber(stored[1]) or 0
local points = tonumber(stored[2]) or 0
local debt = tonumber(stored[4]) or 0
local next_expiry = tonumber(stored[5]) or 0
local expiring = next_expiry > 0 and next_expiry <= now_ms

if #grants == 0 and #quests == 0 and #debits == 0 and #uses == 0 and #counters == 0 and #passed == 0
  and #coupon_grants == 0 and #record == 0 and #reverse == 0 and #revokes == 0 and #inventory == 0
  and #streak == 0 and not expiring then
  remember(nil)
  return message_of('', cmsgpack.pack({}))
end

-- Lots, read only when something needs all of them (an expiry is due, or a debit).
local lots = nil -- {{expiry, amount}, ...} soonest first, never-expiring last
local lot_added = 0 -- points granted into this operation's lot, not yet written
local function write_lot()
  if lot_added > 0 then redis.call('HINCRBY', KEYS[6], int(lot_expiry), lot_added); lot_added = 0 end
end
local function load_lots()
  if lots then return lots end
  write_lot()
  lots = {}
  local flat = redis.call('HGETALL', KEYS[6])
  for i = 1, #flat, 2 do lots[#lots + 1] = {tonumber(flat[i]), tonumber(flat[i + 1])} end
  table.sort(lots, function(a, b)
    if a[1] == 0 then return false end
    if b[1] == 0 then return true end
    return a[1] < b[1]
  end)
  return lots
end

-- --- checks: a refusal writes nothing, so every check comes before the first write ------------

local due = 0 -- points whose lots have expired by now
if expiring then
  for _, lot in ipairs(load_lots()) do
    if lot[1] > 0 and lot[1] <= now_ms then due = due + lot[2] end
  end
end
local debit_total = 0
for i, d in ipairs(debits) do
  debit_total = debit_total + d[1]
  if debit_total > points - due then return cmsgpack.pack({3, 'insufficient_points', i - 1}) end
end
local coupon_records = {}
for i, u in ipairs(uses) do
  local raw = redis.call('HGET', KEYS[5], u[1])
  if not raw then return cmsgpack.pack({3, 'not_found', i - 1}) end
  local c = cmsgpack.unpack(raw)
  if c[5] == 1 then return cmsgpack.pack({3, 'already_used', i - 1}) end
  if c[5] == 2 then return cmsgpack.pack({3, 'revoked', i - 1}) end
  if c[6] > 0 and c[6] <= now_ms then return cmsgpack.pack({3, 'expired', i - 1}) end
  coupon_records[i] = c
end
local counter_values = {}
for i, n in ipairs(counters) do
  local used = tonumber(redis.call('HGET', KEYS[2], n[1])) or 0
  if used + n[2] > n[3] then return cmsgpack.pack({3, 'limit_reached', i - 1}) end
  counter_values[i] = used
end

-- Inventory: a debit may not take a count below zero; a grant stops at the cap.
local inventory_after = {}
if #inventory > 0 then
  local fields = {}
  for i, v in ipairs(inventory) do fields[i] = v[1] end
  local held = redis.call('HMGET', KEYS[2], unpack(fields))
  local running = {}
  for i, v in ipairs(inventory) do
    local before = running[v[1]] or tonumber(held[i]) or 0
    local after = before + v[2]
    if after < 0 then return cmsgpack.pack({3, 'insufficient_items', i - 1}) end
    if v[3] > 0 and after > v[3] then after = math.max(v[3], before) end
    running[v[1]] = after
    inventory_after[i] = {before, after}
  end
end

-- Streak (engine/streaks.py, rule for rule): the next state, and the thresholds reached.
local streak_next, streak_due, streak_was = nil, {}, nil
if #streak > 0 then
  local raw = redis.call('HGET', KEYS[2], streak[1])
  local s = {0, 0, 0, 0, 0, 0, 0} -- last, current, longest, gap, before, paid, before_paid
  if raw then
    local i = 1
    for n in string.gmatch(raw, '[^:]+') do s[i] = tonumber(n); i = i + 1 end
  end
  streak_was = s[2]
  local day, makeup, max_age = streak[2], streak[3], streak[4]
  local n = nil
  if makeup == 0 then
    if s[1] > 0 and day < s[1] then return cmsgpack.pack({3, 'out_of_order', 0}) end
    if day ~= s[1] then
      if s[1] > 0 and day == s[1] + 1 then n = {day, s[2] + 1, s[3], s[4], s[5], s[6], s[7]}
      elseif s[1] > 0 and day == s[1] + 2 then n = {day, 1, s[3], day - 1, s[2], 0, s[6]}
      else n = {day, 1, s[3], 0, 0, 0, 0} end
    end
  else
    if makeup >= day or (s[1] > 0 and makeup <= s[1] and makeup ~= s[4]) then return cmsgpack.pack({3, 'not_missed', 0}) end
    if makeup < day - max_age then return cmsgpack.pack({3, 'too_old', 0}) end
    if s[1] > 0 and makeup == s[1] + 1 then n = {makeup, s[2] + 1, s[3], s[4], s[5], s[6], s[7]}
    elseif s[4] > 0 and makeup == s[4] then n = {s[1], s[5] + 1 + s[2], s[3], 0, 0, math.max(s[6], s[7]), 0}
    else return cmsgpack.pack({3, 'not_missed', 0}) end
  end
  if n then
    for _, t in ipairs(streak[5]) do
      if t[1] > n[6] and t[1] <= n[2] then streak_due[#streak_due + 1] = t end
    end
    table.sort(streak_due, function(a, b) return a[1] < b[1] end)
    if #streak_due > 0 then n[6] = streak_due[#streak_due][1] end
    n[3] = math.max(n[3], n[2])
    streak_next = n
  end
end

-- RECORD: what a refundable operation granted, kept for its refund window:
-- {1 time ms, 2 amount, 3 xp, 4 points (by rules), 5 lot expiry, 6 quests, 7 amount refunded,
--  8 xp taken back, 9 points taken back, 10 fully refunded 0|1, 11 type tag}
-- quest: {id, progress field, increment, 1 when this operation completed it, target, bonus xp,
--         bonus points, {coupon ids}}
local refund = nil
if #reverse > 0 then
  local field, amount, window_ms, tag = reverse[1], reverse[2], reverse[3], reverse[4]
  local raw, key = nil, nil
  for i = last_dedupe + 1, #KEYS do
    raw = redis.call('HGET', KEYS[i], field)
    if raw then key = KEYS[i]; break end
  end
  if not raw then return cmsgpack.pack({3, 'unknown_original', 0}) end
  local rec = cmsgpack.unpack(raw)
  if rec[11] ~= tag then return cmsgpack.pack({3, 'unknown_original', 0}) end  -- another type's
  if rec[1] + window_ms < now_ms then return cmsgpack.pack({3, 'refund_window_passed', 0}) end
  if rec[10] == 1 then return cmsgpack.pack({3, 'already_refunded', 0}) end
  local refunded = rec[2]
  if amount > 0 then
    if rec[2] == 0 then return cmsgpack.pack({3, 'no_amount', 0}) end
    if rec[7] + amount > rec[2] then return cmsgpack.pack({3, 'amount_exceeds_original', 0}) end
    refunded = rec[7] + amount
  end
  refund = {rec = rec, key = key, field = field, refunded = refunded, full = amount == 0 or refunded >= rec[2]}
end

-- --- writes -----------------------------------------------------------------------------------

local effects = {}
local function effect(kind, data) effects[#effects + 1] = {kind, data} end

-- Entries are kept for the audit period, by the server's clock (their ids are its time): the
-- trim is approximate (whole stream nodes), so a little more is kept, never less. Each entry
-- holds the balance after it, so what remains still proves itself from its first entry on.
local ledger_horizon = nil
local function ledger(kind, delta, reason)
  if not ledger_horizon then
    local t = redis.call('TIME')
    ledger_horizon = int(tonumber(t[1]) * 1000 - ledger_keep_ms)
  end
  redis.call('XADD', KEYS[3], 'MINID', '~', ledger_horizon, '*', 'k', kind, 'd', int(delta), 'b', int(points), 'r', reason, 'e', op_id)
end

-- The soonest expiry among the lots left, after the lots table changed.
local function recompute_next_expiry()
  next_expiry = 0
  for _, lot in ipairs(lots) do
    if lot[1] > 0 and lot[2] > 0 then next_expiry = lot[1]; return end
  end
end

local function expire_due()
  for _, lot in ipairs(load_lots()) do
    if lot[1] > 0 and lot[1] <= now_ms and lot[2] > 0 then
      points = points - lot[2]
      redis.call('HDEL', KEYS[6], int(lot[1]))
      ledger('x', -lot[2], 'expired')
      effect('points_expired', {amount = lot[2], balance = points, expired_at_ms = lot[1]})
      lot[2] = 0
    end
  end
  recompute_next_expiry()
end
if due > 0 or expiring then expire_due() end

local tiers = cmsgpack.unpack(ARGV[2]) -- tier i: id tiers[3i-2], XP tiers[3i-1], multiplier tiers[3i]
local tier_count = #tiers / 3
local tier = 1
if stored[3] then
  -- Tiers are stored by id, so a programme that reorders them keeps members where they are.
  -- A tier id the programme no longer has: the highest tier the XP reaches, with no rewards.
  local found = false
  for i = 1, tier_count do
    if tiers[3 * i - 2] == stored[3] then tier = i; found = true end
  end
  if not found then
    for i = 1, tier_count do
      if xp >= tiers[3 * i - 1] then tier = i end
    end
  end
end
local start_tier = tier

local function grant_xp(n, reason)
  xp = xp + n
  effect('xp', {amount = n, total = xp, reason = reason})
end

-- Points land in the lot of this operation's expiry; a debt is settled first.
local function grant_points(n, reason)
  points = points + n
  ledger('g', n, reason)
  effect('points', {amount = n, balance = points, reason = reason})
  local settled = math.min(n, debt)
  if settled > 0 then
    debt = debt - settled
    points = points - settled
    ledger('d', -settled, 'debt')
    effect('debt_settled', {amount = settled, balance = points, debt = debt})
  end
  if n > settled then
    lot_added = lot_added + n - settled
    if lot_expiry > 0 and (next_expiry == 0 or lot_expiry < next_expiry) then next_expiry = lot_expiry end
    if lots then lots = nil end -- stale: a later debit reads them afresh
  end
end

local coupon_seq = 0
-- New coupons by the expiry of their field (0: none), each list id, record, ...: one write each.
local new_coupons, coupon_expiries = {}, {}
local function grant_coupon(item, valid_ms, reason)
  coupon_seq = coupon_seq + 1
  local id = op_id .. ':c' .. coupon_seq
  local until_ms = valid_ms > 0 and now_ms + valid_ms or 0
  local forget_ms = until_ms > 0 and until_ms + coupon_keep_ms or 0
  local batch = new_coupons[forget_ms]
  if not batch then batch = {}; new_coupons[forget_ms] = batch; coupon_expiries[#coupon_expiries + 1] = forget_ms end
  batch[#batch + 1] = id
  batch[#batch + 1] = cmsgpack.pack({item, now_ms, reason, op_id, 0, until_ms, 0, ''})
  effect('reward', {kind = 'coupon', item = item, coupon = id, reason = reason, expires_at_ms = until_ms})
  return id
end

local function grant_bundle(bonus_xp, bonus_points, coupons, reason)
  if bonus_xp > 0 then grant_xp(bonus_xp, reason) end
  if bonus_points > 0 then grant_points(bonus_points, reason) end
  local ids = {}
  for _, c in ipairs(coupons) do ids[#ids + 1] = grant_coupon(c[1], c[2], reason) end
  return ids
end

-- Take n points (no more than the balance) out of the lots: the lot `first` first when given,
-- then the soonest-expiring, never-expiring lots last.
local function take_from_lots(n, first)
  local left = n
  local function take(lot)
    local t = math.min(left, lot[2])
    if t > 0 then
      lot[2] = lot[2] - t
      left = left - t
      if lot[2] == 0 then redis.call('HDEL', KEYS[6], int(lot[1]))
      else redis.call('HINCRBY', KEYS[6], int(lot[1]), -t) end
    end
  end
  if first then
    for _, lot in ipairs(load_lots()) do
      if lot[1] == first then take(lot) end
    end
  end
  for _, lot in ipairs(load_lots()) do
    if left == 0 then break end
    take(lot)
  end
  points = points - n
  recompute_next_expiry()
end

for _, d in ipairs(debits) do
  take_from_lots(d[1])
  ledger('s', -d[1], d[2])
  effect('points', {amount = -d[1], balance = points, reason = d[2]})
end

for i, u in ipairs(uses) do
  local c = coupon_records[i]
  c[5], c[7], c[8] = 1, now_ms, u[2]
  redis.call('HSETEX', KEYS[5], 'PXAT', int(now_ms + coupon_keep_ms), 'FIELDS', 1, u[1], cmsgpack.pack(c))
  effect('coupon_used', {coupon = u[1], item = c[1], order = u[2]})
end

for i, n in ipairs(counters) do
  redis.call('HINCRBY', KEYS[2], n[1], n[2])
  if n[4] > 0 and counter_values[i] == 0 then redis.call('HPEXPIREAT', KEYS[2], n[4], 'FIELDS', 1, n[1]) end
end

for i, v in ipairs(inventory) do
  local before, after = inventory_after[i][1], inventory_after[i][2]
  if after ~= before then
    if v[4] > 0 then redis.call('HSETEX', KEYS[2], 'PXAT', v[4], 'FIELDS', 1, v[1], int(after))
    else redis.call('HSET', KEYS[2], v[1], int(after)) end
  end
  effect('inventory', {item = v[5], amount = after - before, count = after})
end

-- A coupon not yet used is revoked (used, revoked or gone: nothing to take back).
local function revoke_coupon(id, reason)
  local raw = redis.call('HGET', KEYS[5], id)
  if raw then
    local c = cmsgpack.unpack(raw)
    if c[5] == 0 then
      c[5] = 2
      redis.call('HSETEX', KEYS[5], 'PXAT', int(now_ms + coupon_keep_ms), 'FIELDS', 1, id, cmsgpack.pack(c))
      effect('reward_revoked', {coupon = id, item = c[1], reason = reason})
    end
  end
end
for _, id in ipairs(revokes) do revoke_coupon(id, 'undo') end

-- A refund takes back a share of what the rules granted (all that remains when it is the last),
-- and, when it refunds the whole, the quest progress made and its bonuses, revoking coupons not
-- yet used. Points come out of the original's lot first; a shortfall becomes a debt. XP never
-- goes below zero; a tier reached is kept (its review is the lifecycle's, not a refund's).
if refund then
  local rec, reason = refund.rec, 'refund'
  local take_xp, take_points
  if refund.full then
    take_xp, take_points = rec[3] - rec[8], rec[4] - rec[9]
  else
    take_xp = math.floor(rec[3] * refund.refunded / rec[2]) - rec[8]
    take_points = math.floor(rec[4] * refund.refunded / rec[2]) - rec[9]
  end
  rec[8], rec[9] = rec[8] + take_xp, rec[9] + take_points
  local revoke = {}
  if refund.full then
    for _, q in ipairs(rec[6]) do
      local quest_id, field, increment, completed, target = q[1], q[2], q[3], q[4], q[5]
      local progress = tonumber(redis.call('HGET', KEYS[2], field))
      local still_done = false
      if progress then
        local after = math.max(progress - increment, 0)
        if after == 0 then redis.call('HDEL', KEYS[2], field) else redis.call('HINCRBY', KEYS[2], field, -increment) end
        -- Completed by this operation but still met by the others of its period: kept.
        still_done = completed == 1 and after >= target
        if completed == 1 and not still_done then redis.call('HDEL', KEYS[2], 'd' .. field) end
        effect('quest_progress', {quest = quest_id, progress = math.min(after, target), target = target})
      end
      if completed == 1 and not still_done then
        take_xp, take_points = take_xp + q[6], take_points + q[7]
        for _, id in ipairs(q[8]) do revoke[#revoke + 1] = id end
      end
    end
  end
  if take_xp > 0 then
    local n = math.min(take_xp, xp)
    xp = xp - n
    effect('xp', {amount = -n, total = xp, reason = reason})
  end
  if take_points > 0 then
    local n = math.min(take_points, points)
    if n > 0 then
      take_from_lots(n, rec[5])
      ledger('r', -n, reason)
      effect('points', {amount = -n, balance = points, reason = reason})
    end
    if take_points > n then
      debt = debt + take_points - n
      effect('debt', {amount = take_points - n, debt = debt})
    end
  end
  for _, id in ipairs(revoke) do revoke_coupon(id, reason) end
  rec[7] = refund.refunded
  if refund.full then rec[10] = 1 end
  redis.call('HSET', refund.key, refund.field, cmsgpack.pack(rec))
end

-- What this operation grants, when it may be refunded (tier rewards are not: see above).
local granted_xp, granted_points, granted_quests = 0, 0, {}

-- Rules: points are multiplied by the tier the member holds before this operation.
-- State fields (rule caps, quest progress and completion markers) are read in one HMGET and
-- written in one HSETEX per expiry: a redis.call costs the script about what the command does.
-- A new field gets its period's expiry as it is written; a field that exists keeps its own (the
-- period it belongs to never changes).
local state_fields = {}
for _, g in ipairs(grants) do
  if g[5] > 0 then state_fields[#state_fields + 1] = g[4] end
end
for _, q in ipairs(quests) do
  state_fields[#state_fields + 1] = q[2]
  state_fields[#state_fields + 1] = 'd' .. q[2]
end
local state = {} -- field -> number, for the fields read
local state_written, state_order = {}, {} -- field -> expiry ms of a new field (0 none); order
if #state_fields > 0 then
  local values = redis.call('HMGET', KEYS[2], unpack(state_fields))
  for i, f in ipairs(state_fields) do state[f] = tonumber(values[i]) end
end
local state_existed = {}
for f, _ in pairs(state) do state_existed[f] = true end
local function set_state(field, value, expire_ms)
  if state_written[field] == nil then state_order[#state_order + 1] = field end
  state[field] = value
  state_written[field] = state_existed[field] and 0 or expire_ms
end
local function write_state()
  local by_expiry = {} -- expiry ms (0: keep the field's own) -> field, value, ...
  local expiries = {}
  for _, f in ipairs(state_order) do
    local e = state_written[f]
    local t = by_expiry[e]
    if not t then t = {}; by_expiry[e] = t; expiries[#expiries + 1] = e end
    t[#t + 1] = f
    t[#t + 1] = int(state[f])
  end
  for _, e in ipairs(expiries) do
    local t = by_expiry[e]
    if e == 0 then redis.call('HSETEX', KEYS[2], 'KEEPTTL', 'FIELDS', #t / 2, unpack(t))
    else redis.call('HSETEX', KEYS[2], 'PXAT', e, 'FIELDS', #t / 2, unpack(t)) end
  end
end

local multiplier = tiers[3 * tier]
for _, g in ipairs(grants) do
  local n = g[2]
  if g[1] == 'p' and g[7] == 1 then n = math.floor(n * multiplier / 1000) end
  local cap = g[5]
  if cap > 0 and n > 0 then
    local used = state[g[4]] or 0
    if used + n > cap then n = cap - used end
    if n > 0 then set_state(g[4], used + n, g[6]) end
  end
  if n > 0 then
    if g[1] == 'x' then
      grant_xp(n, g[3]); granted_xp = granted_xp + n
    else
      grant_points(n, g[3]); granted_points = granted_points + n
    end
  end
end

-- Quests: a quest completes at most once per period, whatever the programme later does to its
-- target: completion is a marker field ('d' .. progress field, expiring with it), not inferred
-- from progress. A target lowered below a member's progress completes on the next event.
-- Progress keeps counting after completion, silently, so a refund of the order that completed
-- it reopens the quest only when the others of its period no longer meet the target.
for _, q in ipairs(quests) do
  local quest_id, field, increment, target, expire_ms = q[1], q[2], q[3], q[4], q[5]
  local done_field = 'd' .. field
  local after = (state[field] or 0) + increment
  set_state(field, after, expire_ms)
  if state[done_field] then
    granted_quests[#granted_quests + 1] = {quest_id, field, increment, 0, target, 0, 0, {}}
  else
    if after >= target then
      set_state(done_field, now_ms, expire_ms)
      effect('quest_completed', {quest = quest_id, progress = target, target = target})
      local coupons = grant_bundle(q[6], q[7], q[8], 'quest:' .. quest_id)
      granted_quests[#granted_quests + 1] = {quest_id, field, increment, 1, target, q[6], q[7], coupons}
    else
      effect('quest_progress', {quest = quest_id, progress = after, target = target})
      granted_quests[#granted_quests + 1] = {quest_id, field, increment, 0, target, 0, 0, {}}
    end
  end
end

for _, c in ipairs(coupon_grants) do grant_coupon(c[1], c[2], c[3]) end
if streak_next then
  redis.call('HSET', KEYS[2], streak[1], table.concat(streak_next, ':'))
  effect('streak', {streak = streak[6], current = streak_next[2], longest = streak_next[3],
    day = streak[3] > 0 and streak[3] or streak[2], made_up = streak[3] > 0})
  for _, t in ipairs(streak_due) do
    grant_bundle(t[2], t[3], t[4], 'streak:' .. streak[6] .. ':' .. t[1])
    for _, v in ipairs(t[5] or {}) do -- inventory the reward grants: [field, amount, cap, expiry, label]
      local before = tonumber(redis.call('HGET', KEYS[2], v[1])) or 0
      local after = before + v[2]
      if v[3] > 0 and after > v[3] then after = math.max(v[3], before) end
      if after ~= before then redis.call('HSET', KEYS[2], v[1], int(after)) end
      effect('inventory', {item = v[5], amount = after - before, count = after})
    end
  end
end

-- A game's effects are bytes packed by the caller: kept as they are (see the header).
local raw_effects = false
for _, e in ipairs(passed) do effects[#effects + 1] = e; raw_effects = true end

-- Tiers: climb while lifetime XP reaches the next threshold; each rung's rewards are granted
-- on the way (their XP may lift the member further).
local rewards = nil
while tier < tier_count and xp >= tiers[3 * tier + 2] do
  tier = tier + 1
  local id = tiers[3 * tier - 2]
  effect('tier_up', {from = tiers[3 * tier - 5], to = id})
  rewards = rewards or cmsgpack.unpack(ARGV[4])
  local r = rewards[tier]
  grant_bundle(r[1], r[2], r[3], 'tier:' .. id)
end

write_state()
write_lot()
for _, e in ipairs(coupon_expiries) do
  local batch = new_coupons[e]
  if e == 0 then redis.call('HSET', KEYS[5], unpack(batch))
  else redis.call('HSETEX', KEYS[5], 'PXAT', int(e), 'FIELDS', #batch / 2, unpack(batch)) end
end

if #record > 0 then
  local rec = {record[3], record[2], granted_xp, granted_points, lot_expiry, granted_quests, 0, 0, 0, 0, record[4]}
  redis.call('HSET', KEYS[RECORDS], dd_field, cmsgpack.pack(rec))
  expire_no_sooner(KEYS[RECORDS], record[1])
end

if #effects == 0 then
  remember(nil)
  return message_of('', cmsgpack.pack({}))
end

-- Points granted into a lot already past its expiry (an operation with an old time, whose lot's
-- expire job may have run before it) are written off at once, not left for a later operation.
if next_expiry > 0 and next_expiry <= now_ms then expire_due() end

local profile = {'xp', int(xp), 'pts', int(points)}
if tier ~= start_tier or not stored[3] then profile[#profile + 1] = 'tier'; profile[#profile + 1] = tiers[3 * tier - 2] end
if debt > 0 or stored[4] then profile[#profile + 1] = 'debt'; profile[#profile + 1] = int(debt) end
if next_expiry ~= (tonumber(stored[5]) or 0) then profile[#profile + 1] = 'nx'; profile[#profile + 1] = int(next_expiry) end
redis.call('HSET', KEYS[1], unpack(profile))

-- One feed entry per operation (an XADD costs more than packing all the effects once); effect i
-- of entry <ms>-<seq> is feed id <ms>-<seq>-<i> to clients.
local packed
if raw_effects then
  -- A msgpack array by hand: its header, then each effect packed (or as the caller packed it).
  local n = #effects
  local parts = {n < 16 and string.char(0x90 + n) or ('\220' .. struct.pack('>I2', n))}
  for i, e in ipairs(effects) do parts[i + 1] = type(e) == 'string' and e or cmsgpack.pack(e) end
  packed = table.concat(parts)
else
  packed = cmsgpack.pack(effects)
end
local entry_id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', feed_length, '*', 'd', packed, 'e', op_id)
local message = message_of(entry_id, packed)
remember(entry_id)
if ARGV[3] ~= '' then redis.call('SPUBLISH', ARGV[3], message) end
return message
