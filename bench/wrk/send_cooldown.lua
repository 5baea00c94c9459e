-- Rejected path: one address, already sent to, hit again and again (429 cooldown).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
request = function()
  return post("/api/v1/auth/otp/send", '{"email":"bench-cooldown@example.org"}')
end
