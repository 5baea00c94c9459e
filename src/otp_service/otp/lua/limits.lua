-- Why a send would be refused now (GET /api/v1/admin/limits, CONTRACT §3), after
-- limits/lua/_prelude.lua: what send.lua reads, in the order it decides, recording and expiring
-- nothing (a no-writes script). A key the question does not concern is '-' (empty).
-- KEYS[1] client send log   KEYS[2] subnet send log   KEYS[3] subnet conversion (hash)
-- KEYS[4] subnet blocked by the reputation guard   KEYS[5] sending-paused flag
-- KEYS[6] address cooldown   KEYS[7] address daily log   KEYS[8] remembered sources' cooldown
-- KEYS[9] remembered sources' daily log   KEYS[10] the address's remembered sources (zset: source
-- id, remembered until)   KEYS[11] this (mailbox, subnet) remembered   KEYS[12] recipient
-- domain's daily log   KEYS[13] channel global daily log   KEYS[14] the address's code (hash)
-- ARGV[1..7] throttle_args (the send rates)   ARGV[8] guard: window (ms)   ARGV[9] daily limit
-- per address   ARGV[10] the recipient domain's daily limit (0: exempt)   ARGV[11] the global
-- daily limit
-- Returns integers: client sends in its window, ms until it admits again (0 = admits); the same
-- for the subnet; the guard's sends, verified, and the subnet's sends in the guard's window;
-- blocked ms left; sending paused (0/1); cooldown ms left, daily count, ms until the daily cap
-- frees a slot (0 = under it); the same three for the remembered sources; remembered sources; this source
-- remembered (0/1); the domain's count and ms until it admits again; the global count and ms
-- until it admits again; the live code's ms left (0 = none).
local DAY = 86400000

local function left_until(key)
  return math.max(0, (tonumber(redis.call('GET', key) or 0) or 0) - NOW)
end

local function rate(key, limit, window)
  local n = log_count(key, NOW, window)
  -- (a limit of 0 with nothing logged refuses with no entry to wait for: 0, unknown)
  if n >= limit and n > 0 then return n, log_wait(key, NOW, window, n, limit) end
  return n, 0
end

local client, client_wait = rate(KEYS[1], CLIENT_LIMIT, CLIENT_WINDOW)
local subnet, subnet_wait = rate(KEYS[2], SUBNET_LIMIT, SUBNET_WINDOW)
local sent, verified = conversion_read(KEYS[3], NOW)
local guard_window = tonumber(ARGV[8])
local recent = log_count(KEYS[2], NOW, guard_window)
local blocked = math.max(0, redis.call('PTTL', KEYS[4]))
local paused = redis.call('EXISTS', KEYS[5])

local function daily(key, cooldown_key)
  local n, wait = rate(key, tonumber(ARGV[9]), DAY)
  return left_until(cooldown_key), n, wait
end

local cooldown, day, day_wait = daily(KEYS[7], KEYS[6])
local r_cooldown, r_day, r_day_wait = daily(KEYS[9], KEYS[8])
local sources = redis.call('ZCOUNT', KEYS[10], '(' .. NOW, '+inf')
local remembered = redis.call('EXISTS', KEYS[11])
local domain, domain_wait = 0, 0
if tonumber(ARGV[10]) > 0 then domain, domain_wait = rate(KEYS[12], tonumber(ARGV[10]), DAY) end
local global, global_wait = rate(KEYS[13], tonumber(ARGV[11]), DAY)
local code_left = 0
local expires = redis.call('HGET', KEYS[14], 'x')
if expires then
  code_left = math.max(0, tonumber(expires) - NOW)
else  -- a record written before codes carried their expiry: its key's TTL is its life
  code_left = math.max(0, redis.call('PTTL', KEYS[14]))
end
return {client, client_wait, subnet, subnet_wait, sent, verified, recent, blocked, paused,
  cooldown, day, day_wait, r_cooldown, r_day, r_day_wait, sources, remembered, domain, domain_wait,
  global, global_wait, code_left}
