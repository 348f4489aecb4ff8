-- report.lua: a bargain campaign's anti-collusion counters (games/bargain/report.py), kept as
-- helps happen so the report reads a bounded top, never the bargains played. A plain script (no
-- object.lua: nothing here is a cross-slot entry). One tag per campaign, {bargain_report:<campaign>}:
-- KEYS[1] pairs zset   "<helper>><owner>" -> helps that helper gave that owner's bargains (">" is
--                      outside the id alphabet, so the split is unambiguous)
-- KEYS[2] owners hash  "h:<owner>" helps the owner's bargains received, "n:<owner>" of them by
--                      members new when they helped
-- KEYS[3] shares zset  owner -> "n:<owner>" / "h:<owner>", only once "h:<owner>" reached ARGV[8]
--                      of count (the report reads it from the top)
-- KEYS[4] devices zset of one local day: device hash -> helps that day (expires after it)
-- Every key but the day's expires ARGV[7] after the campaign's latest help.
-- Actions:
--   count  ARGV[2] helper  ARGV[3] owner  ARGV[4] 1 the helper is new | 0  ARGV[5] device hash
--          ("": none)  ARGV[6] the day key's expiry (ms)  ARGV[7] the others' (ms)  ARGV[8] helps
--          an owner needs to enter the shares zset
--          returns the owner's helps so far. One applied help, O(log n): sent unawaited.
--   read   ARGV[2] least helps a pair needs  ARGV[3] most pairs  ARGV[4] least share (a float)
--          ARGV[5] most owners  ARGV[6] least helps a device needs today  ARGV[7] most devices
--          returns {pairs {member, helps, ...}, owners {owner, helps, from new, ...}, devices
--          {device, helps, ...}}, each from the top down, at most the count asked for

local PAIRS, OWNERS, SHARES, DEVICES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local action = ARGV[1]

if action == 'count' then
  local helper, owner, new, device = ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5]
  local keep = ARGV[7]
  redis.call('ZINCRBY', PAIRS, 1, helper .. '>' .. owner)
  local helps = redis.call('HINCRBY', OWNERS, 'h:' .. owner, 1)
  local from_new
  if new then
    from_new = redis.call('HINCRBY', OWNERS, 'n:' .. owner, 1)
  else
    from_new = tonumber(redis.call('HGET', OWNERS, 'n:' .. owner)) or 0
  end
  if helps >= tonumber(ARGV[8]) then
    redis.call('ZADD', SHARES, string.format('%.17g', from_new / helps), owner)
  end
  for _, key in ipairs({PAIRS, OWNERS, SHARES}) do redis.call('PEXPIREAT', key, keep) end
  if device ~= '' then
    redis.call('ZINCRBY', DEVICES, 1, device)
    redis.call('PEXPIREAT', DEVICES, ARGV[6])
  end
  return helps
end

if action == 'read' then
  local top = redis.call('ZRANGE', PAIRS, '+inf', ARGV[2], 'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[3]), 'WITHSCORES')
  local flagged = redis.call('ZRANGE', SHARES, '+inf', ARGV[4], 'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[5]))
  local owners = {}
  for _, owner in ipairs(flagged) do
    local counts = redis.call('HMGET', OWNERS, 'h:' .. owner, 'n:' .. owner)
    owners[#owners + 1] = owner
    owners[#owners + 1] = tonumber(counts[1]) or 0
    owners[#owners + 1] = tonumber(counts[2]) or 0
  end
  local devices = redis.call('ZRANGE', DEVICES, '+inf', ARGV[6], 'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[7]), 'WITHSCORES')
  return {top, owners, devices}
end

return redis.error_reply('report.lua: unknown action ' .. tostring(action))
