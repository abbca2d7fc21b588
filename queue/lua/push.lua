-- push.lua: enqueue one job, atomically.
-- KEYS[1] job hash   KEYS[2] pending list (of its priority)   KEYS[3] scheduled zset
-- KEYS[4] wake list  KEYS[5] idempotency key (used only when ARGV[8] == '1')
-- KEYS[6] unfinished jobs per tenant (hash)
-- ARGV: 1 id, 2 args json, 3 kind, 4 max_attempts, 5 (unused), 6 delay ms (0: now),
--       7 idempotency ttl s, 8 has idempotency key, 9 priority, 10 wake cap,
--       11 request id of the submission ('' when none), 12 tenant,
--       13 completion callback URL ('' when none), 14 the tenant's cap of unfinished jobs in
--       this queue (0: none), 15 its cap of unfinished high-priority jobs here (0: none)
-- Returns {id, created}: the existing job's id and 0 when the key was seen; {'', -load} when
-- the tenant is at its cap, {'high', -load} at its high-priority cap (nothing is written).
local cap = tonumber(ARGV[14])
if cap > 0 then
  local load = tonumber(redis.call('HGET', KEYS[6], ARGV[12]) or '0')
  if load >= cap then return {'', -load} end
end
local high = ARGV[9] == 'high'
local high_cap = tonumber(ARGV[15] or '0')
if high and high_cap > 0 then
  local load = tonumber(redis.call('HGET', KEYS[6], ARGV[12] .. ':high') or '0')
  if load >= high_cap then return {'high', -load} end
end
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {existing, 0} end
  redis.call('SET', KEYS[5], ARGV[1], 'EX', tonumber(ARGV[7]))
end
local now = now_ms()
local run_at = 0
local state = 'pending'
if tonumber(ARGV[6]) > 0 then
  state = 'scheduled'
  run_at = now + tonumber(ARGV[6])
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'args', ARGV[2], 'kind', ARGV[3],
  'max_attempts', ARGV[4], 'attempts', 0, 'enqueued_at', now, 'state', state,
  'priority', ARGV[9], 'run_at', run_at, 'tenant', ARGV[12])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'request_id', ARGV[11]) end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'callback', ARGV[13]) end
if state == 'scheduled' then
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
else
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
-- One wake token per push: an idle worker blocked on the wake list claims at
-- once (or, for a scheduled job, recomputes how long to sleep).
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[10]) - 1)
redis.call('HINCRBY', KEYS[6], ARGV[12], 1)
if high then redis.call('HINCRBY', KEYS[6], ARGV[12] .. ':high', 1) end
return {ARGV[1], 1}
