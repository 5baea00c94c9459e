-- An event whose delivery failed leaves the stream for the retry schedule, in one step (nothing
-- is lost between the two, nothing is in both).
-- KEYS[1] events stream   KEYS[2] retry schedule (zset: member = the event, score = when, ms)
-- ARGV[1] consumer group   ARGV[2] stream entry id   ARGV[3] the event   ARGV[4] when to retry
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
