-- recover.lua: re-queue the jobs of workers whose lease expired (on Redis' clock).
-- KEYS[1] workers zset (worker -> last heartbeat ms)  KEYS[2] pending:high  KEYS[3] pending
-- KEYS[4] dead zset  KEYS[5] wake list  KEYS[6] unfinished jobs per tenant (hash)
-- KEYS[7] cancel-request set  KEYS[8] done zset
-- then per worker listed: its in-flight set, then the hashes of its listed jobs, in order
-- ARGV: 1 lease ms, then per worker: its id, the number c of its jobs listed, and their c ids
-- The caller found the workers (heartbeat older than the lease) and read their in-flight sets
-- just before; each is checked again here. A worker that heartbeat since is left alone; one
-- whose set holds a job not listed (a claim landed after the reading) is left for the next
-- call and counted in the answer. A worker past its lease claims nothing more, so its set only
-- shrinks.
-- A crash counts as an attempt (the claim counted it): a job that kills its
-- worker every time reaches the dead letters after max_attempts.
-- A job whose cancellation was asked for is not run again: it ends `cancelled` (into the done
-- set, so it expires like a succeeded job) and leaves the cancel-request set.
-- The worker leaves the zset: if it was only frozen, its next heartbeat finds itself gone
-- and it registers afresh, and its stale acks fail the fence (holds() in prelude.lua).
-- Returns {the ids finished by this call, dead-lettered or cancelled (their records go to
-- Postgres), how many listed workers were left because their set changed}.
local now = now_ms()
local cut = now - tonumber(ARGV[1])
local finished, changed = {}, 0
local k, a = 9, 2
while a <= #ARGV do
  local w, c = ARGV[a], tonumber(ARGV[a + 1])
  local inflight = KEYS[k]
  local listed = {}
  for j = 1, c do listed[ARGV[a + 1 + j]] = KEYS[k + j] end
  local beat = redis.call('ZSCORE', KEYS[1], w)
  local members = {}
  if beat and tonumber(beat) <= cut then
    members = redis.call('SMEMBERS', inflight)
    for _, id in ipairs(members) do
      if not listed[id] then
        members = nil
        changed = changed + 1
        break
      end
    end
  else
    members = nil
  end
  if members then
    for _, id in ipairs(members) do
      local key = listed[id]
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
      elseif claimed_not_started(f[1]) then
        -- Taken by a claim's first step, never started: back to its queue, nothing counted.
        requeue(key, id, KEYS[2], KEYS[3], KEYS[5])
      end
    end
    redis.call('DEL', inflight)
    redis.call('ZREM', KEYS[1], w)
  end
  k, a = k + 1 + c, a + 2 + c
end
return {finished, changed}
