-- fail.lua: an attempt ended without success; schedule its retry or finish the job.
-- KEYS[1] job hash  KEYS[2] worker's in-flight set  KEYS[3] scheduled zset
-- KEYS[4] dead zset KEYS[5] stats hash  KEYS[6] wake list  KEYS[7] cancel-request set
-- KEYS[8] unfinished jobs per tenant (hash)
-- ARGV: 1 id, 2 now ms, 3 error, 4 retry at ms (-1: final), 5 final state ('dead' or
--       'cancelled'), 6 dead reason, 7 stats ttl s
-- Appends the attempt to the job's history (last 20 kept).
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[7], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now, retry_at = tonumber(ARGV[2]), tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'attempts', 'worker', 'started_at', 'history')
local history = cjson.decode(f[4] or '[]')
local outcome = 'retrying'
if retry_at < 0 then outcome = ARGV[5] end
history[#history + 1] = {attempt = tonumber(f[1]), worker = f[2], started_at_ms = tonumber(f[3]),
  finished_at_ms = now, outcome = outcome, error = ARGV[3]}
while #history > 20 do table.remove(history, 1) end
redis.call('HSET', KEYS[1], 'history', cjson.encode(history), 'error', ARGV[3])
if retry_at >= 0 then
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'run_at', retry_at)
  redis.call('ZADD', KEYS[3], retry_at, ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'retried', 1)
  redis.call('LPUSH', KEYS[6], '1')
elseif ARGV[5] == 'cancelled' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', now)
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
else
  redis.call('HSET', KEYS[1], 'state', 'dead', 'finished_at', now, 'dead_reason', ARGV[6])
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
end
if retry_at < 0 then
  local tenant = redis.call('HGET', KEYS[1], 'tenant') or 'default'
  if redis.call('HINCRBY', KEYS[8], tenant, -1) < 0 then redis.call('HSET', KEYS[8], tenant, 0) end
end
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7]))
return 1
