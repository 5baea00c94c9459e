-- Moves one send's status forward (after _send_status.lua, which holds the rule): the worker's
-- outcome, a provider's event matched to the send.
-- KEYS[1] the send's status (_send_status.lua)
-- KEYS[2] the provider's message id of the email (string: the send's id; RedisKeys.unused when
-- none), so that the provider's events find the send
-- ARGV[1] the new status   ARGV[2] now (ms)   ARGV[3] the send's id ('' without KEYS[2])
-- ARGV[4] optional, with KEYS[2]: the provider call's trace context (a W3C traceparent, tracing
-- on), kept in the status hash as c for the provider's events to link to (webhooks/service.py)
-- Returns 1 when the status moved, else 0 (move_status).
if not move_status(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
if ARGV[3] ~= '' then  -- lives as long as the status it leads to
  redis.call('SET', KEYS[2], ARGV[3], 'PX', math.max(1, redis.call('PTTL', KEYS[1])))
  if ARGV[4] then redis.call('HSET', KEYS[1], 'c', ARGV[4]) end
end
return 1
