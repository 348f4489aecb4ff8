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
--         5 bytes: see the dedupe lookup below)
-- KEYS[9..] the other dedupe buckets an earlier sighting of the id could be in; then, for a
--         refund, the last n keys: the grant-record buckets its original could be in
-- ARGV[1] the plan (engine/operations.py: MemberArgs, packed by MemberPlan.script_arg): msgpack
--   values back to back, not in an array, read into one table `p`, every grant and quest spelled
--   out flat: cmsgpack grows each table it unpacks one element at a time, so a nested table (a
--   grant, a quest, a quest's coupon) cost more than all the scalars in it.
--   p[1] operation id, 2 fingerprint, 3 now ms, 4 dedupe field, 5 dedupe bucket expiry ms,
--   6 start ms of the dedupe bucket (KEYS[8]'s), 7 feed length, 8 lot expiry ms (0 never),
--   9 ledger audit period ms (entries older, by the server's clock, are trimmed), 10 coupon
--   history ms (how long a coupon used, revoked or past its end is kept),
--   11..14 record: kept until ms (0: no record), the operation's amount (0 none), its time ms,
--            its type's tag: keep what the operation grants, for a refund, under its id digest
--            (as dedupe)
--   15 how many values the grants take, then the grants, each one's values in a row:
--   grant:   currency "x"|"p"|"i", amount, reason, cap field, cap (0 none), cap field expiry ms,
--            1 when the tier's points multiplier applies; and for "i" (a counted item, by a rule)
--            3 more: item field, item cap (0 none), item name: added like an inventory line's
--            grant, the daily cap counting only what the member got
--   then how many values the quests take, then the quests, the same way:
--   quest:   id, field, increment, target, field expiry ms (0 never), xp, points, n coupons,
--            n x (item, valid ms), n items, n x (the 5 values of an inventory line)
--   then, only when one of them is not empty, the rarer parts, a msgpack array each: debits,
--   coupon uses, limited counters, effects, coupons to grant, reverse, coupons to revoke (ids: a
--   compensation takes back what a reversed step granted), inventory, streak
--   debit:   [amount of points, reason]  (refused whole when the live balance cannot cover it)
--   coupon use: [coupon id, order]
--   counter: [field, increment, limit, field expiry ms (0 never)]
--   effect:  msgpack [type, data], packed by the caller: passed to the feed byte for byte (never
--            unpacked here, so {} stays a map and integers past 2^53 stay exact)
--   inventory: [state field, delta, cap (0 none), field expiry ms (0 never), item label]: counted
--            items a member holds (spins, cards); a debit below zero refuses the whole operation,
--            a grant past the cap is cut to it. Rules ("i" grants), quests, streak thresholds and
--            tiers grant items too (grant_item): cut at the cap the same way, never below what
--            the member holds. A refund takes none of them back (as it keeps a tier's rewards)
--   streak:  {} or [state field, day number, make-up day (0: a check-in of that day), make-up
--            max age days, thresholds {{days, xp, points, {{item, valid ms}}, {inventory}}...},
--            name]: the
--            rules of engine/streaks.py (state "last:current:longest:gap:before:paid:before_paid")
--   coupon:  [item, valid ms (0: no end), reason]
--   reverse: {} or [id digest of the original, amount (0: all that remains), refund window ms,
--             the original type's tag, n record buckets]: take back (a share of) what it granted
--   marks:   (sent only when set, after streak) [[profile field, value ("" removes it)]...]: the
--            dormancy mark "dm" (engine/care.py)
--   targeting: (sent only when set, after marks) [required audience index (-1: none), targets
--            flat (kind "g"|"q", offset of the grant's or quest's first value from the first
--            grant's or quest's, audience index), audiences, boosts]: engine/targeting.py. An
--            audience is [tier ids ("" the first tier, for a member with none stored), tags, joined
--            within ms (0: any), dormant -1 any | 0 not | 1 only], tested on the member before
--            the operation; a target not for the member earns nothing, a required one refuses
--            the operation `not_eligible`. A boost: [multiplier in thousandths, tier ids ({}: all)]
-- ARGV[2] tiers: msgpack values back to back (as ARGV[1]): id, xp threshold, points multiplier
--         in thousandths, id, ...
-- ARGV[3] pub/sub channel of the member ("" publishes nothing: a dry run on copied keys)
-- ARGV[4] msgpack tier rewards: {[xp, points, {{item, valid ms}}, {inventory} (absent: no counted
--         items)]} by tier, unpacked only when a member climbs (nested tables cost several times a
--         flat one to unpack, every call)
-- ARGV[5] (absent or "": none) the wake-up gift, msgpack [xp, points, {{item, valid ms}}, {inventory}],
--         sent with the programme's return event: a dormant member's (profile "dm") return ends the
--         dormancy with it. Every operation whose id is not the engine's own ("rk:...", a job's or
--         a care moment's) is the member's activity: the profile's "la" (last active: the
--         operation's now, by the service's clock) is written with the balance
-- ARGV[6] (absent or "": tiers by lifetime XP, kept for good) the tier policy (engine/tiering.py),
--         msgpack values back to back: 1 spend | 0 XP qualifies, the spend counted (-1: a refund's
--         amount taken back), the field counted in, its expiry ms (0 never), held until ms for a
--         tier reached now (0: for good), grace ms, programme version, n, the window's n fields;
--         then, for a review (a `tier` job), its time ms (the expiry it reviews), held until ms
--         when kept, n, n more fields it reads. Profile "te": the tier's expiry, "tg": in grace, the
--         expiry the grace extends; state "tl": the tier log, msgpack [[ms, change, from, to,
--         version]...], the last 20
-- returns, when applied, the message it published: msgpack [feed entry id, operation id,
--   [[type, data]...]] (entry id "" when the operation had no effect); [2] same id, other body;
--   [3, reason, index] refused, nothing written (reason: insufficient_points | not_found |
--   already_used | revoked | expired | limit_reached | unknown_original | already_refunded |
--   refund_window_passed | no_amount | amount_exceeds_original | insufficient_items | not_missed |
--   too_old | out_of_order; index: which debit, use, counter or inventory line);
--   a duplicate: [0, feed entry id, effects] while the feed keeps the original entry,
--   [0, feed entry id] once trimmed, [0] when the original had no effect
--
-- Cost: an award is the hot path, and most of its server time is this script's own Lua, not its
-- commands: every table, string and function made costs an allocation and then its share of the
-- garbage collector, and each redis.call costs several times a command's own work. So the plan
-- is one table, the rarer parts cost nothing when absent (their helpers are made only when
-- needed), numbers go to the server as numbers (no string made for them), and records are packed
-- from their values, not from tables.

local p = {cmsgpack.unpack(ARGV[1])}
local op_id, fingerprint, now_ms, dd_field, dd_expire_ms, dd_start_ms = p[1], p[2], p[3], p[4], p[5], p[6]
local feed_length, lot_expiry, ledger_keep_ms, coupon_keep_ms = p[7], p[8], p[9], p[10]
local record_until, record_amount, record_at, record_tag = p[11], p[12], p[13], p[14]
local G = 16 -- the first grant's first value (p[15]: how many values the grants take)
local G_END = G + p[15] -- one past the grants; there, how many values the quests take
local Q = G_END + 1 -- the first quest's first value
local Q_END = Q + p[G_END] -- one past the quests: the rarer parts, when sent
local rare = p[Q_END] ~= nil
local NONE = {}
local debits, uses, counters, passed, coupon_grants, reverse, revokes, inventory, streak =
  NONE, NONE, NONE, NONE, NONE, NONE, NONE, NONE, NONE
if rare then
  debits, uses, counters, passed, coupon_grants = p[Q_END], p[Q_END + 1], p[Q_END + 2], p[Q_END + 3], p[Q_END + 4]
  reverse, revokes, inventory, streak = p[Q_END + 5], p[Q_END + 6], p[Q_END + 7], p[Q_END + 8]
end
local marks = rare and p[Q_END + 9] or NONE
local targeting = rare and p[Q_END + 10] or NONE
local RECORDS, DEDUPE = 7, 8
local last_dedupe = #KEYS - (reverse[5] or 0)
local mp = cmsgpack.pack

-- A dedupe entry names the operation's feed entry <ms>-<seq> in 5 bytes (every byte of an entry
-- is multiplied by the operations retained): ms as an offset from the start of the bucket holding
-- the entry (7 days of operation time, keys.DEDUPE_BUCKET_MS; it was applied between a skew
-- before and a retention after), biased by 2^31 ms (about 24 days before the bucket's start) to
-- stay positive, times 64 (the seqs a reference holds), plus seq; below 2^40, or no reference.
-- The constants are written out where they are used: a local a function uses costs every call.

-- The own bucket's expiry first (-2: no such hash yet): a bucket that does not exist holds no
-- sighting, and remember() needs the expiry anyway (one call fewer for a new bucket, none more).
local dd_expires = redis.call('PEXPIRETIME', KEYS[DEDUPE])
for i = DEDUPE, last_dedupe do
  local seen = (i ~= DEDUPE or dd_expires ~= -2) and redis.call('HGET', KEYS[i], dd_field)
  if seen then
    if string.sub(seen, 1, 6) ~= fingerprint then return cmsgpack.pack({2}) end
    if #seen < 11 then return cmsgpack.pack({0}) end
    -- Replay the original, as a payment API replays its first response: a caller that lost the
    -- first reply learns what was applied (while the feed still keeps the entry).
    local packed_ref = struct.unpack('>I5', seen, 7)
    local seq = packed_ref % 64
    local bucket_ms = tonumber(string.match(KEYS[i], ':d:(%-?%d+)$')) * 604800000
    local original = string.format('%d-%d', bucket_ms + (packed_ref - seq) / 64 - 2147483648, seq)
    local entry = redis.call('XRANGE', KEYS[4], original, original)
    if #entry == 0 then return cmsgpack.pack({0, original}) end
    local packed = pairs_of(entry[1][2])['d']
    if not packed then return cmsgpack.pack({0, original}) end
    return '\147' .. cmsgpack.pack(0) .. cmsgpack.pack(original) .. packed
  end
end

-- The dedupe entry is written last, with the feed entry id of what was applied; the bucket's
-- expiry only ever moves later (as expire_no_sooner, with the expiry read above). Returns the
-- reply and message: [entry id, operation id, effects] built from parts, so the effects are
-- packed once for the stream entry, the message and the reply alike (0x93: an array of three).
local function remember(entry_id, packed_effects)
  local value = fingerprint
  if entry_id ~= '' then
    local dash = string.find(entry_id, '-', 1, true)
    local seq = tonumber(string.sub(entry_id, dash + 1))
    local offset = tonumber(string.sub(entry_id, 1, dash - 1)) - dd_start_ms + 2147483648
    local ref = offset * 64 + seq
    if seq < 64 and offset >= 0 and ref < 1099511627776 then value = value .. struct.pack('>I5', ref) end
  end
  redis.call('HSET', KEYS[DEDUPE], dd_field, value)
  if dd_expires < dd_expire_ms then redis.call('PEXPIREAT', KEYS[DEDUPE], dd_expire_ms) end
  return '\147' .. mp(entry_id, op_id) .. packed_effects
end

local policy = ARGV[6] and ARGV[6] ~= '' and {cmsgpack.unpack(ARGV[6])} or nil
local stored
if policy then stored = redis.call('HMGET', KEYS[1], 'xp', 'pts', 'tier', 'debt', 'nx', 'dm', 'te', 'tg')
else stored = redis.call('HMGET', KEYS[1], 'xp', 'pts', 'tier', 'debt', 'nx', 'dm') end
local xp = tonumber(stored[1]) or 0
local xp_start = xp
local points = tonumber(stored[2]) or 0
local debt = tonumber(stored[4]) or 0
local next_expiry = tonumber(stored[5]) or 0
local expiring = next_expiry > 0 and next_expiry <= now_ms

-- The member's own activity (see ARGV[5]): every operation but the engine's own.
local active = string.sub(op_id, 1, 3) ~= 'rk:'

-- Nothing to apply (the rarer parts are sent only when one of them is not empty); an event that
-- earns nothing is activity all the same.
local window_end = policy and 9 + policy[8] -- one past the window's fields: a review's part, when sent
local reviewing = policy and policy[window_end] ~= nil
local counting = reviewing or (policy and policy[1] == 1 and policy[2] ~= 0) -- a review, or spend to count
if G_END == G and Q_END == Q and not rare and record_until == 0 and not expiring and not counting then
  if active then redis.call('HSET', KEYS[1], 'la', now_ms) end
  return remember('', '\144')
end

local effects = {}
local function effect(kind, data) effects[#effects + 1] = {kind, data} end

-- Entries are kept for the audit period, by the server's clock (their ids are its time): the
-- trim is approximate (whole stream nodes), so a little more is kept, never less. Each entry
-- holds the balance after it, so what remains still proves itself from its first entry on.
local ledger_horizon = nil
local function ledger(kind, delta, reason)
  if not ledger_horizon then
    local t = redis.call('TIME')
    ledger_horizon = tonumber(t[1]) * 1000 - ledger_keep_ms
  end
  redis.call('XADD', KEYS[3], 'MINID', '~', ledger_horizon, '*', 'k', kind, 'd', delta, 'b', points, 'r', reason, 'e', op_id)
end

-- Lots, read only when something needs all of them (an expiry is due, a debit, a refund, or
-- points granted into a lot already expired); their helpers are made only then (a function
-- costs the call that makes it).
local lots = nil -- {{expiry, amount}, ...} soonest first, never-expiring last
local lot_added = 0 -- points granted into this operation's lot, not yet written
local load_lots, take_from_lots, expire_due
if expiring or #debits > 0 or #reverse > 0 or (lot_expiry > 0 and lot_expiry <= now_ms) then
  load_lots = function()
    if lots then return lots end
    if lot_added > 0 then redis.call('HINCRBY', KEYS[6], lot_expiry, lot_added); lot_added = 0 end
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

  -- The soonest expiry among the lots left, after the lots table changed.
  local function recompute_next_expiry()
    next_expiry = 0
    for _, lot in ipairs(lots) do
      if lot[1] > 0 and lot[2] > 0 then next_expiry = lot[1]; return end
    end
  end

  expire_due = function()
    for _, lot in ipairs(load_lots()) do
      if lot[1] > 0 and lot[1] <= now_ms and lot[2] > 0 then
        points = points - lot[2]
        redis.call('HDEL', KEYS[6], lot[1])
        ledger('x', -lot[2], 'expired')
        effect('points_expired', {amount = lot[2], balance = points, expired_at_ms = lot[1]})
        lot[2] = 0
      end
    end
    recompute_next_expiry()
  end

  -- Take n points (no more than the balance) out of the lots: the lot `first` first when given,
  -- then the soonest-expiring, never-expiring lots last.
  take_from_lots = function(n, first)
    local left = n
    local function take(lot)
      local t = math.min(left, lot[2])
      if t > 0 then
        lot[2] = lot[2] - t
        left = left - t
        if lot[2] == 0 then redis.call('HDEL', KEYS[6], lot[1])
        else redis.call('HINCRBY', KEYS[6], lot[1], -t) end
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
end

-- --- checks: a refusal writes nothing, so every check comes before the first write ------------

-- Targeting (engine/targeting.py): an audience required, and the grants and quests of the plan
-- that are for an audience only (a grant's amount, a quest's increment, set to 0 when they are not
-- for this member). The profile's tags and join time are read only here.
local boosts = NONE
if #targeting > 0 then
  local facts, verdicts = nil, {}
  local function eligible(k)
    local verdict = verdicts[k]
    if verdict ~= nil then return verdict end
    local a = targeting[3][k + 1]
    verdict = true
    if #a[1] > 0 then
      local held, found = stored[3] or '', false
      for _, id in ipairs(a[1]) do if id == held then found = true end end
      verdict = found
    end
    if verdict and (#a[2] > 0 or a[3] > 0) and not facts then
      local f = redis.call('HMGET', KEYS[1], 'tags', 'joined_at_ms')
      facts = {f[1] and cjson.decode(f[1]) or NONE, tonumber(f[2])}
    end
    if verdict and #a[2] > 0 then
      local found = false
      for _, want in ipairs(a[2]) do
        for _, tag in ipairs(facts[1]) do if tag == want then found = true end end
      end
      verdict = found
    end
    if verdict and a[3] > 0 then verdict = facts[2] ~= nil and now_ms - facts[2] < a[3] end
    if verdict and a[4] ~= -1 then verdict = (a[4] == 1) == (stored[6] ~= false and stored[6] ~= nil) end
    verdicts[k] = verdict
    return verdict
  end
  if targeting[1] >= 0 and not eligible(targeting[1]) then return cmsgpack.pack({3, 'not_eligible', 0}) end
  local t = targeting[2]
  for j = 1, #t, 3 do
    if not eligible(t[j + 2]) then
      if t[j] == 'g' then p[G + t[j + 1] + 1] = 0 else p[Q + t[j + 1] + 2] = 0 end
    end
  end
  boosts = targeting[4]
end

local due = 0 -- points whose lots have expired by now
if expiring then
  for _, lot in ipairs(load_lots()) do
    if lot[1] > 0 and lot[1] <= now_ms then due = due + lot[2] end
  end
end

local coupon_records, counter_values, inventory_after = NONE, NONE, NONE
local streak_next, streak_due, streak_was = nil, NONE, nil
local refund = nil
if rare then
  local debit_total = 0
  for i, d in ipairs(debits) do
    debit_total = debit_total + d[1]
    if debit_total > points - due then return cmsgpack.pack({3, 'insufficient_points', i - 1}) end
  end
  coupon_records = {}
  for i, u in ipairs(uses) do
    local raw = redis.call('HGET', KEYS[5], u[1])
    if not raw then return cmsgpack.pack({3, 'not_found', i - 1}) end
    local c = cmsgpack.unpack(raw)
    if c[5] == 1 then return cmsgpack.pack({3, 'already_used', i - 1}) end
    if c[5] == 2 then return cmsgpack.pack({3, 'revoked', i - 1}) end
    if c[6] > 0 and c[6] <= now_ms then return cmsgpack.pack({3, 'expired', i - 1}) end
    coupon_records[i] = c
  end
  counter_values = {}
  for i, n in ipairs(counters) do
    local used = tonumber(redis.call('HGET', KEYS[2], n[1])) or 0
    if used + n[2] > n[3] then return cmsgpack.pack({3, 'limit_reached', i - 1}) end
    counter_values[i] = used
  end

  -- Inventory: a debit may not take a count below zero; a grant stops at the cap.
  if #inventory > 0 then
    inventory_after = {}
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
  if #streak > 0 then
    streak_due = {}
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
    refund = {rec = rec, key = key, field = field, refunded = refunded, full = amount == 0 or refunded >= rec[2],
              spent_back = refunded - rec[7]}
  end
end

-- --- writes -----------------------------------------------------------------------------------

if due > 0 or expiring then expire_due() end

local tiers = {cmsgpack.unpack(ARGV[2])} -- tier i: id tiers[3i-2], XP tiers[3i-1], multiplier tiers[3i]
local tier_count = #tiers / 3
local tier = 1
if stored[3] then
  -- Tiers are stored by id, so a programme that reorders them keeps members where they are.
  -- A tier id the programme no longer has: the highest tier the XP reaches, with no rewards.
  local found = false
  for i = 1, tier_count do
    if tiers[3 * i - 2] == stored[3] then tier = i; found = true end
  end
  if not found and not policy then -- under a policy: the first, then the window's climb below
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
-- New coupons: the expiry of each one's field (0: none), its id, its record, ...; written with
-- one command per expiry.
local new_coupons = nil
local function grant_coupon(item, valid_ms, reason)
  coupon_seq = coupon_seq + 1
  local id = op_id .. ':c' .. coupon_seq
  local until_ms = valid_ms > 0 and now_ms + valid_ms or 0
  if not new_coupons then new_coupons = {} end
  local n = #new_coupons
  new_coupons[n + 1] = until_ms > 0 and until_ms + coupon_keep_ms or 0
  new_coupons[n + 2] = id
  -- [item, granted at, reason, operation id, state, valid until, used at, order]: 0x98, the
  -- array of 8, then its values (one pack of the values costs less than one of a table)
  new_coupons[n + 3] = '\152' .. mp(item, now_ms, reason, op_id, 0, until_ms, 0, '')
  effect('reward', {kind = 'coupon', item = item, coupon = id, reason = reason, expires_at_ms = until_ms})
  return id
end

if rare then
  for _, d in ipairs(debits) do
    take_from_lots(d[1])
    ledger('s', -d[1], d[2])
    effect('points', {amount = -d[1], balance = points, reason = d[2]})
  end

  for i, u in ipairs(uses) do
    local c = coupon_records[i]
    c[5], c[7], c[8] = 1, now_ms, u[2]
    redis.call('HSETEX', KEYS[5], 'PXAT', now_ms + coupon_keep_ms, 'FIELDS', 1, u[1], cmsgpack.pack(c))
    effect('coupon_used', {coupon = u[1], item = c[1], order = u[2]})
  end

  for i, n in ipairs(counters) do
    redis.call('HINCRBY', KEYS[2], n[1], n[2])
    if n[4] > 0 and counter_values[i] == 0 then redis.call('HPEXPIREAT', KEYS[2], n[4], 'FIELDS', 1, n[1]) end
  end

  for i, v in ipairs(inventory) do
    local before, after = inventory_after[i][1], inventory_after[i][2]
    if after ~= before then
      if v[4] > 0 then redis.call('HSETEX', KEYS[2], 'PXAT', v[4], 'FIELDS', 1, v[1], after)
      else redis.call('HSET', KEYS[2], v[1], after) end
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
        redis.call('HSETEX', KEYS[5], 'PXAT', now_ms + coupon_keep_ms, 'FIELDS', 1, id, cmsgpack.pack(c))
        effect('reward_revoked', {coupon = id, item = c[1], reason = reason})
      end
    end
  end
  for _, id in ipairs(revokes) do revoke_coupon(id, 'undo') end

  -- A refund takes back a share of what the rules granted (all that remains when it is the last),
  -- and, when it refunds the whole, the quest progress made and its bonuses, revoking coupons not
  -- yet used. Points come out of the original's lot first; a shortfall becomes a debt. XP never
  -- goes below zero; a tier reached is kept (its review is the lifecycle's, not a refund's).
  -- Counted items a rule or a quest granted are kept too: a member may have spent them already
  -- (a spin played, a card used), and the record stays as small as before.
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
end

-- What this operation grants, when it may be refunded (tier rewards are not: see above): its
-- quests (see RECORD) as msgpack bytes, each 0x98 (an array of 8) and its values, made only
-- when the operation keeps a record.
local keep = record_until > 0
local granted_xp, granted_points, granted_quests = 0, 0, keep and {} or NONE

-- Rules: points are multiplied by the tier the member holds before this operation.
-- State fields (rule caps, quest progress and completion markers) are read in one HMGET and
-- written in one HSETEX per expiry: a redis.call costs the script about what the command does.
-- A new field gets its period's expiry as it is written; a field that exists keeps its own (the
-- period it belongs to never changes).
local state_fields = {}
local i = G
while i < G_END do
  if p[i + 4] > 0 then state_fields[#state_fields + 1] = p[i + 3] end
  if p[i] == 'i' then state_fields[#state_fields + 1] = p[i + 7]; i = i + 10 else i = i + 7 end -- the item's count
end
i = Q
while i < Q_END do
  state_fields[#state_fields + 1] = p[i + 1]
  state_fields[#state_fields + 1] = 'd' .. p[i + 1]
  local coupons = p[i + 7]
  i = i + 9 + 2 * coupons + 5 * p[i + 8 + 2 * coupons]
end
if policy then
  for j = 9, window_end - 1 do state_fields[#state_fields + 1] = policy[j] end
  if reviewing then
    for j = window_end + 3, window_end + 2 + policy[window_end + 2] do state_fields[#state_fields + 1] = policy[j] end
  end
end
local state = {} -- field -> number, for the fields read (false: read, absent)
-- field written -> the expiry of a new field (0: none), or -1: it existed, it keeps its own
local state_written, state_order = {}, {}
if #state_fields > 0 then
  local values = redis.call('HMGET', KEYS[2], unpack(state_fields))
  for j = 1, #state_fields do state[state_fields[j]] = tonumber(values[j]) or false end
end
local function set_state(field, value, expire_ms)
  local was = state_written[field]
  if was == nil then
    state_order[#state_order + 1] = field
    was = state[field] and -1 or expire_ms -- a number: the field existed
  end
  state[field] = value
  state_written[field] = was == -1 and -1 or expire_ms
end

-- A counted item granted (an inventory line's shape: field, amount, cap (0 none), field expiry
-- ms (0 never), item name): past the cap it is cut to it, never below what the member holds.
-- The count lives with the state fields: read by their HMGET when a rule grants the item (else
-- by one HGET, once an operation), written with them. Returns what was added.
local function grant_item(field, amount, cap, expire_ms, name)
  local before = state[field]
  if before == nil then -- not among the fields read
    before = tonumber(redis.call('HGET', KEYS[2], field)) or false
    state[field] = before
  end
  before = before or 0
  local after = before + amount
  if cap > 0 and after > cap then after = math.max(cap, before) end
  if after ~= before then set_state(field, after, expire_ms) end
  effect('inventory', {item = name, amount = after - before, count = after})
  return after - before
end

-- Quest completions, streak thresholds, tiers: their XP and points (coupons and items: by the caller).
local function grant_bonus(bonus_xp, bonus_points, reason)
  if bonus_xp > 0 then grant_xp(bonus_xp, reason) end
  if bonus_points > 0 then grant_points(bonus_points, reason) end
end

local multiplier = tiers[3 * tier]
if #boosts > 0 then -- member days: the largest boost for the member's tier, on top of the tier's own
  local best, id = 1000, tiers[3 * tier - 2]
  for _, b in ipairs(boosts) do
    local applies = #b[2] == 0
    for _, t in ipairs(b[2]) do if t == id then applies = true end end
    if applies and b[1] > best then best = b[1] end
  end
  multiplier = multiplier * best / 1000
end
i = G
while i < G_END do
  local kind, n, cap = p[i], p[i + 1], p[i + 4]
  if kind == 'i' then
    -- A counted item: its daily cap counts what the member got, so a member at the item's cap
    -- keeps the rest of the day's allowance. Not recorded for a refund (see the refund above).
    local used = state[p[i + 3]] or 0
    if cap > 0 and used + n > cap then n = cap - used end
    if n > 0 then
      local added = grant_item(p[i + 7], n, p[i + 8], 0, p[i + 9])
      if cap > 0 and added > 0 then set_state(p[i + 3], used + added, p[i + 5]) end
    end
    i = i + 10
  else
    if kind == 'p' and p[i + 6] == 1 then n = math.floor(n * multiplier / 1000) end
    if cap > 0 and n > 0 then
      local used = state[p[i + 3]] or 0
      if used + n > cap then n = cap - used end
      if n > 0 then set_state(p[i + 3], used + n, p[i + 5]) end
    end
    if n > 0 then
      if kind == 'x' then
        grant_xp(n, p[i + 2]); granted_xp = granted_xp + n
      else
        grant_points(n, p[i + 2]); granted_points = granted_points + n
      end
    end
    i = i + 7
  end
end

-- Quests: a quest completes at most once per period, whatever the programme later does to its
-- target: completion is a marker field ('d' .. progress field, expiring with it), not inferred
-- from progress. A target lowered below a member's progress completes on the next event.
-- Progress keeps counting after completion, silently, so a refund of the order that completed
-- it reopens the quest only when the others of its period no longer meet the target.
i = Q
while i < Q_END do
  local quest_id, field, increment, target, expire_ms = p[i], p[i + 1], p[i + 2], p[i + 3], p[i + 4]
  local coupons = p[i + 7]
  local items_at = i + 8 + 2 * coupons -- how many items, then theirs
  local done_field = 'd' .. field
  local after = (state[field] or 0) + increment
  if increment > 0 then set_state(field, after, expire_ms) end
  if increment == 0 then -- not for this member (targeting): nothing moves
  elseif not state[done_field] and after >= target then
    set_state(done_field, now_ms, expire_ms)
    effect('quest_completed', {quest = quest_id, progress = target, target = target})
    local reason = 'quest:' .. quest_id
    grant_bonus(p[i + 5], p[i + 6], reason)
    local ids = coupons < 16 and string.char(0x90 + coupons) or '\220' .. struct.pack('>I2', coupons) -- the coupons' ids
    for j = i + 8, items_at - 1, 2 do ids = ids .. mp(grant_coupon(p[j], p[j + 1], reason)) end
    for j = items_at + 1, items_at + 5 * p[items_at], 5 do grant_item(p[j], p[j + 1], p[j + 2], p[j + 3], p[j + 4]) end
    if keep then granted_quests[#granted_quests + 1] = '\152' .. mp(quest_id, field, increment, 1, target, p[i + 5], p[i + 6]) .. ids end
  else
    if not state[done_field] then effect('quest_progress', {quest = quest_id, progress = after, target = target}) end
    if keep then granted_quests[#granted_quests + 1] = '\152' .. mp(quest_id, field, increment, 0, target, 0, 0) .. '\144' end
  end
  i = items_at + 1 + 5 * p[items_at]
end

if rare then
  for _, c in ipairs(coupon_grants) do grant_coupon(c[1], c[2], c[3]) end
end
-- Streak thresholds and tiers grant bundles of nested tables: {{item, valid ms}}, {inventory} or nil.
local function grant_bundle(bonus_xp, bonus_points, coupons, items, reason)
  grant_bonus(bonus_xp, bonus_points, reason)
  for _, c in ipairs(coupons) do grant_coupon(c[1], c[2], reason) end
  if items then
    for _, v in ipairs(items) do grant_item(v[1], v[2], v[3], v[4], v[5]) end
  end
end
if streak_next then
  redis.call('HSET', KEYS[2], streak[1], table.concat(streak_next, ':'))
  effect('streak', {streak = streak[6], current = streak_next[2], longest = streak_next[3],
    day = streak[3] > 0 and streak[3] or streak[2], made_up = streak[3] > 0})
  for _, t in ipairs(streak_due) do
    grant_bundle(t[2], t[3], t[4], t[5], 'streak:' .. streak[6] .. ':' .. t[1])
  end
end

-- A game's effects are bytes packed by the caller: kept as they are (see the header).
local raw_effects = false
if rare then
  for _, e in ipairs(passed) do effects[#effects + 1] = e; raw_effects = true end
end

-- A dormant member's return: the wake-up gift, once.
local woke = active and stored[6] and ARGV[5] and ARGV[5] ~= ''
if woke then
  local w = cmsgpack.unpack(ARGV[5])
  effect('wake_up', {dormant_since_ms = tonumber(stored[6])})
  grant_bundle(w[1], w[2], w[3], w[4], 'care:wake_up')
end

-- Under a tier policy, what qualifies is counted in the period's field (spend, or the XP this
-- operation earned, less what it took back: never below zero), and the window's sum decides;
-- tier rewards' XP does not qualify. A review (a `tier` job at the expiry, "te") keeps the tier
-- while the window (or the year held for) reaches it, else grants the grace once, else drops
-- one level at most; a member in grace who reaches the tier again keeps it.
local qualified, te, tg, changes = xp, 0, nil, nil
if policy then
  local inc = policy[2]
  if policy[1] == 0 then inc = xp - xp_start elseif inc == -1 then inc = refund and -refund.spent_back or 0 end
  if inc ~= 0 then set_state(policy[3], math.max(0, (state[policy[3]] or 0) + inc), policy[4]) end
  qualified = 0
  for j = 9, window_end - 1 do qualified = qualified + (state[policy[j]] or 0) end
  te, tg = tonumber(stored[7]) or 0, tonumber(stored[8])
  changes = {}
  local function change(kind, from, to)
    changes[#changes + 1] = '\149' .. mp(now_ms, kind, from, to, policy[7])
  end
  local id = tiers[3 * tier - 2]
  if reviewing then
    local review_ms, kept_until = policy[window_end], policy[window_end + 1]
    if te == review_ms and tier > 1 then
      local q = qualified
      local held_for = 0
      for j = window_end + 3, window_end + 2 + policy[window_end + 2] do held_for = held_for + (state[policy[j]] or 0) end
      if held_for > q then q = held_for end
      local target = 1
      for k = 1, tier_count do if q >= tiers[3 * k - 1] then target = k end end
      if target >= tier then
        te, tg = kept_until, nil
        effect('tier_kept', {tier = id, until_ms = te})
        change('kept', id, id)
      elseif not tg and policy[6] > 0 then
        tg, te = te, te + policy[6]
        effect('tier_grace', {tier = id, until_ms = te, need = tiers[3 * tier - 1] - q})
        change('grace', id, id)
      else
        local to = math.max(target, tier - 1)
        tier, tg = to, nil
        te = to > 1 and kept_until or 0
        effect('tier_down', {from = id, to = tiers[3 * to - 2], until_ms = te})
        change('down', id, tiers[3 * to - 2])
      end
    elseif te == 0 and tier > 1 and policy[5] > 0 then
      -- Held since before the policy (`rekindle backfill` schedules this review): held from the review.
      te = policy[5]
      effect('tier_kept', {tier = id, until_ms = te})
      change('kept', id, id)
    end
  elseif tier > 1 and policy[5] > 0 and (te == 0 or (tg and qualified >= tiers[3 * tier - 1])) then
    -- Reached again in grace, or held since before the policy (no expiry yet): held from now.
    te, tg = policy[5], nil
    effect('tier_kept', {tier = id, until_ms = te})
    change('kept', id, id)
  end
end

-- Tiers: climb while lifetime XP (or the policy's window) reaches the next threshold; each
-- rung's rewards are granted on the way (their XP may lift the member further, by lifetime XP).
local rewards = nil
while tier < tier_count and (policy and qualified or xp) >= tiers[3 * tier + 2] do
  tier = tier + 1
  local id = tiers[3 * tier - 2]
  if policy then
    te, tg = policy[5], nil
    effect('tier_up', {from = tiers[3 * tier - 5], to = id, until_ms = te})
    changes[#changes + 1] = '\149' .. mp(now_ms, 'up', tiers[3 * tier - 5], id, policy[7])
  else
    effect('tier_up', {from = tiers[3 * tier - 5], to = id})
  end
  rewards = rewards or cmsgpack.unpack(ARGV[4])
  local r = rewards[tier]
  grant_bundle(r[1], r[2], r[3], r[4], 'tier:' .. id)
end
if changes and #changes > 0 then
  -- The tier log: the last 20 changes (an array of arrays: its header, then the entries packed).
  local raw = redis.call('HGET', KEYS[2], 'tl')
  local log = raw and {cmsgpack.unpack(string.sub(raw, raw:byte(1) == 220 and 4 or 2))} or {}
  local kept = {}
  for j = math.max(1, #log + #changes - 19), #log do kept[#kept + 1] = cmsgpack.pack(log[j]) end
  for j = math.max(1, #changes - 19), #changes do kept[#kept + 1] = changes[j] end
  redis.call('HSET', KEYS[2], 'tl', (#kept < 16 and string.char(0x90 + #kept) or '\220' .. struct.pack('>I2', #kept)) .. table.concat(kept))
end

-- State fields, by expiry (0: keep the field's own), one HSETEX each, in the order each expiry
-- first comes: the first expiry not yet written, with every field that shares it (a few fields,
-- one or two expiries: a scan costs less than a table per expiry).
local args = {} -- field, value, ... of one write
local left = #state_order
while left > 0 do
  local e, k = nil, 0
  for j = 1, #state_order do
    local f = state_order[j]
    if f then
      local fe = state_written[f]
      if fe == -1 then fe = 0 end
      if e == nil then e = fe end
      if fe == e then
        args[k + 1], args[k + 2], k = f, state[f], k + 2
        state_order[j], left = false, left - 1
      end
    end
  end
  if e == 0 then redis.call('HSETEX', KEYS[2], 'KEEPTTL', 'FIELDS', k / 2, unpack(args, 1, k))
  else redis.call('HSETEX', KEYS[2], 'PXAT', e, 'FIELDS', k / 2, unpack(args, 1, k)) end
end
if lot_added > 0 then redis.call('HINCRBY', KEYS[6], lot_expiry, lot_added); lot_added = 0 end
-- New coupons the same way, by the expiry of their fields (0: none, a plain HSET).
left = new_coupons and #new_coupons / 3 or 0
while left > 0 do
  local e, k = nil, 0
  for j = 1, #new_coupons, 3 do
    local fe = new_coupons[j]
    if fe then
      if e == nil then e = fe end
      if fe == e then
        args[k + 1], args[k + 2], k = new_coupons[j + 1], new_coupons[j + 2], k + 2
        new_coupons[j], left = false, left - 1
      end
    end
  end
  if e == 0 then redis.call('HSET', KEYS[5], unpack(args, 1, k))
  else redis.call('HSETEX', KEYS[5], 'PXAT', e, 'FIELDS', k / 2, unpack(args, 1, k)) end
end

if keep then
  -- RECORD, 11 values (0x9b), as cmsgpack.pack would lay out the table.
  local n = #granted_quests
  redis.call('HSET', KEYS[RECORDS], dd_field, '\155' .. mp(record_at, record_amount, granted_xp, granted_points, lot_expiry)
    .. (n < 16 and string.char(0x90 + n) or '\220' .. struct.pack('>I2', n)) .. table.concat(granted_quests) .. '\0\0\0\0' .. mp(record_tag))
  -- The bucket's expiry only ever moves later (expire_no_sooner), but a bucket of records whose
  -- dedupe bucket is new is new too, its expiry set without a read: every operation that writes
  -- one writes the other, and one that keeps a record (an event) comes within the retention of
  -- its time, when the dedupe bucket of that time still exists. NX: were it there, it keeps its own.
  if dd_expires == -2 then redis.call('PEXPIREAT', KEYS[RECORDS], record_until, 'NX')
  else expire_no_sooner(KEYS[RECORDS], record_until) end
end

if #effects == 0 then
  if active then redis.call('HSET', KEYS[1], 'la', now_ms) end
  return remember('', '\144')
end

-- Points granted into a lot already past its expiry (an operation with an old time, whose lot's
-- expire job may have run before it) are written off at once, not left for a later operation.
if next_expiry > 0 and next_expiry <= now_ms then expire_due() end

local profile = {'xp', xp, 'pts', points}
if tier ~= start_tier or not stored[3] then profile[#profile + 1] = 'tier'; profile[#profile + 1] = tiers[3 * tier - 2] end
if debt > 0 or stored[4] then profile[#profile + 1] = 'debt'; profile[#profile + 1] = debt end
if next_expiry ~= (tonumber(stored[5]) or 0) then profile[#profile + 1] = 'nx'; profile[#profile + 1] = next_expiry end
if active then profile[#profile + 1] = 'la'; profile[#profile + 1] = now_ms end
local unmarked = woke and {'dm'} or nil
if policy then
  if te ~= (tonumber(stored[7]) or 0) then
    if te > 0 then profile[#profile + 1] = 'te'; profile[#profile + 1] = te
    else unmarked = unmarked or {}; unmarked[#unmarked + 1] = 'te' end
  end
  if stored[8] and not tg then unmarked = unmarked or {}; unmarked[#unmarked + 1] = 'tg'
  elseif tg and not stored[8] then profile[#profile + 1] = 'tg'; profile[#profile + 1] = tg end
end
for _, m in ipairs(marks) do
  if m[2] == '' then unmarked = unmarked or {}; unmarked[#unmarked + 1] = m[1]
  else profile[#profile + 1] = m[1]; profile[#profile + 1] = m[2] end
end
redis.call('HSET', KEYS[1], unpack(profile))
if unmarked then redis.call('HDEL', KEYS[1], unpack(unmarked)) end

-- One feed entry per operation (an XADD costs more than packing all the effects once); effect i
-- of entry <ms>-<seq> is feed id <ms>-<seq>-<i> to clients.
local packed
if raw_effects then
  -- A msgpack array by hand: its header, then each effect packed (or as the caller packed it).
  local n = #effects
  local parts = {n < 16 and string.char(0x90 + n) or ('\220' .. struct.pack('>I2', n))}
  for j, e in ipairs(effects) do parts[j + 1] = type(e) == 'string' and e or cmsgpack.pack(e) end
  packed = table.concat(parts)
else
  packed = cmsgpack.pack(effects)
end
local entry_id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', feed_length, '*', 'd', packed, 'e', op_id)
local message = remember(entry_id, packed)
if ARGV[3] ~= '' then redis.call('SPUBLISH', ARGV[3], message) end
return message
