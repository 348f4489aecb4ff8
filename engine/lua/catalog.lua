-- catalog.lua: a catalog item's stock, the object side of a points redemption (DESIGN.md
-- "Crossing slots"; object.lua, put before this, keeps the entries and answers settle, release,
-- abandon and status). Every key shares the item's tag {cat:<item>}.
-- KEYS[1] entries, KEYS[2] counters, KEYS[3] pending (object.lua): counters "sold" (units reserved or
--         delivered, never above the stock they were reserved under) and "held:<member>" (units
--         the member holds, pending or delivered: the per-member limit is checked here, before
--         a unit is taken, so a member over their limit never holds stock, not even for a moment)
-- ARGV[1] reserve   ARGV[2] entry key "<member>/<operation id>"  ARGV[3] now ms
--         ARGV[4] stock (-1: unlimited)  ARGV[5] the member steps (packed by the caller)
--         ARGV[6] member  ARGV[7] per-member limit (0: none)
--         returns {1, sold} reserved | {0, state, reason} an entry under this key already |
--                 {2, reason, sold} refused (out_of_stock | limit_reached), nothing written |
--                 {3} the step is stale (a sweep has looked at its time already): nothing written

local generic = object_action()
if generic then return generic end

if ARGV[1] == 'reserve' then
  local key, member = ARGV[2], ARGV[6]
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(tonumber(ARGV[3])) then return {3} end
  local limit = tonumber(ARGV[7])
  local held_field = 'held:' .. member
  if limit > 0 and (tonumber(redis.call('HGET', COUNTERS, held_field)) or 0) >= limit then
    return {2, 'limit_reached', 0}
  end
  local sold = tonumber(redis.call('HGET', COUNTERS, 'sold')) or 0
  local stock = tonumber(ARGV[4])
  if stock >= 0 and sold >= stock then return {2, 'out_of_stock', sold} end
  take('sold', 1)
  if limit > 0 then take(held_field, 1) end
  entry_open(key, tonumber(ARGV[3]), ARGV[5])
  return {1, sold + 1}
end

return redis.error_reply('catalog.lua: unknown action ' .. tostring(ARGV[1]))
