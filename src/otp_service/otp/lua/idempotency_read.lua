-- Polled while another request with the same Idempotency-Key is being answered (after
-- _idempotency.lua): {'none'} once its claim was given up, else the record's state.
-- KEYS[1] the key's record  ARGV[1] body fingerprint
return idempotency_state(KEYS[1], ARGV[1]) or {'none'}
