-- claim_start.lua: the second of a claim's two steps (after claim.lua), with the job hashes of
-- the ids the first step took declared in KEYS. Atomically, for ids still in the worker's
-- in-flight set (an id recovered meanwhile is not, and is skipped): due jobs still scheduled
-- or retrying go back to the claim end of their priority's list (the claimer claims again);
-- parked and popped jobs still pending start, unless they expired (finished as cancelled:
-- their records and callbacks are the caller's to write) or their tenant is at its
-- concurrency limit (parked, still `pending`, out of the pending lists, so it holds no worker
-- slot and blocks no other tenant). Ids not started leave the in-flight set; rate-limit tokens
-- the first step reserved and no job used go back to the bucket.
-- Every started job is in the worker's in-flight set, marked running, with its attempt and
-- its claim number (the lease token that fences its ack) counted before the script returns.
-- (Per job: one HMGET, one HSET; per batch: one SMISMEMBER, one SREM.)
-- KEYS[1] worker's in-flight set  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] workers zset
-- KEYS[5] done zset  KEYS[6] unfinished jobs per tenant (hash)  KEYS[7] rate-limit bucket
-- KEYS[8] running jobs by tenant (zset)  KEYS[9] parked jobs by tenant (zset)
-- KEYS[10 ..] the hashes of the D due, P parked and Q popped ids, then of the checked members'
--   jobs, in order
-- ARGV: 1 worker id, 2 lease ms, 3 tenant concurrency (0: none), 4 tokens reserved (-1: no rate
--       limit), 5 D, 6 P, 7 Q, then the D + P + Q ids, then the running-set members to check
--       (`<tenant>\t<id>`, of the tenants at their limit: claim.lua's answer)
-- Running jobs are members `<tenant>\t<id>` of KEYS[8] (added here; a member whose job no
-- longer runs is dropped when the first step answers it, so no finishing path has to remove
-- it). Parked jobs are members `<tenant>\t<0 high|1 normal>\t<enqueued_at>\t<id>` of KEYS[9]
-- (lex order: by tenant, then priority, then age); a popped job whose tenant has parked jobs
-- is parked behind them.
-- Returns {-2} (and changes nothing) when the worker is not registered or its lease ran out,
-- else {due jobs re-queued, 1 when jobs are parked (0 none), running members dropped, the
-- number E of jobs found
-- expired, their E ids, then for each started job: id, args, attempt, max_attempts,
-- enqueued_at, priority, request_id, tenant, callback, lease, hard_ms, soft_ms, notify,
-- backoff, traceparent}.
local worker, now = ARGV[1], now_ms()
local beat = redis.call('ZSCORE', KEYS[4], worker)
if not beat or tonumber(beat) < now - tonumber(ARGV[2]) then return {-2} end
local limit, reserved = tonumber(ARGV[3]), tonumber(ARGV[4])
local d, p, q = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local FIRST_ID, FIRST_KEY = 8, 10
local ids = {}
for i = 1, d + p + q do ids[i] = ARGV[FIRST_ID + i - 1] end
local held = {}
for _, member in ipairs(call_chunked('SMISMEMBER', KEYS[1], ids)) do
  for j = 1, #member do held[#held + 1] = member[j] == 1 end
end
-- The checked running members, with their jobs' hashes.
local checked = {}
for i = FIRST_ID + d + p + q, #ARGV do checked[ARGV[i]] = KEYS[i + FIRST_KEY - FIRST_ID] end
local RUNNING, PARKED = KEYS[8], KEYS[9]
-- The fields a claim reads of a job, in this order (state first).
local FIELDS = {'state', 'expires_at', 'attempts', 'lease', 'args', 'max_attempts', 'enqueued_at',
  'priority', 'request_id', 'tenant', 'callback', 'hard_ms', 'soft_ms', 'notify', 'backoff',
  'traceparent'}
local function tenant_range(tenant)
  return '[' .. tenant .. '\t', '(' .. tenant .. '\n'
end
-- Checked members whose job no longer runs (finished, retrying, re-queued, forgotten) leave
-- the running set first: their slots are free.
local freed = 0
for member, key in pairs(checked) do
  if redis.call('HGET', key, 'state') ~= 'running' then
    redis.call('ZREM', RUNNING, member)
    freed = freed + 1
  end
end
-- Whether `tenant` may start one more job (always, without a limit): fewer running members
-- than the limit (members not checked count as running).
local function has_room(tenant)
  if limit <= 0 then return true end
  local lo, hi = tenant_range(tenant)
  return redis.call('ZLEXCOUNT', RUNNING, lo, hi) < limit
end
-- Whether `tenant` has parked jobs (they start before its newer jobs).
local function has_parked(tenant)
  local lo, hi = tenant_range(tenant)
  return redis.call('ZLEXCOUNT', PARKED, lo, hi) > 0
end
local jobs, expired, gone = {}, {}, {}
local claimed, promoted, parked = 0, 0, 0
-- Marks the job `id` (its hash at `key`, its FIELDS in `f`) running for this worker and adds
-- it to the answer.
local function start(id, key, f)
  -- The attempt and the claim number (the lease token) are counted here, in the same
  -- atomic step that marks the job running.
  local attempts = tonumber(f[3] or '0') + 1
  local lease = tonumber(f[4] or '0') + 1
  redis.call('HSET', key, 'state', 'running', 'started_at', now, 'worker', worker,
    'attempts', attempts, 'lease', lease)
  -- Appended in place (no table per job: this runs once per claimed job).
  local j = #jobs
  jobs[j + 1], jobs[j + 2], jobs[j + 3], jobs[j + 4], jobs[j + 5] = id, f[5], attempts, f[6], f[7]
  jobs[j + 6], jobs[j + 7], jobs[j + 8] = f[8] or 'normal', f[9] or '', f[10] or 'default'
  jobs[j + 9], jobs[j + 10], jobs[j + 11], jobs[j + 12] = f[11] or '', lease, f[12] or '0',
    f[13] or '0'
  jobs[j + 13], jobs[j + 14], jobs[j + 15] = f[14] or '', f[15] or '', f[16] or ''
  if limit > 0 then redis.call('ZADD', RUNNING, 0, (f[10] or 'default') .. '\t' .. id) end
  claimed = claimed + 1
end
for i = 1, d + p + q do
  local id, key = ids[i], KEYS[FIRST_KEY + i - 1]
  if held[i] then
    if i <= d then
      -- A due job: back to its priority's list, to be claimed next.
      gone[#gone + 1] = id
      local st = redis.call('HGET', key, 'state')
      if st == 'scheduled' or st == 'retrying' then
        requeue(key, id, KEYS[2], KEYS[3], nil)
        promoted = promoted + 1
      end
    else
      local f = redis.call('HMGET', key, unpack(FIELDS))
      if f[1] ~= 'pending' then
        -- Cancelled, purged or finished: dropped.
        gone[#gone + 1] = id
      elseif tonumber(f[2] or '0') > 0 and tonumber(f[2]) <= now then
        -- It expired before a worker took it: finished as cancelled.
        gone[#gone + 1] = id
        local err = 'expired: not started before its expiry time'
        finish_cancelled(key, id, KEYS[5], KEYS[6], now, err)
        push_history(key, attempt_entry(0, nil, nil, now, 'expired', err))
        expired[#expired + 1] = id
      elseif has_room(f[10] or 'default')
        and (i <= d + p or limit <= 0 or not has_parked(f[10] or 'default')) then
        start(id, key, f)
      else
        gone[#gone + 1] = id
        local rank = '1'
        if f[8] == 'high' then rank = '0' end
        redis.call('ZADD', PARKED, 0, (f[10] or 'default') .. '\t' .. rank .. '\t'
          .. string.format('%015d', tonumber(f[7] or '0')) .. '\t' .. id)
        parked = parked + 1
      end
    end
  end
end
call_chunked('SREM', KEYS[1], gone)
if reserved > claimed then
  redis.call('HINCRBYFLOAT', KEYS[7], 'tokens', reserved - claimed)
end
if limit > 0 and claimed > 0 then redis.call('PEXPIRE', RUNNING, 7 * 24 * 3600000) end
local out = {promoted, redis.call('EXISTS', PARKED), freed, #expired}
for _, id in ipairs(expired) do out[#out + 1] = id end
for _, v in ipairs(jobs) do out[#out + 1] = v end
return out
