-- stats.lua: depth of one queue from its queue-level keys, read at one moment; the caller reads
-- what they lead to (the workers' in-flight sets, the oldest pending jobs' hashes, the minute
-- counters) in a second step, as every key a script touches is declared.
-- KEYS[1] pending:high KEYS[2] pending KEYS[3] scheduled KEYS[4] dead KEYS[5] workers
-- KEYS[6] parked (pending jobs waiting for their tenant's concurrency limit; counted pending)
-- Returns {pending, scheduled, dead, now (ms, Redis' clock), the oldest pending id of each
-- list ('' when empty: high's, then normal's), then the workers' ids}.
-- Cost is O(workers), never O(queue length).
local pending = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
  + redis.call('ZCARD', KEYS[6])
local out = {pending, redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4]), now_ms(),
  redis.call('LINDEX', KEYS[1], -1) or '', redis.call('LINDEX', KEYS[2], -1) or ''}
for _, w in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do out[#out + 1] = w end
return out
