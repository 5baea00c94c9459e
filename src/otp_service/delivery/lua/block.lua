-- The reputation guard blocks a client or a subnet (CONTRACT §6): the block the send decision
-- reads (otp/lua/_decide.lua) and its entry in the index GET /api/v1/admin/blocks lists, at once.
-- KEYS[1] the block (string, PX: RedisKeys.client_blocked or source_blocked)
-- KEYS[2] the index (hash: source CIDR -> the block's entry, delivery/reputation.py's Block)
-- ARGV[1] the source (CIDR)   ARGV[2] the entry (JSON)   ARGV[3] how long (ms)
-- Returns 1 when it blocked, 0 when the source was blocked already (nothing changes: one block,
-- one log line, one audit entry).
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
