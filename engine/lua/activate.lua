-- activate.lua: make a programme source the active version, unless it already is.
-- KEYS[1] seq counter   KEYS[2] active version number   KEYS[3] versions hash (n -> source)
-- KEYS[4] meta hash     (n:hash, n:origin, n:at_ms)
-- ARGV[1] source bytes  ARGV[2] content hash  ARGV[3] origin ("file:<path>" | "api")
-- ARGV[4] now ms        ARGV[5] change channel
-- returns {version number, 1 if newly activated else 0}
local active = redis.call('GET', KEYS[2])
if active and redis.call('HGET', KEYS[4], active .. ':hash') == ARGV[2] then
  return {tonumber(active), 0}
end
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], n, ARGV[1])
redis.call('HSET', KEYS[4], n .. ':hash', ARGV[2], n .. ':origin', ARGV[3], n .. ':at_ms', ARGV[4])
redis.call('SET', KEYS[2], n)
redis.call('PUBLISH', ARGV[5], n)
return {n, 1}
