-- deregister.lua: a stopping worker leaves the queue, handing back everything it still holds,
-- in one script: no claim can land between reading and deleting its in-flight set (and
-- claim.lua refuses an unregistered worker afterwards).
-- KEYS[1] workers zset  KEYS[2] worker's in-flight set  KEYS[3] pending:high  KEYS[4] pending
-- KEYS[5] wake list
-- ARGV: 1 job key prefix, 2 worker id, 3 why (kept in the history of each job handed back)
-- Handed-back jobs keep their attempt counted (they did start). Returns how many.
local now, n = now_ms(), 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'state') == 'running' then
    local f = redis.call('HMGET', key, 'attempts', 'started_at')
    push_history(key, attempt_entry(f[1], ARGV[2], f[2], now, 'released', ARGV[3]))
    requeue(key, id, KEYS[3], KEYS[4], KEYS[5])
    n = n + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return n
