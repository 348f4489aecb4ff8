-- outbox.lua: the outreach webhooks' outbox in one scheduler shard (engine/outreach.py).
-- KEYS[1] the shard's outbox (hash: delivery job id -> the message's JSON; "" once delivered or
--         dropped, kept a while with a field expiry so that enqueuing it again is still a no-op)
-- KEYS[2] the shard's job set (sorted set: job id -> due epoch ms)
-- KEYS[3] the shard's tries (hash: job id -> failed attempts so far)
-- KEYS[4] the shard's dead list (sorted set: job id -> when it was given up, epoch ms)
-- ARGV[1] what to do:
--   "put" job, message JSON, due ms: the message and its delivery job, unless the outbox has the
--         job already (waiting, dead, or delivered not long ago: nothing changes, except that a
--         waiting message whose job is gone from both sets is scheduled again). Returns 1 if new.
--   "load" job: {the message JSON or "" or nil, failed attempts so far or nil}.
--   "done" job, keep ms: the message delivered (or dropped): its field becomes "" for keep ms.
--   "list" after ms, after job ("": from the start), most, scan at most, job id prefix: the dead
--         jobs of that prefix after (after ms, after job) in the list's order (when, then id
--         bytewise), up to `most`, reading at most `scan` entries. Returns {{job, when, message
--         or nil, tries or nil}..., reached the end (1/0), last read when, last read job}.
--   "replay" now ms, job...: each job on the dead list moves back to the job set, due now, its
--         tries cleared. Returns how many moved.
local mode = ARGV[1]

if mode == 'put' then
  local job = ARGV[2]
  if redis.call('HSETNX', KEYS[1], job, ARGV[3]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[4], job)
    return 1
  end
  local held = redis.call('HGET', KEYS[1], job)
  if held and held ~= '' and not redis.call('ZSCORE', KEYS[4], job) then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[4], job)  -- a no-op while it waits: its time and backoff stay
  end
  return 0
end

if mode == 'load' then
  return {redis.call('HGET', KEYS[1], ARGV[2]), redis.call('HGET', KEYS[3], ARGV[2])}
end

if mode == 'done' then
  redis.call('HSETEX', KEYS[1], 'PX', ARGV[3], 'FIELDS', 1, ARGV[2], '')
  return 1
end

if mode == 'list' then
  local after_ms, after_job, most, scan, prefix = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
  -- Bytewise, as the sorted set orders equal scores (Lua's < on strings follows the locale).
  local function later(job, when)
    if when ~= after_ms then return when > after_ms end
    local n = math.min(#job, #after_job)
    for i = 1, n do
      local a, b = string.byte(job, i), string.byte(after_job, i)
      if a ~= b then return a > b end
    end
    return #job > #after_job
  end
  local out, read, offset = {}, 0, 0
  local last_ms, last_job, ended = after_ms, after_job, 0
  local chunk = math.min(scan, 256)
  while #out < most and read < scan do
    local flat = redis.call('ZRANGE', KEYS[4], int(after_ms), '+inf', 'BYSCORE', 'LIMIT', offset, chunk, 'WITHSCORES')
    if #flat == 0 then ended = 1 break end
    offset = offset + #flat / 2
    for i = 1, #flat, 2 do
      local job, when = flat[i], tonumber(flat[i + 1])
      if later(job, when) then
        read = read + 1
        last_ms, last_job = when, job
        if string.sub(job, 1, #prefix) == prefix then
          out[#out + 1] = {job, int(when), redis.call('HGET', KEYS[1], job), redis.call('HGET', KEYS[3], job)}
          if #out >= most then break end
        end
        if read >= scan then break end
      end
    end
    if #flat < 2 * chunk and #out < most and read < scan then ended = 1 break end
  end
  out[#out + 1] = ended
  out[#out + 1] = int(last_ms)
  out[#out + 1] = last_job
  return out
end

if mode == 'replay' then
  local now_ms, moved = ARGV[2], 0
  for i = 3, #ARGV do
    if redis.call('ZREM', KEYS[4], ARGV[i]) == 1 then
      redis.call('HDEL', KEYS[3], ARGV[i])
      redis.call('ZADD', KEYS[2], now_ms, ARGV[i])
      moved = moved + 1
    end
  end
  return moved
end

return redis.error_reply('ERR outbox.lua: unknown mode ' .. tostring(mode))
