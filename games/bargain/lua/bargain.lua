-- bargain.lua: a member's bargains in one campaign (砍价), the object side of a help (games/bargain;
-- object.lua, put before this, keeps the entries and answers settle, release, status and due).
-- One object per (campaign, owner), tag {bargain:<campaign>.<owner>}: its rounds are the owner's
-- bargains in the campaign, one open at a time (round r is the bargain "<campaign>.<r>.<owner>").
-- KEYS[1] entries, KEYS[2] counters, KEYS[3] pending (object.lua): counters, per round r:
--         "used:<r>" helper units taken, "taken:<r>" cents cut, "h:<r>:<helper>" 1 once the member
--         helped, "c:<r>:<helper>" the cents that help cut, "d:<r>:<device>" helps from a device
--         (each undone by a release, so the round's state is what its settled and pending helps made)
-- KEYS[4] state hash: "round" the current round; per round r: "s:<r>" msgpack {price, floor, units,
--         started ms, expires ms, programme hash, closed (0 open | 1 expired), prefix sums {0, ...}}
-- KEYS[5] helps list of the latest round: msgpack {round, helper, cut, units, at ms} appended by
--         each help (what GET shows: each help still counted in "c:<r>:<helper>"; a released
--         help's is 0); emptied when a round starts
-- Actions:
--   start  ARGV[2] now ms  ARGV[3] packed round record (closed 0) for a new round
--          returns {1, round} started | {0, round} the round open now (one open bargain at a time)
--   help   ARGV[2] entry key  ARGV[3] at ms  ARGV[4] round  ARGV[5] helper  ARGV[6] weight (units)
--          ARGV[7] the member steps (the helper's and the owner's, packed by the caller; the
--          entry records the decision {cut, price after it, reached (0|1), item, floor} for them:
--          the reward is the round's record's item at its floor, the terms it started under)
--          ARGV[8] device hash ("": none)  ARGV[9] helps a device may give a round (0: no cap)
--          returns {1, cut, units, used, taken, reached (0|1), price after, item, floor} | {0, state, reason} an entry under
--          this key already | {2, reason} refused, nothing written (bargain_closed | expired |
--          already_helped | device_limit) | {3} stale
--   close  ARGV[2] the expiry of the round to close (its job's)  ARGV[3] now ms
--          returns {1, round} closed now as expired | {0, why} not closed (unknown, done, not yet
--          expired, already closed, or helps still pending: try again later)
--   view   ARGV[2] round   returns {record, used, taken, helps...} or {} unknown: each helper's
--          latest help still counted (a help released and the same member's help after it: the
--          list holds both, the view the later one)

local generic = object_action()
if generic then return generic end

local STATE, HELPS = KEYS[4], KEYS[5]
local action = ARGV[1]

local function record_of(r)
  local raw = redis.call('HGET', STATE, 's:' .. r)
  if not raw then return nil end
  return cmsgpack.unpack(raw)
end

local function counter(name)
  return tonumber(redis.call('HGET', COUNTERS, name)) or 0
end

if action == 'start' then
  local r = tonumber(redis.call('HGET', STATE, 'round')) or 0
  if r > 0 then
    local rec = record_of(r)
    local open = rec[7] == 0 and counter('used:' .. r) < rec[3] and tonumber(ARGV[2]) < rec[5]
    if open then return {0, r} end
  end
  r = r + 1
  redis.call('DEL', HELPS) -- the list holds the open round's helps only (a closed round keeps its totals)
  redis.call('HSET', STATE, 'round', r, 's:' .. r, ARGV[3])
  return {1, r}
end

if action == 'help' then
  local key, at_ms, r, helper = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(at_ms) then return {3} end
  local rec = record_of(r)
  if not rec or rec[7] ~= 0 then return {2, 'bargain_closed'} end
  local units, amount, prefix = rec[3], rec[1] - rec[2], rec[8]
  local used, taken = counter('used:' .. r), counter('taken:' .. r)
  if used >= units then return {2, 'bargain_closed'} end
  if at_ms >= rec[5] then return {2, 'expired'} end
  if counter('h:' .. r .. ':' .. helper) > 0 then return {2, 'already_helped'} end
  local device, device_cap = ARGV[8], tonumber(ARGV[9])
  if device ~= '' and device_cap > 0 and counter('d:' .. r .. ':' .. device) >= device_cap then
    return {2, 'device_limit'}
  end
  -- games/bargain/rules.py help_cut, rule for rule: the last units land exactly on the floor;
  -- otherwise the schedule's cut, at least a cent a unit, leaving a cent for each unit to come.
  local w = math.min(tonumber(ARGV[6]), units - used)
  -- The help that reaches the floor is decided only when no other help is pending: a pending help
  -- released later would give its units back and reopen a round whose reward was given.
  if used + w == units and redis.call('ZCARD', PENDING_BY_TIME) > 0 then return {2, 'in_progress'} end
  local cut
  if used + w == units then
    cut = amount - taken
  else
    cut = prefix[used + w + 1] - prefix[used + 1]
    cut = math.max(cut, w)
    cut = math.min(cut, (amount - taken) - (units - used - w))
  end
  take('used:' .. r, w)
  take('taken:' .. r, cut)
  take('h:' .. r .. ':' .. helper, 1)
  take('c:' .. r .. ':' .. helper, cut)
  if device ~= '' then take('d:' .. r .. ':' .. device, 1) end
  local reached = used + w == units and 1 or 0
  local decided = {cut, rec[1] - taken - cut, reached, rec[10] or '', rec[2]}
  entry_open(key, at_ms, ARGV[7], decided)
  redis.call('RPUSH', HELPS, cmsgpack.pack({r, helper, cut, w, at_ms}))
  return {1, cut, w, used + w, taken + cut, reached, decided[2], decided[4], decided[5]}
end

if action == 'close' then
  local expires, now = tonumber(ARGV[2]), tonumber(ARGV[3])
  local r = tonumber(redis.call('HGET', STATE, 'round')) or 0
  local rec = nil
  while r > 0 do -- the round of that expiry: the latest, or one a newer round followed
    rec = record_of(r)
    if rec[5] == expires then break end
    if rec[5] < expires then r = 0 else r = r - 1 end
  end
  if r == 0 then return {0, 'unknown'} end
  if rec[7] ~= 0 then return {0, 'closed'} end
  if counter('used:' .. r) >= rec[3] then return {0, 'done'} end
  if now < rec[5] then return {0, 'open'} end
  if redis.call('ZCARD', PENDING_BY_TIME) > 0 then return {0, 'pending'} end
  rec[7] = 1
  redis.call('HSET', STATE, 's:' .. r, cmsgpack.pack(rec))
  return {1, r}
end

if action == 'view' then
  local r = tonumber(ARGV[2])
  local raw = redis.call('HGET', STATE, 's:' .. r)
  if not raw then return {} end
  local out = {raw, counter('used:' .. r), counter('taken:' .. r)}
  -- Newest first, each helper once: a helper's earlier push is a help released before their
  -- next (a second help needs the first gone), so the latest is the one "c:<r>:<helper>" counts.
  local list, seen, kept = redis.call('LRANGE', HELPS, 0, -1), {}, {}
  for i = #list, 1, -1 do
    local help = cmsgpack.unpack(list[i])
    if help[1] == r and not seen[help[2]] then
      seen[help[2]] = true
      if counter('c:' .. r .. ':' .. help[2]) > 0 then kept[#kept + 1] = list[i] end
    end
  end
  for i = #kept, 1, -1 do out[#out + 1] = kept[i] end
  return out
end

return redis.error_reply('bargain.lua: unknown action ' .. tostring(action))
