-- Service-wide token bucket for provider calls (OTP_SEND_RATE per second, burst of the same).
-- KEYS[1] bucket (hash: t = tokens, ts = last refill, ms)
-- ARGV[1] now (ms)  ARGV[2] rate (tokens per second)  ARGV[3] burst (bucket size)
-- Returns 0 when a token was taken, else the ms until one is available.
-- Over any T seconds at most rate * T + burst tokens leave the bucket.
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
if tokens >= 1 then
  redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
  return 0
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return math.max(1, math.ceil((1 - tokens) * 1000 / rate))
