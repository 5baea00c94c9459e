-- Give up a claim (idempotency.lua returned 'new') that ended without an answer to keep: the
-- request was refused before the send decision (a refused address, a failed captcha, a dependency
-- down). Only a pending claim with this body's fingerprint is removed.
-- KEYS[1] the key's record  ARGV[1] body fingerprint
local record = redis.call('HMGET', KEYS[1], 'f', 's')
if record[1] == ARGV[1] and record[2] == 'pending' then redis.call('DEL', KEYS[1]) end
return 0
