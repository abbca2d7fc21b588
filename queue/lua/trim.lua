-- trim.lua: retention of one queue's finished jobs, run periodically by every worker's rescuer
-- (never by push, claim or ack, so the hot paths pay nothing for it).
-- KEYS[1] dead zset  KEYS[2] done zset (succeeded and cancelled jobs by finish time, moved by
-- a job's own retention: done_score in prelude.lua, so a job given its own is forgotten after it)
-- ARGV: 1 job key prefix, 2 dead-letter retention ms (-1: kept for ever), 3 finished-job
--       retention ms (the queue's, as ack.lua applies it), 4 most ids removed per set per call
-- Entries older than their retention on Redis' clock leave their set and their job hashes go
-- (Postgres keeps the records, under its own retention). Bounded: at most ARGV[4] per set.
-- Returns {dead letters removed, finished jobs removed}.
local prefix, limit = ARGV[1], tonumber(ARGV[4])
local function expire(set, retention)
  if retention < 0 then return 0 end
  return forget_older(set, prefix, retention, limit)
end
return {expire(KEYS[1], tonumber(ARGV[2])), expire(KEYS[2], tonumber(ARGV[3]))}
