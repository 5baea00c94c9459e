-- Shared by the scenarios: a per-thread id, a random client IP per request (sent as
-- X-Forwarded-For, believed because the service trusts 127.0.0.1 in the benchmark).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + tid)
  run = tostring(os.time())
end

function random_ip()
  return string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
end

function next_id()
  counter = counter + 1
  return string.format("%s-%d-%d", run, tid, counter)
end

function post(path, body)
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["X-Forwarded-For"] = random_ip()}, body)
end
