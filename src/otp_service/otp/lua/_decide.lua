-- The send decision (CONTRACT §2-§6), written once: send.lua runs it and then writes;
-- limits.lua (GET /api/v1/admin/limits) and captcha_needed.lua run it read-only (`no-writes`), so
-- the look-up's answer is the next send's, its wait included. After limits/lua/_prelude.lua and
-- _code.lua. A check that passes writes nothing; with `tidy` (send.lua only) the logs it reads
-- drop what has left their windows.
--
-- The decision's keys, KEYS[1..15] of every script that runs it (otp/store.py, DecisionKeys).
-- A key the question does not concern is RedisKeys.unused, which nothing writes: it reads empty.
--   1 client send log (zset)        2 subnet send log (zset, kept for the guard's window too)
--   3 subnet conversion (hash, _prelude.lua)   4 subnet blocked by the reputation guard (PX)
--   5 client blocked by the reputation guard (PX)   6 sending-paused flag
--   7 remembered source: this (mailbox, subnet) verified a code before (PX)
--   8 the mailbox's cooldown (string: until when, ms; PX)   9 the mailbox's daily log (zset)
--   10, 11 the same two for this remembered source (mailbox, subnet): its own budget
--   12 recipient domain's daily log   13 channel global daily log
--   14 the exact address's code (hash, _code.lua)
--   15 the exact address was reported "not me" (string, PX OTP_NOT_ME_HOURS; otp/lua/report.lua)
-- Its arguments, ARGV[8..18] after throttle_args (otp/store.py, DecisionArgs):
--   8 the recipient domain's limit per 24 h (0: not counted, a shared mail provider)
--   9 guard: min sends   10 guard: min verified/sent   11 guard: limit   12 guard: window (ms)
--   13 daily limit per mailbox   14 global daily limit   15 of it, the sends other than remembered
--   sources' (the rest is their reserve)   16 a sending_paused answer's wait (ms)
--   17 adaptive captcha: the share of the global cap from which a send needs a token (0: off)
--   18 the captcha: 0 no provider configured, 1 configured and this send has no token, 2 this
--   send carried a valid token
local function decision_keys()
  return {
    client = KEYS[1], subnet = KEYS[2], conversion = KEYS[3], subnet_blocked = KEYS[4],
    client_blocked = KEYS[5], paused = KEYS[6], remembered = KEYS[7], cooldown = KEYS[8], daily = KEYS[9],
    remembered_cooldown = KEYS[10], remembered_daily = KEYS[11], domain = KEYS[12], global = KEYS[13],
    code = KEYS[14], reported = KEYS[15],
  }
end

local DOMAIN_LIMIT = tonumber(ARGV[8])
local GUARD_MIN_SENDS, GUARD_MIN_RATIO = tonumber(ARGV[9]), tonumber(ARGV[10])
local GUARD_LIMIT, GUARD_WINDOW = tonumber(ARGV[11]), tonumber(ARGV[12])
local DAILY_LIMIT, GLOBAL_LIMIT, GLOBAL_STRANGERS = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local PAUSED_WAIT, CAPTCHA_SHARE, CAPTCHA = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])

-- A log's hits in the window; with `tidy`, what has left the window is dropped first (and what
-- is left is the count).
local function counted(key, window, tidy)
  if not tidy then return log_count(key, NOW, window) end
  log_tidy(key, NOW, window)
  return redis.call('ZCARD', key)
end

local function over(key, window, limit, tidy)
  return log_over(key, NOW, window, limit, counted(key, window, tidy))
end

-- The low-conversion guard's predicate: the subnet's codes are rarely verified. Also returns
-- its figures (accepted sends and verified codes over 24 h).
local function guard_slows(conversion_key, tidy)
  local sent, verified
  if tidy then sent, verified = conversion(conversion_key, NOW)
  else sent, verified = conversion_read(conversion_key, NOW) end
  return sent >= GUARD_MIN_SENDS and verified < GUARD_MIN_RATIO * sent, sent, verified
end

-- Who is asking for the address: a remembered source (CONTRACT §6) has its own cooldown and
-- daily cap, which no request from anywhere else can use up. {remembered, cooldown key, daily key}
local function asker(k)
  if redis.call('EXISTS', k.remembered) == 1 then
    return {remembered = true, cooldown = k.remembered_cooldown, daily = k.remembered_daily}
  end
  return {remembered = false, cooldown = k.cooldown, daily = k.daily}
