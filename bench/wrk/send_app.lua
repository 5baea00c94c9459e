-- Accepted path through an application's endpoint (CONTRACT §8): a new address every request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
request = function()
  return post("/api/v1/apps/bench/auth/otp/send", string.format('{"email":"bench-app-%s@example.org"}', next_id()))
end
