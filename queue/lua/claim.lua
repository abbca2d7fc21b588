-- claim.lua: promote due scheduled jobs, then claim up to n jobs for a worker.
-- KEYS[1] pending:high  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] worker's in-flight set
-- KEYS[5] wake list
-- ARGV: 1 job key prefix ('{p:q}:job:'), 2 n, 3 now ms, 4 worker id, 5 promote limit
-- Returns {next_due_ms or -1, id, args, attempts, max_attempts, enqueued_at, priority,
--          request_id, ...}.
-- Every claimed job is in the worker's in-flight set, marked running, with its
-- attempt counted, before the script returns: nothing is in limbo.
local prefix, n, now, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local due = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local key = prefix .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'scheduled' or st == 'retrying' then
    redis.call('HSET', key, 'state', 'pending')
    if redis.call('HGET', key, 'priority') == 'high' then
      redis.call('RPUSH', KEYS[1], id)
    else
      redis.call('RPUSH', KEYS[2], id)
    end
  end
end
local out = {-1}
local claimed = 0
for _, list in ipairs({KEYS[1], KEYS[2]}) do
  while claimed < n do
    local id = redis.call('RPOP', list)
    if not id then break end
    local key = prefix .. id
    -- Skip ids whose job was cancelled, purged or already finished.
    if redis.call('HGET', key, 'state') == 'pending' then
      local attempts = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'state', 'running', 'started_at', now, 'worker', worker)
      redis.call('SADD', KEYS[4], id)
      local f = redis.call('HMGET', key, 'args', 'max_attempts', 'enqueued_at', 'priority',
        'request_id', 'tenant', 'callback')
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = attempts
      out[#out + 1] = f[2]
      out[#out + 1] = f[3]
      out[#out + 1] = f[4] or 'normal'
      out[#out + 1] = f[5] or ''
      out[#out + 1] = f[6] or 'default'
      out[#out + 1] = f[7] or ''
      claimed = claimed + 1
    end
  end
end
if claimed > 0 then redis.call('LPOP', KEYS[5], claimed) end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = tonumber(nxt[2]) end
return out