end

-- A send that passes every check but is emailed nothing (CONTRACT §4): the address was reported
-- "not me" in the last OTP_NOT_ME_HOURS and the asker is not one of its remembered sources. It is
-- answered and counted as any accepted send, so that nothing tells it from one. `who` is asker(k).
local function withheld(k, who)
  return not who.remembered and redis.call('EXISTS', k.reported) == 1
end

-- OTP_CAPTCHA_MODE=adaptive: a send without a token needs one while the service is under attack
-- (the global cap used past its share, or the client's subnet slowed by the guard).
local function needs_captcha(k)
  if CAPTCHA_SHARE <= 0 then return false end
  if log_count(k.global, NOW, DAY) >= GLOBAL_LIMIT * CAPTCHA_SHARE then return true end
  return (guard_slows(k.conversion, false))
end

-- What holds back a source that is not remembered (a reputation block, a paused provider): with
-- a captcha provider, a person passes with a valid token, and is asked for one without it.
-- Returns nil when the send passes, else the refusal and its wait.
local function held_back(refusal, wait)
  if CAPTCHA == 2 then return nil, 0 end
  if CAPTCHA == 1 then return 'captcha_required', 0 end
  return refusal, wait
end

-- The source's checks, in order: the client's and subnet's rates, the reputation guard's block
-- of the client or its subnet (a remembered source passes it), the low-conversion guard (the
-- subnet's whole log in the guard's window against its rate). Returns nil when they pass, else
-- the refusal, its wait (ms) and which check refused ('rate', 'blocked' or 'guard').
local function decide_source(k, tidy)
  local wait = pair_wait(k.client, k.subnet)
  local blocked = math.max(redis.call('PTTL', k.client_blocked), redis.call('PTTL', k.subnet_blocked))
  local block = nil  -- what the block answers, when it holds this source back
  if blocked > 0 and redis.call('EXISTS', k.remembered) == 0 then block = held_back('rate_limited', blocked) end
  -- Over its rate and blocked: told to come back when both have passed, not when the rate has.
  if wait > 0 then return 'rate_limited', block == 'rate_limited' and math.max(wait, blocked) or wait, 'rate' end
  if block then
    local refusal, refusal_wait = held_back('rate_limited', blocked)
    return refusal, refusal_wait, 'blocked'
  end
  if guard_slows(k.conversion, tidy) then
    local recent = log_count(k.subnet, NOW, GUARD_WINDOW)
    if recent >= GUARD_LIMIT then
      return 'rate_limited', log_wait(k.subnet, NOW, GUARD_WINDOW, recent, GUARD_LIMIT), 'guard'
    end
  end
  return nil, 0, nil
end

-- The address's and the service's checks, in order: paused sending, the cooldown and daily cap
-- (a remembered source's own), the recipient domain's budget, the global cap (its reserve kept
-- for remembered sources). A remembered source passes a pause and the domain's budget. `who` is
-- asker(k). Returns nil when they pass, else the refusal and its wait (ms); with `tidy`, the
-- daily and global logs it read are tidied (the domain's only when it was read).
local function decide_address(k, who, tidy)
  if not who.remembered and redis.call('EXISTS', k.paused) == 1 then
    local refusal, wait = held_back('sending_paused', PAUSED_WAIT)
    if refusal then return refusal, wait end
  end
  local cooldown_until = tonumber(redis.call('GET', who.cooldown) or 0) or 0
  if cooldown_until > NOW then return 'cooldown', cooldown_until - NOW end
  local wait = over(who.daily, DAY, DAILY_LIMIT, tidy)
  if wait > 0 then return 'daily_limit', wait end
  if DOMAIN_LIMIT > 0 and not who.remembered then
    wait = over(k.domain, DAY, DOMAIN_LIMIT, tidy)
    if wait > 0 then return 'domain_limit', wait end
  end
  wait = over(k.global, DAY, who.remembered and GLOBAL_LIMIT or GLOBAL_STRANGERS, tidy)
  if wait > 0 then return 'global_limit', wait end
  return nil, 0
end
