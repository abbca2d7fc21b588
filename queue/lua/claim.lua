-- claim.lua: promote due scheduled jobs, then claim up to n jobs for a worker.
-- KEYS[1] pending:high  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] worker's in-flight set
-- KEYS[5] wake list  KEYS[6] workers zset  KEYS[7] high-priority streak counter
-- KEYS[8] done zset  KEYS[9] unfinished jobs per tenant (hash)  KEYS[10] rate-limit bucket
-- KEYS[11] running jobs by tenant (zset)  KEYS[12] parked jobs by tenant (zset)
-- ARGV: 1 job key prefix ('{p:q}:job:'), 2 n, 3 worker id, 4 promote limit, 5 lease ms,
--       6 high-priority burst (after this many high claims in a row one normal job goes
--       first; 0: high always first), 7 rate limit: starts per period (0: none),
--       8 its period (ms), 9 tenant concurrency: most jobs of one tenant running at once
--       (0: none)
-- A rate-limited queue is a token bucket of ARGV[7] tokens refilled at ARGV[7] per ARGV[8]:
-- a claim takes at most the whole tokens in it, and with none it takes nothing and answers
-- how long until the next token (the claimer sleeps that long; the jobs stay queued).
-- With a tenant concurrency limit, a job whose tenant has that many jobs running is parked
-- (KEYS[12], still `pending`, out of the pending lists, so it holds no worker slot and blocks
-- no other tenant) and claimed ahead of the pending lists once one of them ends. Running jobs
-- are members `<tenant>\t<id>` of KEYS[11] (added here); a member whose job no longer runs is
-- dropped when its tenant is counted at the limit, so no finishing path has to remove it.
-- Parked jobs are members `<tenant>\t<0 high|1 normal>\t<enqueued_at>\t<id>` (lex order: by
-- tenant, then priority, then age). While jobs are parked, the answer's next-due is at most
-- PARKED_RECHECK_MS, so an idle claimer looks again when a slot may have freed.
-- Returns {-2} when the worker is not registered or its lease ran out (it was, or is about
-- to be, presumed dead: it must register afresh), else {next due in ms or -1, ms until the
-- rate limit allows a start (-1: not throttled), the number E
-- of jobs found expired, their E ids, then for each claimed job: id, args, attempt,
-- max_attempts, enqueued_at, priority, request_id, tenant, callback, lease, hard_ms, soft_ms,
-- notify, backoff, traceparent}.
-- A job whose expiry time passed before it was claimed is not handed out: it is finished
-- as cancelled here (its record and callbacks are the caller's to write).
-- Every claimed job is in the worker's in-flight set, marked running, with its attempt and
-- its claim number (the lease token that fences its ack) counted before the script
-- returns: nothing is in limbo. (Per job: one HMGET, one HSET; per batch: an RPOP with a
-- count per list, one SADD.)
local prefix, n, worker = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local burst = tonumber(ARGV[6])
local now = now_ms()
local beat = redis.call('ZSCORE', KEYS[6], worker)
if not beat or tonumber(beat) < now - tonumber(ARGV[5]) then return {-2} end
local due = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local key = prefix .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'scheduled' or st == 'retrying' then requeue(key, id, KEYS[1], KEYS[2], nil) end
end
local rate, period = tonumber(ARGV[7] or '0'), tonumber(ARGV[8] or '0')
local tokens, throttled = nil, -1
if rate > 0 and period > 0 then
  local b = redis.call('HMGET', KEYS[10], 'tokens', 'at')
  tokens = tonumber(b[1]) or rate
  local at = tonumber(b[2]) or now
  if now > at then tokens = math.min(rate, tokens + (now - at) * rate / period) end
  if tokens < 1 then
    throttled = math.max(1, math.ceil((1 - tokens) * period / rate))
    n = 0
  elseif math.floor(tokens) < n then
    n = math.floor(tokens)
  end
end
-- The fields a claim reads of a job, in this order (state first).
local FIELDS = {'state', 'expires_at', 'attempts', 'lease', 'args', 'max_attempts', 'enqueued_at',
  'priority', 'request_id', 'tenant', 'callback', 'hard_ms', 'soft_ms', 'notify', 'backoff',
  'traceparent'}
local limit = tonumber(ARGV[9] or '0')
local RUNNING, PARKED = KEYS[11], KEYS[12]
local PARKED_RECHECK_MS = 200
-- Tenants found at their limit during this call (their count cannot drop meanwhile).
local full = {}
-- The lex range of `tenant`'s members in RUNNING or PARKED (tenant names hold no control
-- characters: '\n' sorts right after the '\t' that ends the name).
local function tenant_range(tenant)
  return '[' .. tenant .. '\t', '(' .. tenant .. '\n'
