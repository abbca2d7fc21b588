-- held.lua: which of these attempts still hold their jobs (the fence of ack.lua, asked
-- before a finished attempt's record is written to Postgres, so a stale attempt writes
-- no record and queues no callback).
-- KEYS: (job hash, in-flight set of the attempt's worker) pairs
-- ARGV: (id, lease) pairs, in the same order
-- Returns 1 or 0 per pair.
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = holds(KEYS[i], KEYS[i + 1], ARGV[i], ARGV[i + 1]) and 1 or 0
end
return out
