-- A "not me" report (CONTRACT §4, delivery/not_me.py): from now, for OTP_NOT_ME_HOURS, the exact
-- address receives codes only from its remembered sources (_decide.lua, withheld). A report
-- while one holds starts the hours again.
-- KEYS[1] the address's reported flag (RedisKeys.reported: string, PX)
-- ARGV[1] how long it holds (ms)
-- Returns {'ok'}.
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
return {'ok'}
