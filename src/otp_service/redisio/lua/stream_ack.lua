-- Acknowledge a stream entry (a delivery job, an event out): it leaves the group's pending list
-- and the stream, together.
-- KEYS[1] the stream   ARGV[1] consumer group   ARGV[2] entry id
-- Returns the number of entries deleted (0 or 1).
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
