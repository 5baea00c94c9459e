-- Shared helpers, prepended to every throttling script (otp_service.limits.throttle.PRELUDE).
-- Times are milliseconds since the epoch (the caller's clock, passed in ARGV).

-- Sliding-log window in a sorted set (score = time of the hit).
-- Returns the number of hits still inside the window and the oldest hit's time.
local function window_state(key, now, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local oldest = now
  if count > 0 then
    oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
  end
  return count, oldest
end

local function window_add(key, now, window, member)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end

-- Count one request against a rate: 0 when admitted (and recorded), else ms until a slot frees.
-- Refused requests are not recorded, so a client that backs off as told gets through.
local function throttle(key, now, limit, window, member)
  local count, oldest = window_state(key, now, window)
  if count >= limit then
    return math.max(1, oldest + window - now)
  end
  window_add(key, now, window, member)
  return 0
end
