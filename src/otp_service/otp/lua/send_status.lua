-- Moves one send's status forward (GET /api/v1/auth/otp/sends/{send_id}, CONTRACT §3): the
-- worker's outcome, a provider's event matched to the send.
-- KEYS[1] the send's status (hash: s = status, t = updated ms; send.lua writes it at acceptance)
-- KEYS[2] the provider's message id of the email (string: the send's id; RedisKeys.unused when
-- none), so that the provider's events find the send
-- ARGV[1] the new status   ARGV[2] now (ms)   ARGV[3] the send's id ('' without KEYS[2])
-- Returns 1 when the status moved, else 0. It never moves back (a `delayed` arriving after
-- `delivered`, a `sent` after a webhook already said more), a final status never moves, and a
-- record that expired is not written again (it keeps the TTL send.lua gave it).
local RANK = {queued = 0, sent = 1, delayed = 2, delivered = 3, undeliverable = 4, failed = 4, superseded = 4}
local FINAL = 4
local current = redis.call('HGET', KEYS[1], 's')
if not current then return 0 end
local from, to = RANK[current] or 0, RANK[ARGV[1]]
if current == ARGV[1] or from >= FINAL or to < from then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[1], 't', ARGV[2])
if ARGV[3] ~= '' then  -- lives as long as the status it leads to
  redis.call('SET', KEYS[2], ARGV[3], 'PX', math.max(1, redis.call('PTTL', KEYS[1])))
end
return 1
