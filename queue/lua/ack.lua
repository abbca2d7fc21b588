-- ack.lua: a job succeeded (its effects are already committed in Postgres).
-- KEYS[1] job hash  KEYS[2] worker's in-flight set  KEYS[3] done zset  KEYS[4] stats hash
-- KEYS[5] cancel-request set
-- ARGV: 1 id, 2 now ms, 3 result json, 4 retention cutoff ms, 5 job key prefix,
--       6 stats ttl s
-- Also forgets up to 20 finished jobs older than the retention cutoff, so
-- Redis does not grow forever (Postgres keeps their records).
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
local ok = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local now = tonumber(ARGV[2])
  local f = redis.call('HMGET', KEYS[1], 'attempts', 'worker', 'started_at', 'history')
  local history = cjson.decode(f[4] or '[]')
  history[#history + 1] = {attempt = tonumber(f[1]), worker = f[2],
    started_at_ms = tonumber(f[3]), finished_at_ms = now, outcome = 'succeeded'}
  while #history > 20 do table.remove(history, 1) end
  redis.call('HSET', KEYS[1], 'state', 'succeeded', 'finished_at', now, 'result', ARGV[3],
    'history', cjson.encode(history))
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  ok = 1
end
redis.call('HINCRBY', KEYS[4], 'succeeded', 1)
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
local old = redis.call('ZRANGE', KEYS[3], '-inf', tonumber(ARGV[4]), 'BYSCORE', 'LIMIT', 0, 20)
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[5] .. id)
  redis.call('ZREM', KEYS[3], id)
end
return ok
