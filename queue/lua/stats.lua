-- stats.lua: depth of one queue, from its own keys.
-- KEYS[1] pending:high KEYS[2] pending KEYS[3] scheduled KEYS[4] dead KEYS[5] workers
-- ARGV: 1 queue key tag, 2 job key prefix, 3 now ms
-- Returns {pending, scheduled, running, dead, workers, oldest_pending_age_ms or -1}.
-- Cost is O(workers), never O(queue length).
local pending = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
local running = 0
local workers = redis.call('ZRANGE', KEYS[5], 0, -1)
for _, w in ipairs(workers) do
  running = running + redis.call('SCARD', ARGV[1] .. ':inflight:' .. w)
end
local oldest = -1
for _, list in ipairs({KEYS[1], KEYS[2]}) do
  local id = redis.call('LINDEX', list, -1)
  if id then
    local at = tonumber(redis.call('HGET', ARGV[2] .. id, 'enqueued_at') or ARGV[3])
    local age = tonumber(ARGV[3]) - at
    if age > oldest then oldest = age end
  end
end
return {pending, redis.call('ZCARD', KEYS[3]), running, redis.call('ZCARD', KEYS[4]),
  #workers, oldest}
