-- stats.lua: depth and recent outcomes of one queue, from its own keys.
-- KEYS[1] pending:high KEYS[2] pending KEYS[3] scheduled KEYS[4] dead KEYS[5] workers
-- KEYS[6] parked (pending jobs waiting for their tenant's concurrency limit; counted pending)
-- ARGV: 1 queue key tag, 2 job key prefix, 3 (unused), 4 window minutes
-- Returns {pending, scheduled, running, dead, workers, oldest_pending_age_ms or -1,
--          succeeded, failed, retried, dead_lettered} (the last four over the window).
-- Cost is O(workers + window), never O(queue length).
local now = now_ms()
local pending = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
  + redis.call('ZCARD', KEYS[6])
local running = 0
local workers = redis.call('ZRANGE', KEYS[5], 0, -1)
for _, w in ipairs(workers) do
  running = running + redis.call('SCARD', inflight_key(ARGV[1], w))
end
local oldest = -1
for _, list in ipairs({KEYS[1], KEYS[2]}) do
  local id = redis.call('LINDEX', list, -1)
  if id then
    local at = tonumber(redis.call('HGET', ARGV[2] .. id, 'enqueued_at') or now)
    local age = now - at
    if age > oldest then oldest = age end
  end
end
local minute = math.floor(now / 60000)
local sums = {0, 0, 0, 0}
for m = minute - tonumber(ARGV[4]) + 1, minute do
  local v = redis.call('HMGET', ARGV[1] .. ':stats:' .. m, 'succeeded', 'failed', 'retried', 'dead')
  for i = 1, 4 do sums[i] = sums[i] + tonumber(v[i] or 0) end
end
return {pending, redis.call('ZCARD', KEYS[3]), running, redis.call('ZCARD', KEYS[4]),
  #workers, oldest, sums[1], sums[2], sums[3], sums[4]}
