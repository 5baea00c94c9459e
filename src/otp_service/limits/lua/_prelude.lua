-- Shared helpers, prepended to every throttling script (otp_service.limits.throttle.PRELUDE).
-- Times are milliseconds since the epoch (the caller's clock, passed in ARGV).

-- Sliding-log window in a sorted set (score = time of the hit).
-- Returns the number of hits still inside the window (older ones are dropped first).
local function window_count(key, now, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  return redis.call('ZCARD', key)
end

-- The ms until the oldest hit leaves a full window (at least 1); asked only when refusing.
local function window_wait(key, now, window)
  local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  return math.max(1, oldest + window - now)
end

local function window_add(key, now, window, member)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end

-- Count one request against a rate: 0 when admitted (and recorded), else ms until a slot frees.
-- Refused requests are not recorded, so a client that backs off as told gets through.
local function throttle(key, now, limit, window, member)
  if window_count(key, now, window) >= limit then
    return window_wait(key, now, window)
  end
  window_add(key, now, window, member)
  return 0
end
