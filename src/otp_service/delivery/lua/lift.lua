-- An operator lifts a block (DELETE /api/v1/admin/blocks/{source}): the block, its index entry,
-- and when it was lifted, so that the guard counts only the source's later events (CONTRACT §6).
-- KEYS[1] the block (string)   KEYS[2] the index (hash: source CIDR -> entry)
-- KEYS[3] the lifts (hash: source CIDR -> ms it was lifted)
-- ARGV[1] the source (CIDR)   ARGV[2] now (ms)
-- Returns 1 when the source was blocked (and is no longer), 0 when it was not.
local listed = redis.call('HDEL', KEYS[2], ARGV[1])
local removed = redis.call('DEL', KEYS[1])
if listed == 0 and removed == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
