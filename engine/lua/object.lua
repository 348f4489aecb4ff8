-- object.lua: the outbox every object of a cross-slot operation keeps (engine/crossing.py), put
-- before each object script that asks for it (scripts.py), after lib.lua. An object (a catalog
-- item, a flash sale, a wheel...) decides a step for a member, records an entry naming the member
-- steps it implies, and later settles or releases it. The object decides once: an entry settled
-- or released keeps that decision; a release undoes what the step took from the object's
-- counters, and a member step that lands after it is reversed on the member's side, never
-- answered by taking from the object again.
-- Every object script's KEYS start with these two, under the object's tag:
-- KEYS[1] entries hash   (entry key "<member>/<operation id>" -> msgpack {state, at ms, undo,
--                         reason}: state 0 pending | 1 settled | 2 released | 3 abandoned;
--                         undo {field, delta, ...}: what the step added to the counters;
--                         "<entry key>|s" -> the member steps, as the caller packed them.
--                         A decided entry's two fields expire with the decision's keep time)
-- KEYS[2] counters hash  (the object's own counts; "s:<field>": the settled part of a field,
--                         so field == s:field + what pending entries hold, for rekindle verify)
-- Generic actions, answered by object_action() before the script's own:
--   settle   ARGV[2] entry key  ARGV[3] keep until ms
--   release  ARGV[2] entry key  ARGV[3] keep until ms  ARGV[4] reason
--   abandon  ARGV[2] entry key  ARGV[3] keep until ms   (an entry no step opened: closed for good)
--            each returns {1, state} decided now | {0, state, reason} decided before, that
--            decision stands | {-1} no such entry (settle, release)
--   status   ARGV[2] entry key
--            returns {} unknown | {state, at ms, reason, steps}

local ENTRIES, COUNTERS = KEYS[1], KEYS[2]
local PENDING, SETTLED, RELEASED, ABANDONED = 0, 1, 2, 3

local function entry_get(key)
  local raw = redis.call('HGET', ENTRIES, key)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end

-- What the object's step took, undone by a release.
local taken = {}
local function take(field, delta)
  redis.call('HINCRBY', COUNTERS, field, delta)
  taken[#taken + 1] = field
  taken[#taken + 1] = delta
end

-- The entry of a step the object has just decided to take: pending until settled or released.
local function entry_open(key, at_ms, steps)
  redis.call('HSET', ENTRIES, key, cmsgpack.pack({PENDING, at_ms, taken, ''}), key .. '|s', steps)
end

local function decide(key, state, keep_until_ms, reason)
  local e = entry_get(key)
  if not e then
    if state ~= ABANDONED then return {-1} end
    e = {ABANDONED, 0, {}, 'abandoned'}
  elseif e[1] ~= PENDING or state == ABANDONED then  -- a step opened it: only settle or release close it
    return {0, e[1], e[4]}
  else
    local undo = e[3]
    for i = 1, #undo, 2 do
      if state == RELEASED then redis.call('HINCRBY', COUNTERS, undo[i], -undo[i + 1])
      else redis.call('HINCRBY', COUNTERS, 's:' .. undo[i], undo[i + 1]) end
    end
    e[1], e[4] = state, reason
  end
  redis.call('HSET', ENTRIES, key, cmsgpack.pack(e))
  redis.call('HPEXPIREAT', ENTRIES, keep_until_ms, 'FIELDS', 2, key, key .. '|s')
  return {1, state}
end

-- The generic actions; nil when ARGV[1] is the object's own.
local function object_action()
  local action, key = ARGV[1], ARGV[2]
  if action == 'settle' then return decide(key, SETTLED, tonumber(ARGV[3]), '') end
  if action == 'release' then return decide(key, RELEASED, tonumber(ARGV[3]), ARGV[4]) end
  if action == 'abandon' then return decide(key, ABANDONED, tonumber(ARGV[3]), 'abandoned') end
  if action == 'status' then
    local e = entry_get(key)
    if not e then return {} end
    return {e[1], e[2], e[4], redis.call('HGET', ENTRIES, key .. '|s') or ''}
  end
  return nil
end
