-- A send's status (GET /api/v1/auth/otp/sends/{send_id}, CONTRACT §3), shared by send_status.lua
-- (the worker's outcome, a provider's event) and send.lua (a newer send supersedes the code).
-- The status is a hash: s = status, t = updated ms; send.lua writes it at acceptance.
local SEND_RANK = {queued = 0, sent = 1, delayed = 2, delivered = 3, undeliverable = 4, failed = 4, superseded = 4}
local SEND_FINAL = 4

-- Moves the status at `key` to `status` (at `now`, ms): whether it moved. It never moves back (a
-- `delayed` arriving after `delivered`, a `sent` after a webhook already said more), a final
-- status never moves, and a record that expired is not written again (it keeps its TTL).
local function move_status(key, status, now)
  local current = redis.call('HGET', key, 's')
  if not current then return false end
  local from, to = SEND_RANK[current] or 0, SEND_RANK[status]
  if current == status or from >= SEND_FINAL or to < from then return false end
  redis.call('HSET', key, 's', status, 't', now)
  return true
end
