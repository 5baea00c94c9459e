-- The floor's one decision: one key written, with a TTL (bench/floor_app.py).
-- KEYS[1] the key   ARGV[1] its TTL (ms)
return redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
