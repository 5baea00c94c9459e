-- An event delivered (or dropped): it leaves the group's pending list and the stream, together.
-- KEYS[1] events stream   ARGV[1] consumer group   ARGV[2] entry id
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
