-- dead.lua: act on dead letters. ARGV[1] = 'retry' or 'purge'.
-- KEYS[1] dead zset  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- KEYS[5] unfinished jobs per tenant (hash): a retried job counts again
-- KEYS[6 ..] the jobs' hashes, in the order of their ids
-- ARGV: 1 action, 2.. ids
-- retry: back to the front of its queue with a fresh attempt budget (history kept).
-- purge: the job is forgotten by Redis (its Postgres record stays).
-- Returns how many ids were dead letters.
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    n = n + 1
    local key = KEYS[4 + i]
    if ARGV[1] == 'retry' and redis.call('EXISTS', key) == 1 then
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
