-- A send that carries an Idempotency-Key, before anything else (after limits/lua/_prelude.lua
-- and _idempotency.lua).
-- KEYS[1] client log (zset)  KEYS[2] subnet log (zset)  KEYS[3] the key's record
-- ARGV[1..7] throttle_args  ARGV[8] body fingerprint  ARGV[9] claim lease (ms)
-- Returns {'rate_limited', wait_ms} | {'new'} (claimed: the caller goes on to send.lua, which
-- counts the rates and writes the answer) | {'reused'} | {'pending'} (a request with this key is
-- still being answered) | {'replay', status, value, send_id}.
-- A repeated request counts against the client's and subnet's rates like any other.
local wait = pair_wait(KEYS[1], KEYS[2])
if wait > 0 then return {'rate_limited', wait} end

local state = idempotency_state(KEYS[3], ARGV[8])
if not state then
  redis.call('HSET', KEYS[3], 'f', ARGV[8], 's', 'pending')
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[9]))
  return {'new'}
end
pair_add(KEYS[1], KEYS[2])
return state