end
-- Whether `tenant` may start one more job (always, without a limit). At the limit, members
-- whose job no longer runs (finished, retrying, re-queued, forgotten) are dropped first.
local function has_room(tenant)
  if limit <= 0 then return true end
  if full[tenant] then return false end
  local lo, hi = tenant_range(tenant)
  local count = redis.call('ZLEXCOUNT', RUNNING, lo, hi)
  if count >= limit then
    for _, m in ipairs(redis.call('ZRANGEBYLEX', RUNNING, lo, hi)) do
      if redis.call('HGET', prefix .. string.sub(m, #tenant + 2), 'state') ~= 'running' then
        redis.call('ZREM', RUNNING, m)
        count = count - 1
      end
    end
  end
  if count >= limit then full[tenant] = true end
  return count < limit
end
-- Ids popped from each list ahead of use (one RPOP with a count for what the call still
-- wants, not one per job), in pop order from `pos`; what is left at the end goes back to the
-- claim end in the same order (put_back).
local ahead = {}
-- Pops the next id from `list` whose job is still pending (cancelled, purged or finished
-- ids are dropped on the way); answers it with its FIELDS. `want`: how many more the call
-- may take (how many to pop ahead).
local function next_pending(list, want)
  while true do
    local buf = ahead[list]
    if not buf or buf.pos > #buf.ids then
      local ids = redis.call('RPOP', list, math.max(want, 1))
      if not ids then return nil end
      buf = {ids = ids, pos = 1}
      ahead[list] = buf
    end
    local id = buf.ids[buf.pos]
    buf.pos = buf.pos + 1
    local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
    if f[1] == 'pending' then return id, f end
  end
end
-- Returns the ids popped ahead but not used to the claim end of their lists, next first.
local function put_back()
  for list, buf in pairs(ahead) do
    if buf.pos <= #buf.ids then
      local back = {}
      for k = #buf.ids, buf.pos, -1 do back[#back + 1] = buf.ids[k] end
      redis.call('RPUSH', list, unpack(back))
    end
  end
end
-- Finishes the job at `key` as cancelled: it expired before a worker took it.
local function expire(key, id)
  local err = 'expired: not started before its expiry time'
  finish_cancelled(key, id, KEYS[8], KEYS[9], now, err)
  push_history(key, attempt_entry(0, nil, nil, now, 'expired', err))
end
local jobs, expired, running = {}, {}, {}
local claimed, popped, parked = 0, 0, 0
-- Marks the job `id` (its FIELDS in `f`) running for this worker and adds it to the answer.
local function start(id, f)
  -- The attempt and the claim number (the lease token) are counted here, in the same
  -- atomic step that marks the job running.
  local attempts = tonumber(f[3] or '0') + 1
  local lease = tonumber(f[4] or '0') + 1
  redis.call('HSET', prefix .. id, 'state', 'running', 'started_at', now, 'worker', worker,
    'attempts', attempts, 'lease', lease)
  running[#running + 1] = id
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
-- Whether the job (its FIELDS in `f`) expired before a worker took it.
local function past_expiry(f)
  local expires = tonumber(f[2] or '0')
  return expires > 0 and expires <= now
end
-- Parked jobs first, tenant by tenant (at most 200 tenants a call), while their tenant has
-- room; ids no longer pending (cancelled) are dropped on the way.
local tenant_member = redis.call('ZRANGE', PARKED, '-', '+', 'BYLEX', 'LIMIT', 0, 1)[1]
local visited = 0
while tenant_member and claimed < n and visited < 200 do
  visited = visited + 1
  local tenant = string.match(tenant_member, '^([^\t]*)')
  local lo, hi = tenant_range(tenant)
  while claimed < n and has_room(tenant) do
    local m = redis.call('ZRANGE', PARKED, lo, hi, 'BYLEX', 'LIMIT', 0, 1)[1]
    if not m then break end
    redis.call('ZREM', PARKED, m)
    local id = string.match(m, '([^\t]*)$')
    local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
    if f[1] == 'pending' then
      if past_expiry(f) then
        expire(prefix .. id, id)
        expired[#expired + 1] = id
      else
        start(id, f)
      end
    end
  end
  tenant_member = redis.call('ZRANGE', PARKED, '(' .. tenant .. '\n', '+', 'BYLEX', 'LIMIT', 0, 1)[1]
end
local streak = tonumber(redis.call('GET', KEYS[7]) or '0')
local streak0 = streak
while claimed < n and #expired + parked < 1000 do
  local first, second = KEYS[1], KEYS[2]
  if burst > 0 and streak >= burst then first, second = KEYS[2], KEYS[1] end
  local id, f = next_pending(first, n - claimed)
  local from = first
  if not id then
    id, f = next_pending(second, n - claimed)
    from = second
  end
  if not id then break end
  if from == KEYS[1] then streak = streak + 1 else streak = 0 end
  -- Each id popped here took one wake token when it was pushed.
  popped = popped + 1
  local tenant = f[10] or 'default'
  if past_expiry(f) then
    expire(prefix .. id, id)
    expired[#expired + 1] = id
  elseif has_room(tenant) then
    start(id, f)
  else
    local rank = '1'
    if f[8] == 'high' then rank = '0' end
    redis.call('ZADD', PARKED, 0, tenant .. '\t' .. rank .. '\t'
      .. string.format('%015d', tonumber(f[7] or '0')) .. '\t' .. id)
    parked = parked + 1
  end
end
put_back()
call_chunked('SADD', KEYS[4], running)
if streak ~= streak0 then redis.call('SET', KEYS[7], streak) end
if tokens then
  redis.call('HSET', KEYS[10], 'tokens', tostring(tokens - claimed), 'at', now)
  redis.call('PEXPIRE', KEYS[10], period * 2 + 60000)
end
if limit > 0 and claimed > 0 then redis.call('PEXPIRE', RUNNING, 7 * 24 * 3600000) end
if popped > 0 then redis.call('LPOP', KEYS[5], popped) end
local out = {-1, throttled, #expired}
for _, id in ipairs(expired) do out[#out + 1] = id end
for _, v in ipairs(jobs) do out[#out + 1] = v end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = math.max(tonumber(nxt[2]) - now, 0) end
if redis.call('EXISTS', PARKED) == 1 and (out[1] < 0 or out[1] > PARKED_RECHECK_MS) then
  out[1] = PARKED_RECHECK_MS
end
return out
