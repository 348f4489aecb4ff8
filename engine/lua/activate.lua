-- activate.lua: make a programme source the active version, unless it already is.
-- KEYS[1] seq counter (last version number)
-- KEYS[2] active version number
-- KEYS[3] versions hash (n -> source)
-- KEYS[4] meta hash (n:hash, n:origin, n:at_ms)
-- KEYS[5] hash of the source last activated from a file at start-up
-- ARGV[1] source bytes
-- ARGV[2] content hash (sha256 hex)
-- ARGV[3] origin ("file:<path>" | "api")
-- ARGV[4] now, epoch ms
-- ARGV[5] change channel
-- ARGV[6] "1" when the source is the start-up file, "0" when posted
-- ARGV[7] the programme's dedupe retention, ms (kept per version: see ProgramRegistry.refresh)
-- returns {version number, 1 if newly activated else 0}
local active = redis.call('GET', KEYS[2])
if active and ARGV[6] == '1' and redis.call('GET', KEYS[5]) == ARGV[2] then
  -- A restart with the file it started with before: keep what is active, which may be a
  -- version posted since. Only a changed file replaces it.
  return {tonumber(active), 0}
end
if ARGV[6] == '1' then redis.call('SET', KEYS[5], ARGV[2]) end
if active and redis.call('HGET', KEYS[4], active .. ':hash') == ARGV[2] then
  return {tonumber(active), 0}
end
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], n, ARGV[1])
redis.call('HSET', KEYS[4], n .. ':hash', ARGV[2], n .. ':origin', ARGV[3], n .. ':at_ms', ARGV[4],
  n .. ':retention_ms', ARGV[7])
redis.call('SET', KEYS[2], n)
redis.call('PUBLISH', ARGV[5], n)
return {n, 1}
