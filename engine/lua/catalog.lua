-- catalog.lua: a catalog item's stock and its redemption outbox, the object side of a points
-- redemption (DESIGN.md "Crossing slots"). Every key shares the item's tag {cat:<item>}; the
-- member side is a member.lua operation the caller applies in between.
-- KEYS[1] sold counter    (string: units reserved or delivered, never above the stock it was
--                          reserved under)
-- KEYS[2] outbox hash     (redemption key "<member>/<operation id>" -> msgpack redemption record,
--                          engine/redeem.py Redemption: what the member step needs)
-- KEYS[3] outbox by time  (zset: redemption key, scored by its reservation time ms)
-- KEYS[4] settled hash    (redemption key -> "1", each field expiring on its own: a retry of a
--                          delivered redemption is told so without taking stock again)
-- KEYS[5] held hash       (member -> units the member holds of the item, pending or delivered:
--                          the per-member limit is checked here, before a unit is taken, so a
--                          member over their limit never holds stock, not even for a moment)
-- ARGV[1] action: reserve | settle | release | due
--   reserve  ARGV[2] redemption key  ARGV[3] now ms  ARGV[4] stock (-1: unlimited)
--            ARGV[5] msgpack record  ARGV[6] member  ARGV[7] per-member limit (0: none)
--            returns {1, sold} reserved | {0, sold} out of stock, nothing written |
--                    {2} pending already (another call holds it) | {3} settled already |
--                    {4} the member holds their limit already, nothing written
--   settle   ARGV[2] redemption key  ARGV[3] settled marker kept until ms
--            returns 1 settled | 0 settled already | 2 late: the entry had been released while
--            its member step applied after all, so the unit is taken again (sold may exceed stock)
--   release  ARGV[2] redemption key
--            returns 1 released (sold - 1) | 0 nothing pending under that key
--   due      ARGV[2] reserved at or before ms  ARGV[3] most entries
--            returns {key, record, key, record, ...} oldest first

local action, key = ARGV[1], ARGV[2]

local function mark_settled(until_ms)
  redis.call('HSET', KEYS[4], key, '1')
  redis.call('HPEXPIREAT', KEYS[4], until_ms, 'FIELDS', 1, key)
end

if action == 'reserve' then
  if redis.call('HEXISTS', KEYS[4], key) == 1 then return {3} end
  if redis.call('HEXISTS', KEYS[2], key) == 1 then return {2} end
  local limit = tonumber(ARGV[7])
  if limit > 0 and (tonumber(redis.call('HGET', KEYS[5], ARGV[6])) or 0) >= limit then return {4} end
  local sold = tonumber(redis.call('GET', KEYS[1])) or 0
  local stock = tonumber(ARGV[4])
  if stock >= 0 and sold >= stock then return {0, sold} end
  sold = redis.call('INCR', KEYS[1])
  redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
  redis.call('HSET', KEYS[2], key, ARGV[5])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), key)
  return {1, sold}
end

-- The member of a redemption key "<member>/<operation id>" ('/' is outside the id alphabet).
local function member_of(k) return string.match(k, '^([^/]+)/') end

if action == 'settle' then
  if redis.call('HDEL', KEYS[2], key) == 1 then
    redis.call('ZREM', KEYS[3], key)
    mark_settled(ARGV[3])
    return 1
  end
  if redis.call('HEXISTS', KEYS[4], key) == 1 then return 0 end
  redis.call('INCR', KEYS[1])
  redis.call('HINCRBY', KEYS[5], member_of(key), 1)
  mark_settled(ARGV[3])
  return 2
end

if action == 'release' then
  if redis.call('HDEL', KEYS[2], key) == 0 then return 0 end
  redis.call('ZREM', KEYS[3], key)
  redis.call('DECR', KEYS[1])
  local member = member_of(key)
  if redis.call('HINCRBY', KEYS[5], member, -1) <= 0 then redis.call('HDEL', KEYS[5], member) end
  return 1
end

if action == 'due' then
  local keys = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
  local out = {}
  for _, k in ipairs(keys) do
    local record = redis.call('HGET', KEYS[2], k)
    if record then
      out[#out + 1] = k
      out[#out + 1] = record
    else
      redis.call('ZREM', KEYS[3], k) -- cannot happen (both change together); heal rather than loop
    end
  end
  return out
end

return redis.error_reply('catalog.lua: unknown action ' .. tostring(action))
