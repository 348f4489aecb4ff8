-- award.lua: apply one award plan atomically for one member (every key shares its hash tag).
-- KEYS[1] profile hash    (xp, pts = points balance, tier = tier id)
-- KEYS[2] state hash      (q:<quest>:<period> progress, dq:<quest>:<period> completed marker,
--                          c:<rule>:<day> cap used; each field expires with its period)
-- KEYS[3] ledger stream   (d = points delta, b = balance after, r = reason, e = event id)
-- KEYS[4] feed stream     (one entry an award: d = msgpack {{type, data}...}, e = event id), capped
-- KEYS[5] rewards list    (msgpack [item, granted at ms, reason, event id])
-- KEYS[6] dedupe hash of the event's own time bucket, "<tag>:d:<bucket>" (field: 10-byte id
--         digest; value: 6-byte fingerprint, then, when the award had a feed entry, its id in
--         5 bytes: see entry_ref)
-- KEYS[7..] the other dedupe buckets an earlier sighting of the id could be in
-- ARGV[1] msgpack plan: [event id, fingerprint, now ms, dedupe field, dedupe bucket expiry ms,
--           feed length, grants, quests]
--           grant: [currency "x"|"p", amount, reason, cap field, cap (0 none), cap field expiry ms]
--           quest: [id, field, increment, target, field expiry ms (0 never), xp, points, {coupons}]
-- ARGV[2] msgpack tiers: {[id, xp threshold, points multiplier in thousandths, xp, points, {coupons}]}
-- ARGV[3] pub/sub channel of the member
-- returns, when applied, the message it published: msgpack [feed entry id, event id,
--   [[type, data]...]] (entry id "" when the award had no effect); [2] same id, other body;
--   a duplicate: [0, feed entry id, effects] when the original award's feed entry is still
--   kept, [0, feed entry id] when it was trimmed, [0] when the award had no effect

local plan = cmsgpack.unpack(ARGV[1])
local event_id, fingerprint, now_ms, dd_field, dd_expire_ms, feed_length, grants, quests =
  plan[1], plan[2], plan[3], plan[4], plan[5], plan[6], plan[7], plan[8]

-- A dedupe entry names the award's feed entry <ms>-<seq> in 5 bytes (every byte of an entry is
-- multiplied by the events retained): ms as an offset from the start of the bucket holding the
-- entry (7 days of event time; the award was applied between a skew before and a retention
-- after), biased to stay positive, times REF_SEQS, plus seq. Past its bounds: no reference.
local BUCKET_MS = 7 * 86400000  -- keys.DEDUPE_BUCKET_MS
local REF_SEQS = 64
local REF_BIAS_MS = 2147483648  -- 2^31 ms, about 24 days before the bucket's start
local REF_MAX = 1099511627776  -- 2^40
local function bucket_start_ms(key) return tonumber(string.match(key, ':d:(%-?%d+)$')) * BUCKET_MS end

