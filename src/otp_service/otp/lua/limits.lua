-- Why a send would be refused now (GET /api/v1/admin/limits, CONTRACT §3): the send decision
-- itself (_decide.lua), run read-only, and the figures it reads. After limits/lua/_prelude.lua,
-- _code.lua and _decide.lua; a no-writes script.
-- KEYS[1..15] the decision's keys (_decide.lua; RedisKeys.unused where the question does not
-- concern them: no client, no address)   KEYS[16] the mailbox's remembered sources (zset:
-- source id -> remembered until, ms)
-- ARGV[1..7] throttle_args (the send rates)   ARGV[8..18] the decision's arguments (_decide.lua)
-- Returns name/value pairs (otp/store.py, LimitsState): the refusal a send without a captcha
-- token would get ('' = accepted) and its wait (ms), then each figure; a wait is 0 where a send
-- would be admitted, else the ms until it is.
local k = decision_keys()
local refusal, wait = nil, 0
local who = asker(k)
if needs_captcha(k) then refusal = 'captcha_required' end
if not refusal then refusal, wait = decide_source(k, false) end
if not refusal then refusal, wait = decide_address(k, who, false) end

local function figure(key, window, limit)
  return log_count(key, NOW, window), over(key, window, limit, false)
end
local client, client_wait = figure(k.client, CLIENT_WINDOW, CLIENT_LIMIT)
local subnet, subnet_wait = figure(k.subnet, SUBNET_WINDOW, SUBNET_LIMIT)
local slows, sent, verified = guard_slows(k.conversion, false)
local daily, daily_wait = figure(k.daily, DAY, DAILY_LIMIT)
local r_daily, r_daily_wait = figure(k.remembered_daily, DAY, DAILY_LIMIT)
local domain, domain_wait = 0, 0
if DOMAIN_LIMIT > 0 then domain, domain_wait = figure(k.domain, DAY, DOMAIN_LIMIT) end
local remembered = redis.call('EXISTS', k.remembered)
local global, global_wait = figure(k.global, DAY, remembered == 1 and GLOBAL_LIMIT or GLOBAL_STRANGERS)
local _, code_expires = code_read(k.code, NOW)

local function left_until(key)
  return math.max(0, (tonumber(redis.call('GET', key) or 0) or 0) - NOW)
end

return {
  'refusal', refusal or '', 'wait', wait,
  'client_sends', client, 'client_wait', client_wait, 'subnet_sends', subnet, 'subnet_wait', subnet_wait,
  'guard_sends', sent, 'guard_verified', verified, 'guard_slows', slows and 1 or 0,
  'guard_recent', log_count(k.subnet, NOW, GUARD_WINDOW),
  'client_blocked', math.max(0, redis.call('PTTL', k.client_blocked)),
  'subnet_blocked', math.max(0, redis.call('PTTL', k.subnet_blocked)), 'paused', redis.call('EXISTS', k.paused),
  'cooldown', left_until(k.cooldown), 'daily', daily, 'daily_wait', daily_wait,
  'remembered_cooldown', left_until(k.remembered_cooldown), 'remembered_daily', r_daily,
  'remembered_daily_wait', r_daily_wait,
  'remembered_sources', redis.call('ZCOUNT', KEYS[16], '(' .. NOW, '+inf'),
  'remembered', remembered, 'domain', domain, 'domain_wait', domain_wait,
  'global_sends', global, 'global_wait', global_wait,
  'code_left', code_expires and code_expires - NOW or 0,
  'reported', math.max(0, redis.call('PTTL', k.reported)),
  'withheld', (not refusal and withheld(k, who)) and 1 or 0,
}
