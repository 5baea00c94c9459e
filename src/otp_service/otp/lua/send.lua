-- One decision per send request, all or nothing (after limits/lua/_prelude.lua, _code.lua and
-- _idempotency.lua).
-- KEYS[1] client log (zset)       KEYS[2] subnet log (zset, kept for the guard's window too)
-- KEYS[3] subnet conversion (hash: s<hour> = accepted sends, v<hour> = verified codes)
-- KEYS[4] subnet slowed (string, PX: the guard's log line is written once per window)
-- KEYS[5] sending-paused flag     KEYS[6] address cooldown (string: until when, ms; PX)
-- KEYS[7] address daily (zset)    KEYS[8] channel global daily (zset)
-- KEYS[9] code (hash, _code.lua)   KEYS[10] delivery stream
-- ARGV[1..7] throttle_args        ARGV[8] guard: min sends  ARGV[9] guard: min verified/sent
-- ARGV[10] guard: limit           ARGV[11] guard: window (ms)
-- ARGV[12] cooldown (ms)          ARGV[13] daily limit per address   ARGV[14] global daily limit
-- ARGV[15] code hash              ARGV[16] code TTL (ms)   ARGV[17] sealed job payload
-- ARGV[18] ms a sending_paused answer asks the client to wait
-- ARGV[19] the new code, sealed (stored beside its hash when it may be emailed again)
-- ARGV[20] reuse: the least time a live code must have left to be emailed again (ms)
-- KEYS[11] Idempotency-Key record (idempotency.lua claimed it)   ARGV[21] body fingerprint ('' =
-- no key)   ARGV[22] how long the answer is kept (ms)
-- KEYS[12] recipient domain's daily log (zset)   ARGV[23] its limit per 24 h (0 = a shared mail
-- provider: not counted)
-- KEYS[13] the client's subnet blocked by the reputation guard (string, PX: 24 h)
-- KEYS[14] remembered source: this (mailbox, client subnet) verified a code before (string, PX)
-- KEYS[15] the address's cooldown for its remembered sources   KEYS[16] their daily log (zset)
-- ARGV[24] '1' under OTP_RESEND_STRATEGY=reuse; ARGV[19] (the new code, sealed) is given always:
-- it is kept beside the hash under reuse, and for a code a remembered source requested
-- Returns {status, wait_ms_or_job_id[, 1 when the guard first slowed this subnet in its window]}:
-- status is ok | rate_limited | cooldown | daily_limit | domain_limit | global_limit |
-- sending_paused, or
-- {'replay', status, value} / {'idempotency_key_reused', 0} for a key another request answered.
-- Beyond the client's and subnet's rate logs (and a key's answer), only 'ok' writes anything.
local DAY = 86400000
local IDEM = ARGV[21] ~= ''
local REUSE = ARGV[24] == '1'
-- A remembered source (CONTRACT §6) has its own cooldown and daily cap, which requests from
-- anywhere else cannot use up; its code is protected: a send from elsewhere re-sends it.
local REMEMBERED = redis.call('EXISTS', KEYS[14]) == 1
local COOLDOWN_KEY = REMEMBERED and KEYS[15] or KEYS[6]
local DAILY_KEY = REMEMBERED and KEYS[16] or KEYS[7]

-- The answer, kept under the request's Idempotency-Key when it is the address's or the code's
-- (ok, cooldown, daily_limit); otherwise (the client's rate, a 503) the claim is given up, so a
-- retry is decided afresh.
local function answer(status, value, extra)
  if IDEM then
    if status == 'ok' or status == 'cooldown' or status == 'daily_limit' then
      redis.call('HSET', KEYS[11], 'f', ARGV[21], 's', status, 'v', value)
      redis.call('PEXPIRE', KEYS[11], tonumber(ARGV[22]))
    else
      idempotency_release(KEYS[11], ARGV[21])
    end
  end
  return {status, value, extra}
end

local wait = pair_wait(KEYS[1], KEYS[2])
if wait > 0 then return answer('rate_limited', wait) end

-- A subnet whose sends drew too many bounces and complaints sends nothing for 24 h (CONTRACT §6).
local blocked = redis.call('PTTL', KEYS[13])
if blocked > 0 then return answer('rate_limited', blocked) end

-- The low-conversion guard: a subnet whose codes are rarely verified is slowed to the guard's
-- rate, counting every request of its log in the guard's window.
local sent, verified = conversion(KEYS[3], NOW)
if sent >= tonumber(ARGV[8]) and verified < tonumber(ARGV[9]) * sent then
  local limit, window = tonumber(ARGV[10]), tonumber(ARGV[11])
  local recent = log_count(KEYS[2], NOW, window)
  if recent >= limit then
    local first = redis.call('SET', KEYS[4], '1', 'PX', window, 'NX') and 1 or 0
    return answer('rate_limited', log_wait(KEYS[2], NOW, window, recent, limit), first)
  end
end
pair_add(KEYS[1], KEYS[2])

if IDEM then  -- a request with the same key was answered meanwhile: its answer is ours
  local state = idempotency_state(KEYS[11], ARGV[21])
  if state and state[1] == 'reused' then return {'idempotency_key_reused', 0} end
  if state and state[1] == 'replay' then return state end
end

if redis.call('EXISTS', KEYS[5]) == 1 then return answer('sending_paused', tonumber(ARGV[18])) end

local cooldown_until = tonumber(redis.call('GET', COOLDOWN_KEY) or 0) or 0
if cooldown_until > NOW then return answer('cooldown', cooldown_until - NOW) end

if window_count(DAILY_KEY, NOW, DAY) >= tonumber(ARGV[13]) then
  return answer('daily_limit', window_wait(DAILY_KEY, NOW, DAY))
end

local domain_limit = tonumber(ARGV[23])
if domain_limit > 0 and window_count(KEYS[12], NOW, DAY) >= domain_limit then
  return answer('domain_limit', window_wait(KEYS[12], NOW, DAY))
end

if window_count(KEYS[8], NOW, DAY) >= tonumber(ARGV[14]) then
  return answer('global_limit', window_wait(KEYS[8], NOW, DAY))
end

local cooldown = tonumber(ARGV[12])
if cooldown > 0 then redis.call('SET', COOLDOWN_KEY, NOW + cooldown, 'PX', cooldown) end
window_add(DAILY_KEY, NOW, DAY, MEMBER)
window_add(KEYS[8], NOW, DAY, MEMBER)
if domain_limit > 0 then window_add(KEYS[12], NOW, DAY, MEMBER) end
count_conversion(KEYS[3], NOW, 's')
-- The live code is emailed again, sealed as stored, its lifetime and wrong attempts as they
-- are (the job states the seconds it has left): under reuse, while it has enough time left; and
-- whatever the strategy, when a remembered source requested it and this send comes from
-- elsewhere, which may never replace it.
local live, expires = live_code(KEYS[9])
if live then
  local stored, protected = unpack(redis.call('HMGET', KEYS[9], 's', 'r'))
  local left = expires - NOW
  if stored and ((REUSE and left >= tonumber(ARGV[20])) or (protected == '1' and not REMEMBERED)) then
    local id = redis.call('XADD', KEYS[10], '*', 'p', ARGV[17], 'x', tostring(NOW + left), 'c', stored,
      'l', tostring(math.floor(left / 1000)))
    return answer('ok', id)
  end
end
-- A new code replaces the previous one whole (a sealed copy an earlier send kept must not
-- outlive it), attempts start again.
redis.call('DEL', KEYS[9])
redis.call('HSET', KEYS[9], 'h', ARGV[15], 'n', 0, 'x', NOW + tonumber(ARGV[16]))
if REUSE or REMEMBERED then redis.call('HSET', KEYS[9], 's', ARGV[19]) end
if REMEMBERED then redis.call('HSET', KEYS[9], 'r', '1') end
redis.call('PEXPIRE', KEYS[9], tonumber(ARGV[16]))
local id = redis.call('XADD', KEYS[10], '*', 'p', ARGV[17], 'x', tostring(NOW + tonumber(ARGV[16])))
return answer('ok', id)
