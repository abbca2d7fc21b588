-- dead.lua: act on dead letters. ARGV[2] = 'retry' or 'purge'.
-- KEYS[1] dead zset  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- KEYS[5] unfinished jobs per tenant (hash): a retried job counts again
-- ARGV: 1 job key prefix, 2 action, 3.. ids
-- retry: back to the front of its queue with a fresh attempt budget (history kept).
-- purge: the job is forgotten by Redis (its Postgres record stays).
-- Returns how many ids were dead letters.
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    n = n + 1
    local key = ARGV[1] .. id
    if ARGV[2] == 'retry' and redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'attempts', 0)
      redis.call('HDEL', key, 'finished_at', 'dead_reason')
      requeue(key, id, KEYS[2], KEYS[3], KEYS[4])
      local f = redis.call('HMGET', key, 'tenant', 'priority')
      tenants_queued_as(KEYS[5], f[1], f[2], 1)
    else
      redis.call('DEL', key)
    end
  end
end
return n
