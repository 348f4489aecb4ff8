#!lua flags=no-writes
-- servercheck.lua: whether this connection's user may run each command, asked at start-up.
-- A command a script calls is checked against the user that called the script, so this asks
-- the same question the scripts will, as that user, with no admin rights and writing nothing.
-- KEYS none
-- ARGV pairs: ARGV[2i-1] command name ("HSETEX"), ARGV[2i] its subcommand ("STREAM" of XINFO
--   STREAM) or "" for none
-- returns one integer a pair: 1 allowed, 0 denied by ACL, -1 unknown to the server (too old,
--   or renamed away)
local out = {}
for i = 1, #ARGV, 2 do
  local ok, allowed
  if ARGV[i + 1] == '' then ok, allowed = pcall(redis.acl_check_cmd, ARGV[i])
  else ok, allowed = pcall(redis.acl_check_cmd, ARGV[i], ARGV[i + 1]) end
  if not ok then out[#out + 1] = -1 elseif allowed then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
