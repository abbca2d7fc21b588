-- fail.lua: an attempt ended without success; schedule its retry or finish the job.
-- KEYS[1] job hash  KEYS[2] worker's in-flight set  KEYS[3] scheduled zset
-- KEYS[4] dead zset KEYS[5] stats hash  KEYS[6] wake list  KEYS[7] cancel-request set
-- KEYS[8] unfinished jobs per tenant (hash)  KEYS[9] done zset
-- ARGV: 1 id, 2 error, 3 retry after ms (-1: final), 4 final state ('dead' or
--       'cancelled'), 5 dead reason, 6 stats ttl s, 7 lease
-- Fenced like ack.lua: returns -1 and changes nothing unless this worker holds the job
-- under that lease; 1 when recorded.
-- Appends the attempt to the job's history (last 20 kept).
local id = ARGV[1]
local f = redis.call('HMGET', KEYS[1], 'state', 'lease', 'attempts', 'worker', 'started_at',
  'history')
if not take(KEYS[2], id, f[1], f[2], ARGV[7]) then return -1 end
redis.call('SREM', KEYS[7], id)
local now, retry_in = now_ms(), tonumber(ARGV[3])
local outcome = 'retrying'
if retry_in < 0 then outcome = ARGV[4] end
local history = history_with(f[6], attempt_entry(f[3], f[4], f[5], now, outcome, ARGV[2]))
redis.call('HSET', KEYS[1], 'error', ARGV[2], 'history', history)
if retry_in >= 0 then
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'run_at', now + retry_in)
  redis.call('ZADD', KEYS[3], now + retry_in, id)
  redis.call('HINCRBY', KEYS[5], 'retried', 1)
  redis.call('LPUSH', KEYS[6], '1')
elseif ARGV[4] == 'cancelled' then
  finish_cancelled(KEYS[1], id, KEYS[9], KEYS[8], now)
  redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
else
  finish_dead(KEYS[1], id, KEYS[4], KEYS[8], now, ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
end
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
return 1
