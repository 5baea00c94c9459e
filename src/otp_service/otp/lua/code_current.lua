-- Whether a hash is still the address's live code: the worker's superseded check (after _code.lua;
-- reads only).
-- KEYS[1] the address's code (hash)   ARGV[1] now (ms)   ARGV[2] the job's code hash
-- Returns 1 when it is the live code, else 0.
local hash = code_read(KEYS[1], tonumber(ARGV[1]))
if hash and same_hash(hash, ARGV[2]) then return 1 end
return 0
