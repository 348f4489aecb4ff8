-- object.lua: the outbox every object of a cross-slot operation keeps (engine/crossing.py), put
-- before each object script that asks for it (scripts.py), after lib.lua. An object (a catalog
-- item, a flash sale, a wheel...) decides a step for a member, records an entry naming the member
-- steps it implies, and later settles or releases it. The object decides once: an entry settled
-- or released keeps that decision; a release undoes what the step took from the object's
-- counters, and a member step that lands after it is reversed on the member's side, never
-- answered by taking from the object again.
-- Every object script's KEYS start with these three, under the object's tag:
-- KEYS[1] entries hash   (entry key "<member>/<operation id>" -> msgpack {state, at ms, undo,
--                         reason, decided}: state 0 pending | 1 settled | 2 released; undo {field,
--                         delta, ...}: what the step added to the counters; decided: values the
--                         object decided that its member steps need (a bargain help's cut), {}
--                         when none, given to every member step as its last term; while pending,
--                         followed by the member steps as the caller packed them (never
--                         unpacked here). A decided entry keeps only its decision, and expires
--                         with the decision's keep time)
-- KEYS[2] counters hash  (the object's own counts; "s:<field>": the settled part of a field,
--                         so field == s:field + what pending entries hold, for rekindle verify;
--                         "#swept": the latest step time a sweep has looked at)
-- KEYS[3] pending zset   (entry key -> at ms, while pending: what a sweep finishes)
-- Generic actions, answered by object_action() before the script's own:
--   settle   ARGV[2] entry key  ARGV[3] keep until ms
--   release  ARGV[2] entry key  ARGV[3] keep until ms  ARGV[4] reason
--            each returns {1, state} decided now | {0, state, reason} decided before, that
--            decision stands | {-1} no such entry
--   settle_many ARGV[2] keep until ms  ARGV[3..] entry keys: each settled as by settle (the
--            settles a process sends without waiting, gathered per object); returns how many
--            were decided now
--   status   ARGV[2] entry key
--            returns {} unknown | {state, at ms, reason, steps, packed decided}
--   due      ARGV[2] opened at or before ms  ARGV[3] most entries  ARGV[4] entries to skip first
--            (those the sweep leaves pending for an operator; absent: 0)
--            returns {key, at ms, steps, packed decided, key, ...} pending, oldest first; from
--            then on a step whose time is at or before ARGV[2] is refused as stale (it stalled
--            past the sweep of its time, which would never see it)

local ENTRIES, COUNTERS, PENDING_BY_TIME = KEYS[1], KEYS[2], KEYS[3]
local PENDING, SETTLED, RELEASED = 0, 1, 2

-- The entry's record, and the member steps that follow it while it is pending ("" after).
local function entry_get(key)
  local raw = redis.call('HGET', ENTRIES, key)
  if not raw then return nil, nil end
  local after, e = cmsgpack.unpack_one(raw)
  if after < 0 then return e, '' end -- cmsgpack's "nothing follows" (a decided entry keeps its record only)
  return e, string.sub(raw, after + 1)
end

-- What the object's step took, undone by a release.
local taken = {}
local function take(field, delta)
  redis.call('HINCRBY', COUNTERS, field, delta)
  taken[#taken + 1] = field
  taken[#taken + 1] = delta
end

-- A step whose time a sweep has looked at already comes from a request that stalled past it:
-- the sweep would never see its entry, so it must not open one.
local function stale(at_ms)
  return at_ms <= (tonumber(redis.call('HGET', COUNTERS, '#swept')) or -1)
end

-- The entry of a step the object has just decided to take: pending until settled or released.
local function entry_open(key, at_ms, steps, decided)
  redis.call('HSET', ENTRIES, key, cmsgpack.pack({PENDING, at_ms, taken, '', decided or {}}) .. steps)
  redis.call('ZADD', PENDING_BY_TIME, at_ms, key)
end

local function decide(key, state, keep_until_ms, reason)
  local e = entry_get(key)
  if not e then return {-1} end
  if e[1] ~= PENDING then return {0, e[1], e[4]} end
  local undo = e[3]
  for i = 1, #undo, 2 do
    if state == RELEASED then redis.call('HINCRBY', COUNTERS, undo[i], -undo[i + 1])
    else redis.call('HINCRBY', COUNTERS, 's:' .. undo[i], undo[i + 1]) end
  end
  e[1], e[4] = state, reason
  redis.call('HSETEX', ENTRIES, 'PXAT', keep_until_ms, 'FIELDS', 1, key, cmsgpack.pack(e))
  redis.call('ZREM', PENDING_BY_TIME, key)
  return {1, state}
end

-- The generic actions; nil when ARGV[1] is the object's own.
local function object_action()
  local action, key = ARGV[1], ARGV[2]
  if action == 'settle' then return decide(key, SETTLED, tonumber(ARGV[3]), '') end
  if action == 'settle_many' then
    local keep, n = tonumber(ARGV[2]), 0
    for i = 3, #ARGV do
      if decide(ARGV[i], SETTLED, keep, '')[1] == 1 then n = n + 1 end
    end
    return n
  end
  if action == 'release' then return decide(key, RELEASED, tonumber(ARGV[3]), ARGV[4]) end
  if action == 'status' then
    local e, steps = entry_get(key)
    if not e then return {} end
    return {e[1], e[2], e[4], steps, cmsgpack.pack(e[5] or {})}
  end
  if action == 'due' then
    local swept = tonumber(redis.call('HGET', COUNTERS, '#swept')) or -1
    if tonumber(ARGV[2]) > swept then redis.call('HSET', COUNTERS, '#swept', ARGV[2]) end
    local out = {}
    for _, k in ipairs(redis.call('ZRANGE', PENDING_BY_TIME, '-inf', ARGV[2], 'BYSCORE', 'LIMIT',
                                      tonumber(ARGV[4] or 0), tonumber(ARGV[3]))) do
      local e, steps = entry_get(k)
      if e and e[1] == PENDING then
        out[#out + 1] = k; out[#out + 1] = e[2]; out[#out + 1] = steps; out[#out + 1] = cmsgpack.pack(e[5] or {})
      else
        redis.call('ZREM', PENDING_BY_TIME, k) -- cannot happen (both change together); heal rather than loop
      end
    end
    return out
  end
  return nil
end
