-- ack.lua: jobs succeeded (their effects are already committed in Postgres).
-- Acknowledges a batch of one worker's jobs in one call.
-- KEYS[1] worker's in-flight set  KEYS[2] done zset  KEYS[3] stats hash
-- KEYS[4] cancel-request set  KEYS[5] unfinished jobs per tenant (hash)
-- ARGV: 1 now ms, 2 retention cutoff ms, 3 job key prefix, 4 stats ttl s, 5 worker id,
--       then (id, result json, attempt, started_at ms) quadruples
-- The history is read back only for jobs past their first attempt.
-- Also forgets up to 2 finished jobs per ack older than the retention cutoff,
-- so Redis does not grow forever (Postgres keeps their records).
local now, prefix = tonumber(ARGV[1]), ARGV[3]
local acked = 0
local worker = ARGV[5]
for i = 6, #ARGV, 4 do
  local id, key, attempt = ARGV[i], prefix .. ARGV[i], tonumber(ARGV[i + 2])
  redis.call('SREM', KEYS[1], id)
  redis.call('SREM', KEYS[4], id)
  if redis.call('EXISTS', key) == 1 then
    local history = {}
    if attempt > 1 then history = cjson.decode(redis.call('HGET', key, 'history') or '[]') end
    history[#history + 1] = {attempt = attempt, worker = worker,
      started_at_ms = tonumber(ARGV[i + 3]), finished_at_ms = now, outcome = 'succeeded'}
    while #history > 20 do table.remove(history, 1) end
    redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'result', ARGV[i + 1],
      'history', cjson.encode(history))
    redis.call('ZADD', KEYS[2], now, id)
    local tenant = redis.call('HGET', key, 'tenant') or 'default'
    if redis.call('HINCRBY', KEYS[5], tenant, -1) < 0 then redis.call('HSET', KEYS[5], tenant, 0) end
    acked = acked + 1
  end
end
local n = (#ARGV - 5) / 4
redis.call('HINCRBY', KEYS[3], 'succeeded', n)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
local old = redis.call('ZRANGE', KEYS[2], '-inf', tonumber(ARGV[2]), 'BYSCORE', 'LIMIT', 0,
  2 * n + 10)
for _, id in ipairs(old) do
  redis.call('DEL', prefix .. id)
  redis.call('ZREM', KEYS[2], id)
end
return acked
