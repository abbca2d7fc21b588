-- recover.lua: re-queue the jobs of workers whose lease expired.
-- KEYS[1] workers zset (worker -> last heartbeat ms)  KEYS[2] pending:high  KEYS[3] pending
-- KEYS[4] dead zset  KEYS[5] wake list  KEYS[6] unfinished jobs per tenant (hash)
-- ARGV: 1 queue key tag ('{p:q}'), 2 now ms, 3 lease ms, 4 max workers per call
-- A crash counts as an attempt (the claim counted it): a job that kills its
-- worker every time reaches the dead letters after max_attempts.
-- Returns the ids dead-lettered by this call (their records go to Postgres).
local tag, now = ARGV[1], tonumber(ARGV[2])
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now - tonumber(ARGV[3]), 'BYSCORE',
  'LIMIT', 0, tonumber(ARGV[4]))
local dead = {}
for _, w in ipairs(gone) do
  local inflight = tag .. ':inflight:' .. w
  for _, id in ipairs(redis.call('SMEMBERS', inflight)) do
    local key = tag .. ':job:' .. id
    if redis.call('HGET', key, 'state') == 'running' then
      local f = redis.call('HMGET', key, 'attempts', 'max_attempts', 'priority', 'started_at',
        'history')
      local err = 'worker ' .. w .. ' stopped heartbeating during attempt ' .. f[1]
      local history = cjson.decode(f[5] or '[]')
      history[#history + 1] = {attempt = tonumber(f[1]), worker = w,
        started_at_ms = tonumber(f[4]), finished_at_ms = now, outcome = 'worker_lost', error = err}
      while #history > 20 do table.remove(history, 1) end
      redis.call('HSET', key, 'history', cjson.encode(history))
      if tonumber(f[1]) >= tonumber(f[2]) then
        redis.call('HSET', key, 'state', 'dead', 'error', err, 'finished_at', now,
          'dead_reason', 'worker_lost')
        redis.call('ZADD', KEYS[4], now, id)
        local tenant = redis.call('HGET', key, 'tenant') or 'default'
        if redis.call('HINCRBY', KEYS[6], tenant, -1) < 0 then redis.call('HSET', KEYS[6], tenant, 0) end
        dead[#dead + 1] = id
      else
        redis.call('HSET', key, 'state', 'pending', 'error', err)
        if f[3] == 'high' then redis.call('RPUSH', KEYS[2], id) else redis.call('RPUSH', KEYS[3], id) end
        redis.call('LPUSH', KEYS[5], '1')
      end
    end
  end
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[1], w)
end
return dead
