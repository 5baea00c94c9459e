-- A send's Idempotency-Key record, shared by idempotency.lua, idempotency_read.lua and send.lua.
-- The record is a hash: f = the body's fingerprint, s = 'pending' while its request is being
-- answered, then the first answer's status, v = that answer's value, i = an accepted send's
-- send_id (CONTRACT §3: a replay carries the same one).

-- The record as request `fp` sees it: nil (none), {'reused'} (another body), {'pending'}, or
-- {'replay', status, value, send_id ('' unless accepted)}.
local function idempotency_state(key, fp)
  local record = redis.call('HMGET', key, 'f', 's', 'v', 'i')
  if not record[1] then return nil end
  if record[1] ~= fp then return {'reused'} end
  if record[2] == 'pending' then return {'pending'} end
  return {'replay', record[2], record[3], record[4] or ''}
end

-- Give up request `fp`'s claim (still pending, no answer kept), so that a retry decides afresh.
local function idempotency_release(key, fp)
  local record = redis.call('HMGET', key, 'f', 's')
  if record[1] == fp and record[2] == 'pending' then redis.call('DEL', key) end
end
