-- wheel.lua: a lottery wheel's prizes and budget, the object side of a spin (games/lottery;
-- object.lua, put before this, keeps the entries and answers settle, release, status and due).
-- Every key shares the wheel's tag {lottery:<wheel>}.
-- KEYS[1] entries, KEYS[2] counters, KEYS[3] pending (object.lua): counters "given:<prize>"
--         (units given, pending or delivered, never above the stock released when they were
--         taken) and "spent" (their cost, never above the budget)
-- ARGV[1] spin   ARGV[2] entry key "<member>/<operation id>"  ARGV[3] at ms
--         ARGV[4] the prize drawn  ARGV[5] its cost  ARGV[6] its units released so far (-1: no stock)
--         ARGV[7] the member steps if it is given (packed by the caller)
--         ARGV[8] the fallback prize  ARGV[9] its cost  ARGV[10] the member steps if it is given
--         ARGV[11] the budget (-1: none)
--         returns {1, given (0 the prize drawn | 1 the fallback), spent} |
--                 {0, state, reason} an entry under this key already |
--                 {2, 'budget_spent'} not even the fallback fits the budget: nothing written |
--                 {3} the step is stale (a sweep has looked at its time already): nothing written
-- The drawn prize is given when a unit of it is released and not given, and its cost fits the
-- budget; otherwise the fallback: the odds a member was shown are the odds of the draw.

local generic = object_action()
if generic then return generic end

if ARGV[1] == 'spin' then
  local key, at_ms = ARGV[2], tonumber(ARGV[3])
  local e = entry_get(key)
  if e then return {0, e[1], e[4]} end
  if stale(at_ms) then return {3} end
  local budget = tonumber(ARGV[11])
  local spent = tonumber(redis.call('HGET', COUNTERS, 'spent')) or 0
  local function fits(cost) return budget < 0 or spent + cost <= budget end
  local prize, cost, available = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  local given_field = 'given:' .. prize
  local ok = fits(cost)
  if ok and available >= 0 then
    ok = (tonumber(redis.call('HGET', COUNTERS, given_field)) or 0) < available
  end
  local which, steps = 0, ARGV[7]
  if not ok then
    which, prize, cost, steps = 1, ARGV[8], tonumber(ARGV[9]), ARGV[10]
    given_field = 'given:' .. prize
    if not fits(cost) then return {2, 'budget_spent'} end
  end
  take(given_field, 1)
  if cost > 0 then take('spent', cost) end
  entry_open(key, at_ms, steps)
  return {1, which, spent + cost}
end

return redis.error_reply('wheel.lua: unknown action ' .. tostring(ARGV[1]))
