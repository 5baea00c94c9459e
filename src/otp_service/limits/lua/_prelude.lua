-- Shared helpers, prepended to every throttling script (otp_service.limits.throttle.PRELUDE).
-- Times are milliseconds since the epoch (the caller's clock, passed in ARGV).

-- Every rate and cap is a log in a sorted set (score = time of the hit). Reads never write, so
-- the same rules run in read-only scripts (limits.lua, captcha_needed.lua: `no-writes`);
-- `log_tidy` drops what has left a log's window when a hit is recorded.
local DAY = 86400000

-- Hits in (now - window, now].
local function log_count(key, now, window)
  return redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
end

-- The ms until `count` hits in the window fall below `limit` (at least 1): the answer's wait.
-- With nothing logged under a limit of 0, the whole window.
local function log_wait(key, now, window, count, limit)
  if count == 0 then return window end
  local nth = redis.call('ZRANGEBYSCORE', key, '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT',
    count - limit, 1)
  return math.max(1, tonumber(nth[2]) + window - now)
end

-- 0 when the log admits one more hit under `limit`, else the ms to wait (`count`: the hits in the
-- window, when the caller has counted them).
local function log_over(key, now, window, limit, count)
  count = count or log_count(key, now, window)
  if count >= limit then return log_wait(key, now, window, count, limit) end
  return 0
end

local function log_tidy(key, now, keep)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)
end

-- Record a hit in a log that was just tidied.
local function log_push(key, now, keep, member)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, keep)
end

-- Record a hit, dropping what is older than `keep` (at least the window any rule reads it over).
local function log_add(key, now, keep, member)
  log_tidy(key, now, keep)
  log_push(key, now, keep, member)
end

-- ARGV[1..7] of every throttling script (limits/throttle.py, throttle_args): now, unique member,
-- the client's limit and window, the subnet's limit and window, and how long the subnet's log is
-- kept (the low-conversion guard reads it over a longer window than its rate's).
local NOW, MEMBER = tonumber(ARGV[1]), ARGV[2]
local CLIENT_LIMIT, CLIENT_WINDOW = tonumber(ARGV[3]), tonumber(ARGV[4])
local SUBNET_LIMIT, SUBNET_WINDOW, SUBNET_KEEP = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

-- The client's and its subnet's rates, decided together: 0 when both admit, else the ms until
-- every refusing one frees a slot. Records nothing (pair_add does, once the request is admitted):
-- refused requests are not recorded, so a caller that backs off as told gets through.
local function pair_wait(client_key, subnet_key)
  return math.max(log_over(client_key, NOW, CLIENT_WINDOW, CLIENT_LIMIT),
    log_over(subnet_key, NOW, SUBNET_WINDOW, SUBNET_LIMIT))
end

local function pair_add(client_key, subnet_key)
  log_add(client_key, NOW, CLIENT_WINDOW, MEMBER)
  log_add(subnet_key, NOW, SUBNET_KEEP, MEMBER)
end

-- Count one request against both rates: 0 when admitted (and recorded), else ms to wait.
local function throttle_pair(client_key, subnet_key)
  local wait = pair_wait(client_key, subnet_key)
  if wait == 0 then pair_add(client_key, subnet_key) end
  return wait
end

-- A subnet's conversion over a rolling 24 h in hourly steps: a hash of s<hour> (accepted sends)
-- and v<hour> (verified codes). conversion_read returns (sends, verified) over the last 24 hours
-- and the names of older fields, writing nothing (the read-only scripts read it too);
-- conversion drops those fields as it reads.
local HOUR = 3600000
local function conversion_read(key, now)
  local current = math.floor(now / HOUR)
  local fields = redis.call('HGETALL', key)
  local sent, verified, stale = 0, 0, {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if tonumber(string.sub(name, 2)) > current - 24 then
      if string.byte(name, 1) == 115 then  -- 's'
        sent = sent + tonumber(fields[i + 1])
      else
        verified = verified + tonumber(fields[i + 1])
      end
    else
      stale[#stale + 1] = name
    end
  end
  return sent, verified, stale
end

local function conversion(key, now)
  local sent, verified, stale = conversion_read(key, now)
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return sent, verified
end

-- Count one accepted send ('s') or verified code ('v') for a subnet.
local function count_conversion(key, now, kind)
  redis.call('HINCRBY', key, kind .. math.floor(now / HOUR), 1)
  redis.call('PEXPIRE', key, 25 * HOUR)
end
