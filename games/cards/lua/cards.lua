-- cards.lua: the object side of collect cards (集卡) (games/cards; object.lua, put before this,
-- keeps the entries and answers settle, release, status and due). Two object kinds run it:
-- * a campaign, tag {cards:<campaign>}: the daily issue budgets a draw decides against, the
--   members who combined a set and the split of the pool;
-- * a giver, tag {card_gifts:<campaign>.<giver>}: the outbox of the giver's gifts (what is in
--   transfer between the giver's step and the receiver's).
-- KEYS[1] entries, KEYS[2] counters, KEYS[3] pending (object.lua). Counters (each taken by a step,
--         given back by its release, so rekindle verify sees settled + pending):
--         campaign: "iss:<day>:<card>" cards issued that local day; "cmb:<member>" 1 once the member
--         combined; "used:<card>" cards consumed by combines; giver: "out:<card>" cards given
-- KEYS[4] campaign state hash: "seq" combines so far (never undone: an order), "q:<member>" the
--         member's place in it, "frozen" 1 once the split has begun (no combine after),
--         "split:n" members sharing, "split:paid" shares recorded, "split:sum" their total,
--         "share:<member>" the member's share
-- KEYS[5] campaign combiners zset (member -> place), KEYS[6] sharers list: the members who
--         combined, in order, fixed when the split begins
-- Actions:
--   draw     ARGV[2] entry key  ARGV[3] at ms  ARGV[4] day  ARGV[5] the member step (packed; the
--            entry records the card given, {deck index}, for it)  ARGV[6] n candidates, then n x
--            (deck index, card, daily budget (-1: none)): the card drawn, then its fallbacks
--            (games/cards/rules.py fallback_order), then the deck's cards
--            returns {1, deck index, issued today of each deck card...} | {0, state, reason} an
--            entry under this key already | {2, reason, issued today...} refused, nothing written
--            (no_cards_today: no candidate has room; ended: the split has begun) | {3} stale
--   combine  ARGV[2] entry key  ARGV[3] at ms  ARGV[4] member  ARGV[5] the member step (packed)
--            ARGV[6] n, then n x (card, count): the set the step takes
--            returns {1, place} | {0, state, reason} | {2, reason} (already_combined | ended) | {3}
--   gift     (a giver's object) ARGV[2] entry key  ARGV[3] at ms  ARGV[4] card  ARGV[5] the steps
--            returns {1} | {0, state, reason} | {3}
--   freeze   ARGV[2] ""  ARGV[3] now ms  ARGV[4] deadline ms: the split begins (once): the
--            members whose combine settled, in order, become the sharers
--            returns {1, sharers, shares recorded} | {0, why} not yet (open: before the deadline;
--            pending: an entry is still pending, try again later)
--   sharers  ARGV[2] ""  ARGV[3] from  ARGV[4] to (exclusive)   returns the sharers in that range
--   paid     ARGV[2] ""  ARGV[3] from  ARGV[4] total of the batch  ARGV[5..] member, share, ...:
--            the batch's shares, recorded once (from must be the shares recorded so far)
--            returns the shares recorded after it
--   view     ARGV[2] member  ARGV[3] day  ARGV[4..] deck cards
--            returns {combined (0|1), share (-1: none yet), frozen, sharers, issued today of each...}

local generic = object_action()
if generic then return generic end

local STATE, COMBINERS, SHARERS = KEYS[4], KEYS[5], KEYS[6]
local action = ARGV[1]

local function counter(name)
  return tonumber(redis.call('HGET', COUNTERS, name)) or 0
end

local function frozen()
  return STATE and redis.call('HGET', STATE, 'frozen') == '1'
end

local function issued_today(day, first)
  local fields = {}
  for i = first, #ARGV do fields[#fields + 1] = 'iss:' .. day .. ':' .. ARGV[i] end
  if #fields == 0 then return {} end
  local out = redis.call('HMGET', COUNTERS, unpack(fields))
  for i = 1, #out do out[i] = tonumber(out[i]) or 0 end
  return out
end

if action == 'draw' then
  local key, at_ms, day = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  local n = tonumber(ARGV[6])
  local deck_from = 7 + 3 * n
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(at_ms) then return {3} end
  if frozen() then return {2, 'ended'} end
  for i = 0, n - 1 do
    local index, card, budget = tonumber(ARGV[7 + 3 * i]), ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i])
    local field = 'iss:' .. day .. ':' .. card
    if budget < 0 or counter(field) < budget then
      take(field, 1)
      entry_open(key, at_ms, ARGV[5], {index})
      local out = {1, index}
      for _, v in ipairs(issued_today(day, deck_from)) do out[#out + 1] = v end
      return out
    end
  end
  local out = {2, 'no_cards_today'}
  for _, v in ipairs(issued_today(day, deck_from)) do out[#out + 1] = v end
  return out
end

if action == 'combine' then
  local key, at_ms, member = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(at_ms) then return {3} end
  if frozen() then return {2, 'ended'} end
  if counter('cmb:' .. member) > 0 then return {2, 'already_combined'} end
  take('cmb:' .. member, 1)
  for i = 0, tonumber(ARGV[6]) - 1 do take('used:' .. ARGV[7 + 2 * i], tonumber(ARGV[8 + 2 * i])) end
  local place = redis.call('HINCRBY', STATE, 'seq', 1)
  redis.call('ZADD', COMBINERS, place, member)
  entry_open(key, at_ms, ARGV[5], {})
  return {1, place}
end

if action == 'gift' then
  local key, at_ms = ARGV[2], tonumber(ARGV[3])
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(at_ms) then return {3} end
  take('out:' .. ARGV[4], 1)
  entry_open(key, at_ms, ARGV[5], {})
  return {1}
end

if action == 'freeze' then
  local now, deadline = tonumber(ARGV[3]), tonumber(ARGV[4])
  if not frozen() then
    if now < deadline then return {0, 'open'} end
    if redis.call('ZCARD', PENDING_BY_TIME) > 0 then return {0, 'pending'} end
    -- The members whose combine settled (a released one gave its place back: cmb is 0), in order.
    redis.call('DEL', SHARERS)
    local n = 0
    for _, member in ipairs(redis.call('ZRANGE', COMBINERS, 0, -1)) do
      if counter('cmb:' .. member) > 0 then
        redis.call('RPUSH', SHARERS, member)
        n = n + 1
      end
    end
    redis.call('HSET', STATE, 'frozen', 1, 'split:n', n, 'split:paid', 0, 'split:sum', 0)
  end
  return {1, tonumber(redis.call('HGET', STATE, 'split:n')), tonumber(redis.call('HGET', STATE, 'split:paid'))}
end

if action == 'sharers' then
  return redis.call('LRANGE', SHARERS, tonumber(ARGV[3]), tonumber(ARGV[4]) - 1)
end

if action == 'paid' then
  local from = tonumber(ARGV[3])
  local paid = tonumber(redis.call('HGET', STATE, 'split:paid')) or 0
  if from == paid then -- a batch run again (a restart half-way) is recorded once
    for i = 5, #ARGV, 2 do redis.call('HSET', STATE, 'share:' .. ARGV[i], ARGV[i + 1]) end
    paid = paid + (#ARGV - 4) / 2
    redis.call('HSET', STATE, 'split:paid', paid)
    redis.call('HINCRBY', STATE, 'split:sum', tonumber(ARGV[4]))
  end
  return paid
end

if action == 'view' then
  local member, day = ARGV[2], ARGV[3]
  local state = redis.call('HMGET', STATE, 'frozen', 'split:n', 'share:' .. member)
  local out = {counter('cmb:' .. member), tonumber(state[3]) or -1, tonumber(state[1]) or 0, tonumber(state[2]) or 0}
  for _, v in ipairs(issued_today(day, 4)) do out[#out + 1] = v end
  return out
end

return redis.error_reply('cards.lua: unknown action ' .. tostring(action))