for i = 6, #KEYS do
  local seen = redis.call('HGET', KEYS[i], dd_field)
  if seen then
    if string.sub(seen, 1, 6) ~= fingerprint then return cmsgpack.pack({2}) end
    if #seen < 11 then return cmsgpack.pack({0}) end
    -- Replay the original award, as a payment API replays its first response: a backend that
    -- lost the first reply learns what was awarded (while the feed still keeps the entry).
    local packed_ref = struct.unpack('>I5', seen, 7)
    local seq = packed_ref % REF_SEQS
    local ms = bucket_start_ms(KEYS[i]) + (packed_ref - seq) / REF_SEQS - REF_BIAS_MS
    local original = string.format('%d-%d', ms, seq)
    local entry = redis.call('XRANGE', KEYS[4], original, original)
    if #entry == 0 then return cmsgpack.pack({0, original}) end
    local fields = entry[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'd' then return '\147' .. cmsgpack.pack(0) .. cmsgpack.pack(original) .. fields[j + 1] end
    end
    return cmsgpack.pack({0, original})
  end
end

-- The dedupe entry is written last, with the feed entry id of what it applied.
local function remember(entry_id)
  local value = fingerprint
  if entry_id then
    local dash = string.find(entry_id, '-', 1, true)
    local seq = tonumber(string.sub(entry_id, dash + 1))
    local offset = tonumber(string.sub(entry_id, 1, dash - 1)) - bucket_start_ms(KEYS[6]) + REF_BIAS_MS
    local ref = offset * REF_SEQS + seq
    if seq < REF_SEQS and offset >= 0 and ref < REF_MAX then value = value .. struct.pack('>I5', ref) end
  end
  redis.call('HSET', KEYS[6], dd_field, value)
  -- A bucket's expiry only ever moves later (a programme may raise its retention), and is
  -- written only then: a read is cheaper than a write the AOF would carry for every event.
  if redis.call('PEXPIRETIME', KEYS[6]) < dd_expire_ms then redis.call('PEXPIREAT', KEYS[6], dd_expire_ms) end
end

-- Integers leave Lua through string.format: tostring() of a double switches to exponent
-- notation past 1e14, which Redis would then refuse as an integer.
local function int(n) return string.format('%d', n) end

-- [entry id, event id, effects] built from parts, so the effects are packed once for the
-- stream entry, the message and the reply alike (0x93: a msgpack array of three).
local function award_message(entry_id, packed_effects)
  return '\147' .. cmsgpack.pack(entry_id) .. cmsgpack.pack(event_id) .. packed_effects
end

if #grants == 0 and #quests == 0 then
  remember(nil)
  return award_message('', cmsgpack.pack({}))
end

local tiers = cmsgpack.unpack(ARGV[2])
local stored = redis.call('HMGET', KEYS[1], 'xp', 'pts', 'tier')
local xp = tonumber(stored[1]) or 0
local points = tonumber(stored[2]) or 0
local tier = 1
if stored[3] then
  -- Tiers are stored by id, so a programme that reorders them keeps members where they are.
  -- A tier id the programme no longer has: the highest tier the XP reaches, with no rewards.
  local found = false
  for i, t in ipairs(tiers) do
    if t[1] == stored[3] then tier = i; found = true end
  end
  if not found then
    for i, t in ipairs(tiers) do
      if xp >= t[2] then tier = i end
    end
  end
end
local start_tier = tier

local effects = {}
local function effect(kind, data) effects[#effects + 1] = {kind, data} end

local function grant_xp(n, reason)
  xp = xp + n
  effect('xp', {amount = n, total = xp, reason = reason})
end

local function grant_points(n, reason)
  points = points + n
  redis.call('XADD', KEYS[3], '*', 'd', int(n), 'b', int(points), 'r', reason, 'e', event_id)
  effect('points', {amount = n, balance = points, reason = reason})
end

local function grant_bundle(bonus_xp, bonus_points, coupons, reason)
  if bonus_xp > 0 then grant_xp(bonus_xp, reason) end
  if bonus_points > 0 then grant_points(bonus_points, reason) end
  for _, item in ipairs(coupons) do
    redis.call('RPUSH', KEYS[5], cmsgpack.pack({item, now_ms, reason, event_id}))
    effect('reward', {kind = 'coupon', item = item, reason = reason})
  end
end

-- Rules: points are multiplied by the tier the member holds before this event.
local multiplier = tiers[tier][3]
for _, g in ipairs(grants) do
  local n = g[2]
  if g[1] == 'p' then n = math.floor(n * multiplier / 1000) end
  local cap = g[5]
  if cap > 0 and n > 0 then
    local used = tonumber(redis.call('HGET', KEYS[2], g[4])) or 0
    if used + n > cap then n = cap - used end
    if n > 0 then
      redis.call('HINCRBY', KEYS[2], g[4], n)
      -- A new field gets its expiry once; the day it belongs to never changes.
      if used == 0 then redis.call('HPEXPIREAT', KEYS[2], g[6], 'FIELDS', 1, g[4]) end
    end
  end
  if n > 0 then
    if g[1] == 'x' then grant_xp(n, g[3]) else grant_points(n, g[3]) end
  end
end

-- Quests: a quest completes at most once per period, whatever the programme later does to its
-- target: completion is a marker field ('d' .. progress field, expiring with it), not inferred
-- from progress. A target lowered below a member's progress completes on the next event.
for _, q in ipairs(quests) do
  local quest_id, field, increment, target, expire_ms = q[1], q[2], q[3], q[4], q[5]
  local done_field = 'd' .. field
  local stored_q = redis.call('HMGET', KEYS[2], field, done_field)
  if not stored_q[2] then
    local before = tonumber(stored_q[1]) or 0
    local after = redis.call('HINCRBY', KEYS[2], field, increment)
    if expire_ms > 0 and before == 0 then redis.call('HPEXPIREAT', KEYS[2], expire_ms, 'FIELDS', 1, field) end
    if after >= target then
      redis.call('HSET', KEYS[2], done_field, int(now_ms))
      if expire_ms > 0 then redis.call('HPEXPIREAT', KEYS[2], expire_ms, 'FIELDS', 1, done_field) end
      effect('quest_completed', {quest = quest_id, progress = target, target = target})
      grant_bundle(q[6], q[7], q[8], 'quest:' .. quest_id)
    else
      effect('quest_progress', {quest = quest_id, progress = after, target = target})
    end
  end
end

-- Tiers: climb while lifetime XP reaches the next threshold; each rung's rewards are granted
-- on the way (their XP may lift the member further).
while tier < #tiers and xp >= tiers[tier + 1][2] do
  tier = tier + 1
  effect('tier_up', {from = tiers[tier - 1][1], to = tiers[tier][1]})
  grant_bundle(tiers[tier][4], tiers[tier][5], tiers[tier][6], 'tier:' .. tiers[tier][1])
end

if #effects == 0 then
  remember(nil)
  return award_message('', cmsgpack.pack({}))
end

if tier ~= start_tier or not stored[3] then
  redis.call('HSET', KEYS[1], 'xp', int(xp), 'pts', int(points), 'tier', tiers[tier][1])
else
  redis.call('HSET', KEYS[1], 'xp', int(xp), 'pts', int(points))
end

-- One feed entry per award (an XADD costs more than packing all the effects once); effect i
-- of entry <ms>-<seq> is feed id <ms>-<seq>-<i> to clients.
local packed = cmsgpack.pack(effects)
local entry_id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', feed_length, '*', 'd', packed, 'e', event_id)
local message = award_message(entry_id, packed)
remember(entry_id)
redis.call('PUBLISH', ARGV[3], message)
return message
