-- Accepted path: a new address every request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
request = function()
  return post("/api/v1/auth/otp/send", string.format('{"email":"bench-%s@example.org"}', next_id()))
end
