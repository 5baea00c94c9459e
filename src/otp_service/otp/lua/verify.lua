-- One verify attempt (after limits/lua/_prelude.lua and _code.lua).
-- KEYS[1] client log (zset)  KEYS[2] subnet log (zset)
-- KEYS[3] code (hash, _code.lua)  KEYS[4] subnet conversion (hash)
-- ARGV[1..7] throttle_args  ARGV[8] candidate code hash  ARGV[9] max wrong attempts
-- KEYS[5] remembered source: this (mailbox, client subnet) (string, PX)   ARGV[10] how long a
-- source that verifies is remembered (ms; 0: not remembered)
-- KEYS[6] the address's remembered sources (zset: source id -> remembered until, ms), which the
-- admin API counts   ARGV[11] this source's id
-- KEYS[7] a test recipient's wrong guesses, across every address its fixed code serves (string,
-- PX; RedisKeys.unused for any other address)   ARGV[12] how long they count (ms: the code's
-- lifetime from the first; 0 for any other address). A fixed code is the same for all of a
-- `*@domain`'s addresses, so its guesses are counted together: at most max wrong attempts per
-- code's lifetime, whichever addresses and clients guess (CONTRACT §3).
-- A code a remembered source requested (r = 1) counts wrong attempts from elsewhere apart (n)
-- from its source's (m): guesses from elsewhere can refuse elsewhere, never burn the code.
-- Returns {status, n}: approved | expired | rate_limited (n = wait ms)
-- | invalid (n = attempts remaining) | max_attempts; approved adds a third field, the id of the
-- send that last emailed the code ('' when none: a code stored before send ids), for otp.verified;
-- invalid and max_attempts add a third, 1 when the wrong code is the one this code replaced,
-- within that one's own lifetime (p, q: _code.lua), else 0: for the admin stats only.
-- Wrong attempts only HINCRBY, which leaves the key's TTL untouched: never extends a code.
local wait = throttle_pair(KEYS[1], KEYS[2])
if wait > 0 then return {'rate_limited', wait} end

local stored = live_code(KEYS[3], NOW)
if not stored then return {'expired', 0} end
local max = tonumber(ARGV[9])
local guesses_for = tonumber(ARGV[12])
if guesses_for > 0 and (tonumber(redis.call('GET', KEYS[7])) or 0) >= max then
  redis.call('DEL', KEYS[3])  -- burnt for its lifetime, under any of its addresses
  return {'expired', 0}
end
local remembered = redis.call('EXISTS', KEYS[5]) == 1
local code = redis.call('HMGET', KEYS[3], 'r', 'n', 'i', 'p', 'q')
local protected = code[1] == '1'  -- a remembered source requested it
local shielded = protected and not remembered  -- this attempt comes from elsewhere
-- Past its count from elsewhere the code answers as a burnt one does (code_expired), so the
-- answers do not tell a remembered user's code from anyone else's.
if shielded and (tonumber(code[2]) or 0) >= max then return {'expired', 0} end

if same_hash(stored, ARGV[8]) then  -- in constant time
  redis.call('DEL', KEYS[3])
  count_conversion(KEYS[4], NOW, 'v')
  local remember = tonumber(ARGV[10])
  if remember > 0 then
    redis.call('SET', KEYS[5], '1', 'PX', remember)
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', NOW)
    redis.call('ZADD', KEYS[6], NOW + remember, ARGV[11])
    redis.call('PEXPIRE', KEYS[6], remember)
  end
  return {'approved', 0, code[3] or ''}
end

local superseded = code[4] and tonumber(code[5]) > NOW and same_hash(code[4], ARGV[8]) and 1 or 0
local wrong = redis.call('HINCRBY', KEYS[3], (protected and remembered) and 'm' or 'n', 1)
if guesses_for > 0 then
  local shared = redis.call('INCR', KEYS[7])
  if shared == 1 then redis.call('PEXPIRE', KEYS[7], guesses_for) end
  wrong = math.max(wrong, shared)
end
if wrong >= max then
  if not shielded then redis.call('DEL', KEYS[3]) end
  return {'max_attempts', 0, superseded}
end
return {'invalid', max - wrong, superseded}
