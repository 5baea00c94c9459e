-- Take the events due for another attempt: each is leased (moved `lease` ms ahead) so that no
-- other sender takes it meanwhile, and comes back by itself if this sender dies before it answers.
-- KEYS[1] retry schedule (zset)   ARGV[1] now (ms)   ARGV[2] lease (ms)   ARGV[3] at most this many
-- Returns {member, its due time, …}.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), due[i])
end
return due
