-- ack.lua: jobs succeeded (their effects are already committed in Postgres).
-- Acknowledges a batch of one worker's jobs in one call.
-- KEYS[1] worker's in-flight set  KEYS[2] done zset  KEYS[3] stats hash
-- KEYS[4] cancel-request set  KEYS[5] unfinished jobs per tenant (hash)
-- ARGV: 1 retention ms, 2 job key prefix, 3 stats ttl s, 4 worker id,
--       then (id, result json, lease) triples
-- Fenced: a job is acknowledged only while this worker holds it under that lease (the
-- check of take() in prelude.lua, made for the batch at once); the others are left as they
-- are and returned.
-- Returns the ids whose lease was lost (their results must be dropped).
-- The successful attempt is not appended to the job's history here: every field of its entry
-- (attempts, worker, started_at, finished_at, the state) is on the hash already, and the
-- reader adds it (`record_from_hash`): no JSON on the hottest path.
-- Also forgets up to 2 finished jobs per ack older than the retention,
-- so Redis does not grow forever (Postgres keeps their records). A job with its own retention
-- is scored so that this forgets it after its own (done_score in prelude.lua).
local now, prefix = now_ms(), ARGV[2]
local acked, lost, done, finished, taken = 0, {}, {}, {}, {}
local cancels = redis.call('SCARD', KEYS[4]) > 0
-- The fence's first half for the whole batch in one call (take() in prelude.lua, per job):
-- in this worker's in-flight set; then running under this lease. Those taken leave the set
-- in one call after the loop (an id sent twice is running no more the second time: lost).
local ids = {}
for i = 5, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local inflight = {}
for _, member in ipairs(call_chunked('SMISMEMBER', KEYS[1], ids)) do
  for j = 1, #member do inflight[#inflight + 1] = member[j] == 1 end
end
for i = 5, #ARGV, 3 do
  local id, key = ARGV[i], prefix .. ARGV[i]
  local f = inflight[(i - 2) / 3] and
    redis.call('HMGET', key, 'state', 'lease', 'tenant', 'priority', 'done_shift') or {}
  if f[1] == 'running' and f[2] == ARGV[i + 2] then
    taken[#taken + 1] = id
    if cancels then redis.call('SREM', KEYS[4], id) end
    redis.call('HSET', key, 'state', 'succeeded', 'finished_at', now, 'result', ARGV[i + 1])
    done[#done + 1] = done_score(key, now, f[5])
    done[#done + 1] = id
    -- The tenants' counts drop once per tenant and priority, after the loop.
    local who = (f[3] or 'default') .. '\n' .. (f[4] or 'normal')
    finished[who] = (finished[who] or 0) + 1
    acked = acked + 1
  else
    lost[#lost + 1] = id
  end
end
call_chunked('SREM', KEYS[1], taken)
call_chunked('ZADD', KEYS[2], done)
for who, count in pairs(finished) do
  local cut = string.find(who, '\n', 1, true)
  tenants_done_as(KEYS[5], string.sub(who, 1, cut - 1), string.sub(who, cut + 1), count)
end
if acked > 0 then
  redis.call('HINCRBY', KEYS[3], 'succeeded', acked)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
end
forget_older(KEYS[2], prefix, tonumber(ARGV[1]), 2 * acked + 10)
return lost
