-- schedule.lua: add jobs to one scheduler shard (engine/jobs.py names them).
-- KEYS[1] the shard's job set (sorted set: job id -> due epoch ms)
-- ARGV[1] "keep": a job already waiting keeps its time (ZADD NX: "make sure it is there", which
--         leaves a failed job's backoff alone); "move": the job's time is set (pushed later or sooner)
-- ARGV[2..] due ms, job id, due ms, job id ...
-- returns how many jobs were new
if ARGV[1] == 'keep' then
  return redis.call('ZADD', KEYS[1], 'NX', unpack(ARGV, 2))
end
return redis.call('ZADD', KEYS[1], unpack(ARGV, 2))
