-- replay.lua: what a resuming live-feed client needs, read at one instant.
-- KEYS[1] feed stream of the member
-- ARGV[1] exclusive start id ("" for none: the client starts live from now)
-- ARGV[2] most entries to return (the caller pages on with XRANGE if this many come back)
-- returns {last generated id, max deleted id, {entries after ARGV[1]}}
--   ids are "0-0" when the stream does not exist; entries as XRANGE returns them
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0', {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last_id, max_deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last_id = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
end
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return {last_id, max_deleted, entries}
