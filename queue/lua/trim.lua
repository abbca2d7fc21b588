-- trim.lua: retention of one queue's finished jobs, run periodically by every worker's rescuer
-- (never by push, claim or ack, so the hot paths pay nothing for it).
-- KEYS[1] dead zset  KEYS[2] done zset (succeeded and cancelled jobs by finish time, moved by
-- a job's own retention: done_score in prelude.lua, so a job given its own is forgotten after it)
-- KEYS[3 ..] the hashes of the listed dead letters, then of the listed finished jobs, in order
-- ARGV: 1 dead-letter retention ms (-1: kept for ever), 2 finished-job retention ms (the
--       queue's, as ack.lua applies it), 3 D (dead letters listed), then D ids of dead letters,
--       then ids of finished jobs: the caller's reading of each set's entries past retention
-- Listed entries still older than their retention on Redis' clock leave their set and their
-- job hashes go (Postgres keeps the records); the others stay (forget_listed in prelude.lua).
-- Returns {dead letters removed, finished jobs removed}.
local d = tonumber(ARGV[3])
local function forget(set, retention, from, to)
  if retention < 0 or from > to then return 0 end
  local ids, keys = {}, {}
  for i = from, to do
    ids[#ids + 1] = ARGV[i]
    keys[#keys + 1] = KEYS[i - 1]
  end
  return forget_listed(set, ids, keys, retention)
end
return {forget(KEYS[1], tonumber(ARGV[1]), 4, 3 + d),
  forget(KEYS[2], tonumber(ARGV[2]), 4 + d, #ARGV)}
