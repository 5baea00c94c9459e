-- An address's code, shared by send.lua, verify.lua and the read-only scripts. The code is a hash: h = the code's keyed hash, x = when it
-- expires (ms, the caller's clock, like every other time the scripts decide on), n = wrong
-- attempts, m = wrong attempts from its remembered source, s = the sealed job that carried it
-- (kept when it may be emailed again), r = '1' when a remembered source requested it, i = the id
-- of the send that last emailed it (CONTRACT §3: superseded when a newer code replaces it; named
-- in otp.verified), p and q = the hash of the live code this one replaced and when that one
-- would have expired (ms), so that a verify tells a superseded code from a wrong one. The key's
-- own TTL only cleans up after x.

-- The live code's hash and expiry, or nil. Writes nothing.
local function code_read(key, now)
  local code = redis.call('HMGET', key, 'h', 'x')
  if not code[1] or tonumber(code[2]) <= now then return nil end
  return code[1], tonumber(code[2])
end

-- As code_read; an expired code is deleted (the caller's clock may run ahead of Redis's TTL).
local function live_code(key, now)
  local hash, expires = code_read(key, now)
  if not hash then redis.call('DEL', key) end
  return hash, expires
end

-- Whether two hashes are equal, in constant time: the time taken does not depend on where they
-- differ. Sums of squared differences rather than Redis's `bit` library, which the embedded
-- default's Lua lacks: plain arithmetic, no branch on the bytes, 0 only when every byte is equal.
local function same_hash(stored, candidate)
  local diff = 0
  if #stored ~= #candidate then diff = 1 end
  for i = 1, math.min(#stored, #candidate) do
    local d = string.byte(stored, i) - string.byte(candidate, i)
    diff = diff + d * d
  end
  return diff == 0
end
