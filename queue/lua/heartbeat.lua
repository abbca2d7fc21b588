-- heartbeat.lua: renew a worker's lease, only if it is still registered.
-- KEYS[1] workers zset (worker -> last heartbeat ms, Redis time)
-- ARGV: 1 worker id, 2 '1' to register (a fresh id), '0' to renew
-- Returns 1, or 0 when a renewal finds the worker gone: it was presumed dead and its jobs
-- were recovered. It must not come back under that id (its old in-flight set stays gone).
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
  return 1
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now_ms(), ARGV[1])
return 1
