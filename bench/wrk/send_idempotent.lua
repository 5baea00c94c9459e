-- Accepted path with an Idempotency-Key (a fresh key and address every request): what the
-- key's claim (idempotency.lua, one more Redis call) adds to an accepted send.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
request = function()
  local id = next_id()
  return wrk.format("POST", "/api/v1/auth/otp/send",
    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = random_ip(), ["Idempotency-Key"] = "bench-" .. id},
    string.format('{"email":"bench-%s@example.org"}', id))
end
