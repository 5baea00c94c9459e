-- One decision per send request, all or nothing (after limits/lua/_prelude.lua).
-- KEYS[1] client throttle (zset)      KEYS[2] address cooldown (string, PX)
-- KEYS[3] address daily (zset)    KEYS[4] channel global daily (zset)
-- KEYS[5] code (hash: h = code hash, n = wrong attempts)
-- KEYS[6] delivery stream         KEYS[7] sending-paused flag (reputation guard)
-- ARGV[1] now (ms)            ARGV[2] IP limit          ARGV[3] IP window (ms)
-- ARGV[4] unique member       ARGV[5] cooldown (ms)     ARGV[6] daily limit per address
-- ARGV[7] global daily limit  ARGV[8] code hash         ARGV[9] code TTL (ms)
-- ARGV[10] sealed job payload  ARGV[11] ms a sending_paused answer asks the client to wait
-- Returns {status, wait_ms_or_job_id}: status is ok | rate_limited | cooldown | daily_limit
-- | global_limit | sending_paused. Only 'ok' writes anything beyond the IP throttle hit.
local DAY = 86400000
local now = tonumber(ARGV[1])
local member = ARGV[4]

local wait = throttle(KEYS[1], now, tonumber(ARGV[2]), tonumber(ARGV[3]), member)
if wait > 0 then return {'rate_limited', wait} end

if redis.call('EXISTS', KEYS[7]) == 1 then return {'sending_paused', tonumber(ARGV[11])} end

local cooldown_left = redis.call('PTTL', KEYS[2])
if cooldown_left > 0 then return {'cooldown', cooldown_left} end

if window_count(KEYS[3], now, DAY) >= tonumber(ARGV[6]) then
  return {'daily_limit', window_wait(KEYS[3], now, DAY)}
end

if window_count(KEYS[4], now, DAY) >= tonumber(ARGV[7]) then
  return {'global_limit', window_wait(KEYS[4], now, DAY)}
end

local cooldown = tonumber(ARGV[5])
if cooldown > 0 then redis.call('SET', KEYS[2], '1', 'PX', cooldown) end
window_add(KEYS[3], now, DAY, member)
window_add(KEYS[4], now, DAY, member)
-- A new code replaces the previous one, attempts start again (the hash holds h and n only).
redis.call('HSET', KEYS[5], 'h', ARGV[8], 'n', 0)
redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[9]))
local id = redis.call('XADD', KEYS[6], '*', 'p', ARGV[10], 'x', tostring(now + tonumber(ARGV[9])))
return {'ok', id}
