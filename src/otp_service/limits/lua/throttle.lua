-- A client's and its subnet's rates alone (requests refused before any decision: a malformed
-- body, a refused address, a failed captcha). After limits/lua/_prelude.lua.
-- KEYS[1] client log (zset)  KEYS[2] subnet log (zset)   ARGV[1..7] throttle_args
-- Returns: 0 admitted, or the ms to wait.
return throttle_pair(KEYS[1], KEYS[2])
