-- An address's code, shared by send.lua and verify.lua (after limits/lua/_prelude.lua, for NOW).
-- The code is a hash: h = the code's keyed hash, n = wrong attempts, x = when it expires (ms, the
-- caller's clock, like every other time the scripts decide on), s = the code sealed (only under
-- OTP_RESEND_STRATEGY=reuse). The key's own TTL only cleans up after x.

-- The live code's hash and expiry, or nil (an expired code is deleted).
local function live_code(key)
  local code = redis.call('HMGET', key, 'h', 'x')
  if not code[1] then return nil end
  -- A code stored before x existed expires with its key.
  local expires = tonumber(code[2]) or NOW + redis.call('PTTL', key)
  if expires <= NOW then
    redis.call('DEL', key)
    return nil
  end
  return code[1], expires
end
