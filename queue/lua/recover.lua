-- recover.lua: re-queue the jobs of workers whose lease expired (on Redis' clock).
-- KEYS[1] workers zset (worker -> last heartbeat ms)  KEYS[2] pending:high  KEYS[3] pending
-- KEYS[4] dead zset  KEYS[5] wake list  KEYS[6] unfinished jobs per tenant (hash)
-- KEYS[7] cancel-request set  KEYS[8] done zset
-- ARGV: 1 queue key tag ('{p:q}'), 2 lease ms, 3 max workers per call
-- A crash counts as an attempt (the claim counted it): a job that kills its
-- worker every time reaches the dead letters after max_attempts.
-- A job whose cancellation was asked for is not run again: it ends `cancelled` (into the done
-- set, so it expires like a succeeded job) and leaves the cancel-request set.
-- The worker leaves the zset: if it was only frozen, its next heartbeat finds itself gone
-- and it registers afresh, and its stale acks fail the fence (holds() in prelude.lua).
-- Returns the ids finished by this call, dead-lettered or cancelled (their records go to
-- Postgres).
local tag, now = ARGV[1], now_ms()
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'BYSCORE',
  'LIMIT', 0, tonumber(ARGV[3]))
local finished = {}
for _, w in ipairs(gone) do
  local inflight = inflight_key(tag, w)
  for _, id in ipairs(redis.call('SMEMBERS', inflight)) do
    local key = tag .. ':job:' .. id
    local f = redis.call('HMGET', key, 'state', 'worker', 'attempts', 'max_attempts',
      'started_at')
    if f[1] == 'running' and f[2] == w then
      local err = 'worker ' .. w .. ' stopped heartbeating during attempt ' .. f[3]
      push_history(key, attempt_entry(f[3], w, f[5], now, 'worker_lost', err))
      if redis.call('SREM', KEYS[7], id) == 1 then
        finish_cancelled(key, id, KEYS[8], KEYS[6], now, 'cancelled on request (' .. err .. ')')
        finished[#finished + 1] = id
      elseif tonumber(f[3]) >= tonumber(f[4]) then
        finish_dead(key, id, KEYS[4], KEYS[6], now, 'worker_lost', err)
        finished[#finished + 1] = id
      else
        redis.call('HSET', key, 'error', err)
        requeue(key, id, KEYS[2], KEYS[3], KEYS[5])
      end
    end
  end
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[1], w)
end
return finished
