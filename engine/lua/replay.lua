-- replay.lua: what a resuming live-feed client needs, read at one instant.
-- KEYS[1] feed stream of the member
-- ARGV[1] start: "" (none: the client starts live from now), "(<id>" exclusive or "<id>" inclusive
-- ARGV[2] most entries to return (the caller pages on with XRANGE if this many come back)
-- returns {last generated id, first kept id, max deleted id, entries added, length, {entries}}
--   ids are "0-0" when there is none; entries as XRANGE returns them, oldest first
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0', '0-0', 0, 0, {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last_id, max_deleted, added, length, first_id = '0-0', '0-0', 0, 0, '0-0'
for i = 1, #info, 2 do
  local name = info[i]
  if name == 'last-generated-id' then last_id = info[i + 1]
  elseif name == 'max-deleted-entry-id' then max_deleted = info[i + 1]
  elseif name == 'entries-added' then added = info[i + 1]
  elseif name == 'length' then length = info[i + 1]
  elseif name == 'first-entry' and info[i + 1] then first_id = info[i + 1][1] end
end
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {last_id, first_id, max_deleted, added, length, entries}
