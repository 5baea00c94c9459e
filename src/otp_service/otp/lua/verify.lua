-- One verify attempt.
-- KEYS[1] IP throttle (zset)   KEYS[2] code (hash: h = code hash, n = wrong attempts)
-- ARGV[1] now (ms)  ARGV[2] IP limit  ARGV[3] IP window (ms)  ARGV[4] unique member
-- ARGV[5] candidate code hash  ARGV[6] max wrong attempts
-- Returns {status, n}: approved | expired | rate_limited (n = wait ms)
-- | invalid (n = attempts remaining) | max_attempts.
-- Wrong attempts only HINCRBY, which leaves the key's TTL untouched: never extends a code.
local wait = throttle(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if wait > 0 then return {'rate_limited', wait} end

local stored = redis.call('HGET', KEYS[2], 'h')
if not stored then return {'expired', 0} end

-- Constant-time comparison: the time taken does not depend on where the hashes differ.
local candidate = ARGV[5]
local diff = 0
if #stored ~= #candidate then diff = 1 end
for i = 1, math.min(#stored, #candidate) do
  diff = bit.bor(diff, bit.bxor(string.byte(stored, i), string.byte(candidate, i)))
end
if diff == 0 then
  redis.call('DEL', KEYS[2])
  return {'approved', 0}
end

local wrong = redis.call('HINCRBY', KEYS[2], 'n', 1)
local max = tonumber(ARGV[6])
if wrong >= max then
  redis.call('DEL', KEYS[2])
  return {'max_attempts', 0}
end
return {'invalid', max - wrong}
