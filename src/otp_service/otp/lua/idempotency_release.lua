-- Give up a claim (idempotency.lua returned 'new') whose request was refused before the send
-- decision: a refused address, a failed captcha, a dependency down (after _idempotency.lua).
-- KEYS[1] the key's record  ARGV[1] body fingerprint
idempotency_release(KEYS[1], ARGV[1])
return 0
