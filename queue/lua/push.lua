-- push.lua: enqueue one job, atomically.
-- KEYS[1] job hash   KEYS[2] pending list (of its priority)   KEYS[3] scheduled zset
-- KEYS[4] wake list  KEYS[5] idempotency key (used only when ARGV[8] == '1')
-- KEYS[6] unfinished jobs per tenant (hash)
-- ARGV: 1 id, 2 args json, 3 kind, 4 max_attempts, 5 (unused), 6 delay ms (0: now),
--       7 idempotency ttl s, 8 has idempotency key, 9 priority, 10 wake cap,
--       11 request id of the submission ('' when none), 12 tenant,
--       13 completion callback URL ('' when none), 14 the tenant's cap of unfinished jobs in
--       this queue (0: none), 15 its cap of unfinished high-priority jobs here (0: none),
--       16 expires at (Unix ms on Redis' clock; 0: never), 17 its own hard time limit in ms
--       (0: the task's), 18 its own soft time limit in ms (0: the task's), 19 the task to
--       notify when it finishes, as JSON ('' when none)
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
-- A job id given by the caller (a Celery task id) names one job for good.
if redis.call('EXISTS', KEYS[1]) == 1 then return {ARGV[1], 0} end
local now = now_ms()
local run_at = 0
local state = 'pending'
if tonumber(ARGV[6]) > 0 then
  state = 'scheduled'
  run_at = now + tonumber(ARGV[6])
end
new_job(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], now, state, ARGV[9], run_at, ARGV[12])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'request_id', ARGV[11]) end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'callback', ARGV[13]) end
if ARGV[16] ~= '0' then redis.call('HSET', KEYS[1], 'expires_at', ARGV[16]) end
if ARGV[17] ~= '0' then redis.call('HSET', KEYS[1], 'hard_ms', ARGV[17]) end
if ARGV[18] ~= '0' then redis.call('HSET', KEYS[1], 'soft_ms', ARGV[18]) end
if ARGV[19] ~= '' then redis.call('HSET', KEYS[1], 'notify', ARGV[19]) end
if state == 'scheduled' then
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
else
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
-- One wake token per push: an idle worker blocked on the wake list claims at
-- once (or, for a scheduled job, recomputes how long to sleep).
queued(KEYS[4], tonumber(ARGV[10]), KEYS[6], ARGV[12], 1)
if high then redis.call('HINCRBY', KEYS[6], ARGV[12] .. ':high', 1) end
return {ARGV[1], 1}
