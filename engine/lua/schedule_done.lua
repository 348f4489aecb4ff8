-- schedule_done.lua: settle one shard's jobs after a run.
-- KEYS[1] the shard's job set (sorted set: job id -> due epoch ms)
-- KEYS[2] the shard's tries (hash: job id -> failed attempts so far)
-- KEYS[3] the shard's dead list (sorted set: job id -> when it was given up, epoch ms)
-- ARGV[1] now, epoch ms   ARGV[2] first retry delay ms   ARGV[3] longest retry delay ms
-- ARGV[4] n: how many jobs are done   ARGV[5] d: how many are dead; then n pairs (job id, due
--         ms as read), d pairs, then pairs of the jobs that failed
-- A job is settled only while its score is the one read: a job rescheduled meanwhile (another
-- operation moved it) stays as it now stands. Done: removed, with its tries. Dead: moved to the
-- dead list, for an operator. Failed: due again at now + first delay * 2^(tries - 1), never later
-- than now + the longest delay, so a poison job costs a few calls an hour rather than a busy
-- loop, and never holds up the others.
-- returns {removed, retried, dead}
local now_ms, first_ms, longest_ms, done = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local dead_n = tonumber(ARGV[5])
local removed, retried, dead = 0, 0, 0
local function unchanged(job, due)
  local score = redis.call('ZSCORE', KEYS[1], job)
  return score and tonumber(score) == tonumber(due)
end
for i = 6, 5 + 2 * done, 2 do
  if unchanged(ARGV[i], ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
for i = 6 + 2 * done, 5 + 2 * (done + dead_n), 2 do
  if unchanged(ARGV[i], ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('ZADD', KEYS[3], int(now_ms), ARGV[i])
    dead = dead + 1
  end
end
for i = 6 + 2 * (done + dead_n), #ARGV, 2 do
  if unchanged(ARGV[i], ARGV[i + 1]) then
    local tries = redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
    local delay = math.min(first_ms * 2 ^ math.min(tries - 1, 40), longest_ms)
    redis.call('ZADD', KEYS[1], 'XX', int(now_ms + delay), ARGV[i])
    retried = retried + 1
  end
end
return {removed, retried, dead}
