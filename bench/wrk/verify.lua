-- Verify path: a code checked against an address (one script call, answer 400).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
request = function()
  return post("/api/v1/auth/otp/verify", string.format('{"email":"bench-%s@example.org","code":"123456"}', next_id()))
end
