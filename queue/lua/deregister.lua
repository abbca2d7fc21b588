-- deregister.lua: a stopping worker leaves the queue, handing back everything it still holds,
-- in one script: no claim can land between reading and deleting its in-flight set (and
-- claim.lua refuses an unregistered worker afterwards).
-- KEYS[1] workers zset  KEYS[2] worker's in-flight set  KEYS[3] pending:high  KEYS[4] pending
-- KEYS[5] wake list  KEYS[6 ..] the hashes of the listed jobs, in the order of their ids
-- ARGV: 1 worker id, 2 why (kept in the history of each job handed back), 3.. the members of
--       the in-flight set as the caller read it just before
-- Handed-back jobs keep their attempt counted (they did start; one a claim took and had not
-- started yet goes back as it was). Returns how many, or -1 and
-- changes nothing when the set holds a job not listed (a claim landed after the caller read
-- it: the caller reads it again).
local listed = {}
for i = 3, #ARGV do listed[ARGV[i]] = KEYS[3 + i] end
local members = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(members) do
  if not listed[id] then return -1 end
end
local now, n = now_ms(), 0
for _, id in ipairs(members) do
  local key = listed[id]
  local state = redis.call('HGET', key, 'state')
  if state == 'running' then
    local f = redis.call('HMGET', key, 'attempts', 'started_at')
    push_history(key, attempt_entry(f[1], ARGV[1], f[2], now, 'released', ARGV[2]))
    requeue(key, id, KEYS[3], KEYS[4], KEYS[5])
    n = n + 1
  elseif claimed_not_started(state) then
    -- Taken by a claim's first step, never started: back to its queue, nothing counted.
    requeue(key, id, KEYS[3], KEYS[4], KEYS[5])
    n = n + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return n
