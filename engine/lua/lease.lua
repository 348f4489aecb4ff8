-- lease.lua: a scheduler shard's lease, and the work it grants. One worker at a time works a
-- shard; the lease expires by itself when its holder dies, and another takes the shard over.
-- KEYS[1] the shard's lease (string: the holder's token, with an expiry)
-- KEYS[2] the shard's job set (sorted set: job id -> due epoch ms)
-- ARGV[1] the worker's token
-- ARGV[2] lease ms: take the lease, or renew it, for this long; 0 gives it up (if held)
-- ARGV[3] now, epoch ms by the worker's clock: the jobs due by then are returned
-- ARGV[4] the most jobs to return (soonest due first)
-- returns {1, {job, due ms, job, due ms ...}} while the worker holds the lease; {0} otherwise
local holder = redis.call('GET', KEYS[1])
local lease_ms = tonumber(ARGV[2])
if lease_ms == 0 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {0}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', lease_ms)
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], lease_ms)
else
  return {0}
end
return {1, redis.call('ZRANGE', KEYS[2], '-inf', ARGV[3], 'BYSCORE', 'LIMIT', 0, ARGV[4], 'WITHSCORES')}
