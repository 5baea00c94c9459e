-- One decision per send request, all or nothing (after limits/lua/_prelude.lua, _code.lua,
-- _idempotency.lua, _decide.lua, which holds the checks, and _send_status.lua; this script orders
-- them with the Idempotency-Key and writes).
-- KEYS[1..15] the decision's keys (_decide.lua)   KEYS[16] delivery stream
-- KEYS[17] Idempotency-Key record (idempotency.lua claimed it; RedisKeys.unused without one)
-- KEYS[18] subnet slowed (string, PX: the guard's log line is written once per window)
-- KEYS[19] the send's status (_send_status.lua), RedisKeys.send(ARGV[28]): an earlier send's
-- status key is the same with that send's id in place of ARGV[28]
-- ARGV[1..7] throttle_args   ARGV[8..18] the decision's arguments (_decide.lua)
-- ARGV[19] cooldown (ms)   ARGV[20] the new code's hash   ARGV[21] code TTL (ms)
-- ARGV[22] the sealed job (delivery/jobs.py: it holds the exact address and the code, so it is
-- also what is kept beside the hash when the code may be emailed again)
-- ARGV[23] '1' under OTP_RESEND_STRATEGY=reuse   ARGV[24] reuse: the least time a live code must
-- have left to be emailed again (ms)   ARGV[25] the body's fingerprint ('' = no Idempotency-Key)
-- ARGV[26] how long an Idempotency-Key's answer is kept (ms)
-- ARGV[27] '1' for a test recipient (CONTRACT §3): the code is stored as any other, and nothing
-- is queued and no daily, domain or global counter moves
-- ARGV[28] the send's id (CONTRACT §3)   ARGV[29] how long its status is kept (ms: the code's
-- lifetime plus an hour)
-- ARGV[30] optional, always last: the request's trace context (a W3C traceparent), given only
-- when tracing is on (otp_service/tracing)
-- A job on the stream (delivery/queue.py reads it): p = the sealed job, x = when its code
-- expires (ms); when a live code is emailed again, also c = the sealed job kept with that code
-- (the code to send, to the address it was sealed for) and l = the seconds it has left (the
-- email states them); r = '1' when a remembered source requested it, v = '1' when the request
-- carried a valid captcha token (either passes a provider pause, CONTRACT §6); t = ARGV[30]
-- when it is given, else no field.
-- Returns {status, wait ms or job id, 1 when the guard first slowed this subnet in its window
-- else 0}: status is ok | rate_limited | cooldown | daily_limit | domain_limit | global_limit |
-- sending_paused; for an accepted send withheld after a "not me" report (_decide.lua, withheld),
-- {'ok', 'withheld', 0}; or {'replay', status, value, send_id} / {'idempotency_key_reused', 0, 0} for a key
-- another request answered.
-- Beyond the client's and subnet's rate logs (and a key's answer), only 'ok' writes anything.
-- The code record names the send that last emailed it (i, _code.lua): verify.lua answers it, and
-- a newer send that replaces a live code moves that send to superseded (CONTRACT §3).
local K = decision_keys()
local STREAM, IDEM_KEY, SLOWED = KEYS[16], KEYS[17], KEYS[18]
local COOLDOWN, CODE_HASH, CODE_TTL = tonumber(ARGV[19]), ARGV[20], tonumber(ARGV[21])
local JOB, REUSE, REUSE_MIN_LEFT = ARGV[22], ARGV[23] == '1', tonumber(ARGV[24])
local FINGERPRINT, IDEM_KEEP, TEST = ARGV[25], tonumber(ARGV[26]), ARGV[27] == '1'
local IDEM = FINGERPRINT ~= ''
local SEND_STATUS, SEND_ID, STATUS_KEEP = KEYS[19], ARGV[28], tonumber(ARGV[29])
local TRACE = ARGV[30]

-- An accepted send's first status: every accepted send has one, a withheld "not me" send and a
-- suppressed address (which the worker finds) as any other, so that nothing tells them apart.
local function accepted(status)
  redis.call('HSET', SEND_STATUS, 's', status, 't', NOW)
  redis.call('PEXPIRE', SEND_STATUS, STATUS_KEEP)
end

-- The answer, kept under the request's Idempotency-Key when it is the address's or the code's
-- (ok, cooldown, daily_limit); otherwise (the client's rate, a 503) the claim is given up, so a
-- retry is decided afresh.
local function answer(status, value, slowed)
  if IDEM then
    if status == 'ok' or status == 'cooldown' or status == 'daily_limit' then
      redis.call('HSET', IDEM_KEY, 'f', FINGERPRINT, 's', status, 'v', value)
      if status == 'ok' then redis.call('HSET', IDEM_KEY, 'i', SEND_ID) end
      redis.call('PEXPIRE', IDEM_KEY, IDEM_KEEP)
    else
      idempotency_release(IDEM_KEY, FINGERPRINT)
    end
  end
  return {status, value, slowed or 0}
end

local refusal, wait, check = decide_source(K, true)
if refusal then
  local slowed = check == 'guard' and redis.call('SET', SLOWED, '1', 'PX', GUARD_WINDOW, 'NX')
  return answer(refusal, wait, slowed and 1 or 0)
end
pair_add(K.client, K.subnet)

if IDEM then  -- a request with the same key was answered meanwhile: its answer is ours
  local state = idempotency_state(IDEM_KEY, FINGERPRINT)
  if state and state[1] == 'reused' then return {'idempotency_key_reused', 0, 0} end
  if state and state[1] == 'replay' then return state end
end

local who = asker(K)
refusal, wait = decide_address(K, who, true)
if refusal then return answer(refusal, wait) end

local remembered = who.remembered
if COOLDOWN > 0 then redis.call('SET', who.cooldown, NOW + COOLDOWN, 'PX', COOLDOWN) end
if TEST then  -- the fixed code is the live code; nothing is queued or counted
  redis.call('DEL', K.code)
  redis.call('HSET', K.code, 'h', CODE_HASH, 'n', 0, 'x', NOW + CODE_TTL, 'i', SEND_ID)
  redis.call('PEXPIRE', K.code, CODE_TTL)
  accepted('delivered')  -- CONTRACT §3: a test recipient shows delivered
  return answer('ok', 'test')
end
local flags = {}  -- what passes a provider pause (the worker reads it)
if remembered then flags = {'r', '1'} elseif CAPTCHA == 2 then flags = {'v', '1'} end
if TRACE then flags[#flags + 1] = 't'; flags[#flags + 1] = TRACE end  -- carried to the worker
log_push(who.daily, NOW, DAY, MEMBER)  -- both tidied by the decision
log_push(K.global, NOW, DAY, MEMBER)
if DOMAIN_LIMIT > 0 then  -- counted for a remembered source too, which the decision did not read
  if remembered then log_add(K.domain, NOW, DAY, MEMBER) else log_push(K.domain, NOW, DAY, MEMBER) end
end
count_conversion(K.conversion, NOW, 's')
-- Reported "not me", asked from elsewhere: every counter above moved as for any accepted send (a
-- later send meets the same cooldown and caps, the asker's subnet the same conversion), but no
-- code is stored or replaced and nothing is queued.
-- Its status reads `sent` at once, as an ordinary send's does once the worker hands it over.
if withheld(K, who) then
  accepted('sent')
  return answer('ok', 'withheld')
end
accepted('queued')
-- The live code is emailed again, sealed as stored, its lifetime and wrong attempts as they
-- are: under reuse, while it has enough time left; and whatever the strategy, when a remembered
-- source requested it and this send comes from elsewhere, which may never replace it.
local live, expires = live_code(K.code, NOW)
if live then
  local stored, protected, before = unpack(redis.call('HMGET', K.code, 's', 'r', 'i'))
  local left = expires - NOW
  if stored and ((REUSE and left >= REUSE_MIN_LEFT) or (protected == '1' and not remembered)) then
    local id = redis.call('XADD', STREAM, '*', 'p', JOB, 'x', tostring(expires), 'c', stored,
      'l', tostring(math.floor(left / 1000)), unpack(flags))
    redis.call('HSET', K.code, 'i', SEND_ID)
    return answer('ok', id)
  end
  if before and SEND_ID ~= '' then  -- replaced below: the send that emailed it is superseded
    move_status(SEND_STATUS:sub(1, -#SEND_ID - 1) .. before, 'superseded', NOW)
  end
end
-- A new code replaces the previous one whole (a sealed copy an earlier send kept must not
-- outlive it), attempts start again.
redis.call('DEL', K.code)
redis.call('HSET', K.code, 'h', CODE_HASH, 'n', 0, 'x', NOW + CODE_TTL, 'i', SEND_ID)
-- The replaced code's hash, for as long as it would have lived (p, q: _code.lua): a verify tells
-- it from any other wrong code (the admin stats' superseded); it verifies nothing.
if live then redis.call('HSET', K.code, 'p', live, 'q', expires) end
if REUSE or remembered then redis.call('HSET', K.code, 's', JOB) end
if remembered then redis.call('HSET', K.code, 'r', '1') end
redis.call('PEXPIRE', K.code, CODE_TTL)
local id = redis.call('XADD', STREAM, '*', 'p', JOB, 'x', tostring(NOW + CODE_TTL), unpack(flags))
return answer('ok', id)
