-- ack.lua: jobs succeeded (their effects are already committed in Postgres).
-- Acknowledges a batch of one worker's jobs in one call.
-- KEYS[1] worker's in-flight set  KEYS[2] done zset  KEYS[3] stats hash
-- KEYS[4] cancel-request set  KEYS[5] unfinished jobs per tenant (hash)
-- KEYS[6 .. 5+A] the acknowledged jobs' hashes, in the order of their triples; then the hashes
-- of the finished jobs to forget, in the order of their ids
-- ARGV: 1 retention ms, 2 stats ttl s, 3 A (jobs acknowledged), then A (id, result json, lease)
--       triples, then the ids of finished jobs to forget (an earlier ack's answer)
-- Fenced: a job is acknowledged only while this worker holds it under that lease (the
-- check of take() in prelude.lua, made for the batch at once); the others are left as they
-- are and returned.
-- Returns {the ids whose lease was lost (their results must be dropped), finished jobs past the
-- retention}.
-- The successful attempt is not appended to the job's history here: every field of its entry
-- (attempts, worker, started_at, finished_at, the state) is on the hash already, and the
-- reader adds it (`record_from_hash`): no JSON on the hottest path.
-- Also forgets finished jobs older than the retention, so Redis does not grow forever (Postgres
-- keeps their records), in two steps, as every key a script touches is declared: each ack
-- answers up to 2 per job acknowledged (and 10 more) of those past it, and the caller's next
-- ack names them (with their hashes in KEYS) to be forgotten, each checked again
-- (forget_listed in prelude.lua). A job with its own retention is scored so that this forgets
-- it after its own (done_score in prelude.lua).
local now, count = now_ms(), tonumber(ARGV[3])
local acked, lost, done, finished, taken = 0, {}, {}, {}, {}
local cancels = redis.call('SCARD', KEYS[4]) > 0
-- The fence's first half for the whole batch in one call (take() in prelude.lua, per job):
-- in this worker's in-flight set; then running under this lease. Those taken leave the set
-- in one call after the loop (an id sent twice is running no more the second time: lost).
local ids, last = {}, 3 + 3 * count
for i = 4, last, 3 do ids[#ids + 1] = ARGV[i] end
local inflight = {}
for _, member in ipairs(call_chunked('SMISMEMBER', KEYS[1], ids)) do
  for j = 1, #member do inflight[#inflight + 1] = member[j] == 1 end
end
for i = 4, last, 3 do
  local n = (i - 1) / 3
  local id, key = ARGV[i], KEYS[5 + n]
  local f = inflight[n] and
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
for who, jobs in pairs(finished) do
  local cut = string.find(who, '\n', 1, true)
  tenants_done_as(KEYS[5], string.sub(who, 1, cut - 1), string.sub(who, cut + 1), jobs)
end
if acked > 0 then
  redis.call('HINCRBY', KEYS[3], 'succeeded', acked)
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
end
local retention = tonumber(ARGV[1])
local forget, forget_keys = {}, {}
for i = last + 1, #ARGV do
  forget[#forget + 1] = ARGV[i]
  forget_keys[#forget_keys + 1] = KEYS[5 + count + #forget]
end
forget_listed(KEYS[2], forget, forget_keys, retention)
local old = redis.call('ZRANGE', KEYS[2], '-inf', now - retention, 'BYSCORE', 'LIMIT', 0,
  2 * acked + 10)
return {lost, old}
