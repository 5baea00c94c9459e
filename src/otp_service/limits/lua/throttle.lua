-- Per-client-IP throttle alone (requests whose address was refused before any other check).
-- KEYS[1] throttle sorted set
-- ARGV[1] now (ms)  ARGV[2] limit  ARGV[3] window (ms)  ARGV[4] unique member
-- Returns: 0 admitted, or the ms to wait.
return throttle(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
