-- lib.lua: helpers every script of ours shares; scripts.py puts this file before each script
-- that asks for it, so they are written once and a script's SHA covers the helpers it runs.

-- Integers leave Lua through string.format: tostring() of a double switches to exponent
-- notation past 1e14, which Redis would then refuse as an integer.
local function int(n) return string.format('%d', n) end

-- A flat HGETALL / XRANGE field list as a table.
local function pairs_of(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end

-- Expire a key at `at_ms` unless it already expires later: an expiry only ever moves later,
-- and is written only then (a read is cheaper than a write the AOF carries).
local function expire_no_sooner(key, at_ms)
  if redis.call('PEXPIRETIME', key) < at_ms then redis.call('PEXPIREAT', key, at_ms) end
end
