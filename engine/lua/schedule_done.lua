-- schedule_done.lua: settle one shard's jobs after a run.
-- KEYS[1] the shard's job set (sorted set: job id -> due epoch ms)
-- KEYS[2] the shard's tries (hash: job id -> failed attempts so far)
-- KEYS[3] the shard's dead list (sorted set: job id -> when it was given up, epoch ms)
-- ARGV[1] now, epoch ms   ARGV[2] first retry delay ms   ARGV[3] longest retry delay ms
-- ARGV[4] jitter: the share of a retry delay that is random (0 none, 0.5 "equal jitter", 1 "full")
-- ARGV[5] a random seed from the caller (Lua's math.random is not random here), one per call
-- ARGV[6] n: how many jobs are done   ARGV[7] d: how many are dead; then n pairs (job id, due
--         ms as read), d pairs, then triples (job id, due ms as read, most attempts) of the jobs
--         that failed
-- A job is settled only while its score is the one read: a job rescheduled meanwhile (another
-- operation moved it) stays as it now stands. Done: removed, with its tries. Dead (its task said
-- so): moved to the dead list, for an operator, its tries counted and kept (the list shows them;
-- a replay clears them). Failed: its tries counted; at its most attempts it goes to the dead list
-- likewise, else it is due again after
--   d = min(first delay * 2^(tries - 1), longest delay),   delay = d - jitter * d * u
-- with u in [0, 1) drawn per job from the seed and the job id (so jobs that failed together do not
-- come back together), never later than the longest delay and never sooner than d * (1 - jitter):
-- a poison job costs a few calls an hour rather than a busy loop, never holds up the others, and
-- ends in the dead list after a bounded number of attempts.
-- returns {removed, retried, dead, {job ids that went to the dead list at their most attempts}}
local now_ms, first_ms, longest_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local jitter, seed = tonumber(ARGV[4]), ARGV[5]
local done, dead_n = tonumber(ARGV[6]), tonumber(ARGV[7])
local removed, retried, dead = 0, 0, 0
local exhausted = {}
local function unchanged(job, due)
  local score = redis.call('ZSCORE', KEYS[1], job)
  return score and tonumber(score) == tonumber(due)
end
local function bury(job)
  redis.call('ZREM', KEYS[1], job)
  redis.call('ZADD', KEYS[3], int(now_ms), job)
  dead = dead + 1
end
local first = 8
for i = first, first - 1 + 2 * done, 2 do
  if unchanged(ARGV[i], ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
for i = first + 2 * done, first - 1 + 2 * (done + dead_n), 2 do
  if unchanged(ARGV[i], ARGV[i + 1]) then
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
    bury(ARGV[i])
  end
end
for i = first + 2 * (done + dead_n), #ARGV, 3 do
  local job = ARGV[i]
  if unchanged(job, ARGV[i + 1]) then
    local tries = redis.call('HINCRBY', KEYS[2], job, 1)
    if tries >= tonumber(ARGV[i + 2]) then
      bury(job)
      exhausted[#exhausted + 1] = job
    else
      local d = math.min(first_ms * 2 ^ math.min(tries - 1, 40), longest_ms)
      local u = tonumber(string.sub(redis.sha1hex(seed .. '|' .. job), 1, 8), 16) / 4294967296
      local delay = math.floor(d - jitter * d * u)
      redis.call('ZADD', KEYS[1], 'XX', int(now_ms + delay), job)
      retried = retried + 1
    end
  end
end
return {removed, retried, dead, exhausted}
