-- OTP_CAPTCHA_MODE=adaptive: whether a send without a captcha token must show the widget, because
-- the service is under attack (after limits/lua/_prelude.lua). CONTRACT §6.
-- KEYS[1] channel global daily (zset)   KEYS[2] the client's subnet's conversion (hash)
-- ARGV[1..7] throttle_args   ARGV[8] the global daily limit   ARGV[9] the share of it from which
-- every send needs a token   ARGV[10] guard: min sends   ARGV[11] guard: min verified/sent
-- Returns 1 when a token is needed (the cap that far used, or the subnet slowed by the
-- low-conversion guard), else 0. Writes nothing but the expiry of what has left its window.
if window_count(KEYS[1], NOW, 86400000) >= tonumber(ARGV[8]) * tonumber(ARGV[9]) then return 1 end
local sent, verified = conversion(KEYS[2], NOW)
if sent >= tonumber(ARGV[10]) and verified < tonumber(ARGV[11]) * sent then return 1 end
return 0
