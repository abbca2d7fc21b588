-- fail.lua: an attempt failed; schedule its retry or dead-letter the job.
-- KEYS[1] job hash  KEYS[2] worker's in-flight set  KEYS[3] scheduled zset
-- KEYS[4] dead zset KEYS[5] stats hash  KEYS[6] wake list
-- ARGV: 1 id, 2 now ms, 3 error, 4 retry at ms (-1: dead), 5 dead reason, 6 stats ttl s
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local retry_at = tonumber(ARGV[4])
if retry_at >= 0 then
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'error', ARGV[3], 'run_at', retry_at)
  redis.call('ZADD', KEYS[3], retry_at, ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'retried', 1)
  redis.call('LPUSH', KEYS[6], '1')
else
  redis.call('HSET', KEYS[1], 'state', 'dead', 'error', ARGV[3], 'finished_at', ARGV[2],
    'dead_reason', ARGV[5])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[2]), ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'dead', 1)
end
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
return 1
