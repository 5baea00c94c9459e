-- OTP_CAPTCHA_MODE=adaptive: whether a send without a captcha token must show the widget, because
-- the service is under attack (CONTRACT §6). After limits/lua/_prelude.lua, _code.lua and
-- _decide.lua, whose needs_captcha decides; reads only.
-- KEYS[1..15] the decision's keys (_decide.lua)   ARGV[1..7] throttle_args
-- ARGV[8..18] the decision's arguments (_decide.lua; ARGV[17] > 0)
-- Returns 1 when a token is needed, else 0.
if needs_captcha(decision_keys()) then return 1 end
return 0
