-- floor.lua: the writes every award makes, and nothing else: the floor `make bench` sets
-- member.lua's server cost against (loadtest/servercost.py). No reads, no checks, no packing;
-- what an award would cost if its rules cost nothing. Absolute us swing 2x between runs on a
-- shared machine, a ratio to this script measured in the same run does not.
-- KEYS[1] profile hash   (xp, pts: the two counters every award moves)
-- KEYS[2] ledger stream  (one entry: k kind, d points delta, b balance after, r reason, e operation id)
-- KEYS[3] feed stream    (one entry: d msgpack effects, e operation id), capped
-- KEYS[4] dedupe hash of the operation's time bucket (field: id digest), expiring as a whole
-- ARGV[1] operation id
-- ARGV[2] dedupe field (10-byte id digest)
-- ARGV[3] dedupe value (11 bytes: fingerprint and feed entry reference, as member.lua stores them)
-- ARGV[4] dedupe bucket expiry, ms since the epoch
-- ARGV[5] xp to add
-- ARGV[6] points to add
-- ARGV[7] ledger reason
-- ARGV[8] ledger horizon, ms since the epoch (older entries are trimmed: MINID ~, whole nodes)
-- ARGV[9] feed length (MAXLEN ~: an approximate cap, as member.lua's)
-- ARGV[10] feed entry body: msgpack effects, packed by the caller
-- ARGV[11] pub/sub channel of the member
-- returns the feed entry id

redis.call('HINCRBY', KEYS[1], 'xp', ARGV[5])
local balance = redis.call('HINCRBY', KEYS[1], 'pts', ARGV[6])
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[8], '*', 'k', 'g', 'd', ARGV[6], 'b', balance, 'r', ARGV[7], 'e', ARGV[1])
local entry_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'd', ARGV[10], 'e', ARGV[1])
-- As member.lua's remember(): the field, then its hash's expiry (one per bucket, not per field).
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[4], ARGV[4])
redis.call('SPUBLISH', ARGV[11], entry_id .. ARGV[10])
return entry_id
