-- claim.lua: promote due scheduled jobs, then claim up to n jobs for a worker.
-- KEYS[1] pending:high  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] worker's in-flight set
-- KEYS[5] wake list  KEYS[6] workers zset  KEYS[7] high-priority streak counter
-- KEYS[8] done zset  KEYS[9] unfinished jobs per tenant (hash)  KEYS[10] rate-limit bucket
-- ARGV: 1 job key prefix ('{p:q}:job:'), 2 n, 3 worker id, 4 promote limit, 5 lease ms,
--       6 high-priority burst (after this many high claims in a row one normal job goes
--       first; 0: high always first), 7 rate limit: starts per period (0: none),
--       8 its period (ms)
-- A rate-limited queue is a token bucket of ARGV[7] tokens refilled at ARGV[7] per ARGV[8]:
-- a claim takes at most the whole tokens in it, and with none it takes nothing and answers
-- how long until the next token (the claimer sleeps that long; the jobs stay queued).
-- Returns {-2} when the worker is not registered or its lease ran out (it was, or is about
-- to be, presumed dead: it must register afresh), else {next due in ms or -1, ms until the
-- rate limit allows a start (-1: not throttled), the number E
-- of jobs found expired, their E ids, then for each claimed job: id, args, attempt,
-- max_attempts, enqueued_at, priority, request_id, tenant, callback, lease, hard_ms, soft_ms,
-- notify, backoff}.
-- A job whose expiry time passed before it was claimed is not handed out: it is finished
-- as cancelled here (its record and callbacks are the caller's to write).
-- Every claimed job is in the worker's in-flight set, marked running, with its attempt and
-- its claim number (the lease token that fences its ack) counted before the script
-- returns: nothing is in limbo. (Per job: RPOP, one HMGET, one HSET; one SADD per batch.)
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
  'priority', 'request_id', 'tenant', 'callback', 'hard_ms', 'soft_ms', 'notify', 'backoff'}
-- Pops the next id from `list` whose job is still pending (cancelled, purged or finished
-- ids are dropped on the way); answers it with its FIELDS.
local function next_pending(list)
  while true do
    local id = redis.call('RPOP', list)
    if not id then return nil end
    local f = redis.call('HMGET', prefix .. id, unpack(FIELDS))
    if f[1] == 'pending' then return id, f end
  end
end
-- Finishes the job at `key` as cancelled: it expired before a worker took it.
local function expire(key, id)
  local err = 'expired: not started before its expiry time'
  redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now, 'error', err)
  push_history(key, {attempt = 0, finished_at_ms = now, outcome = 'expired', error = err})
  redis.call('ZADD', KEYS[8], now, id)
  tenant_done(KEYS[9], key)
end
local jobs, expired, running = {}, {}, {}
local claimed = 0
local streak = tonumber(redis.call('GET', KEYS[7]) or '0')
local streak0 = streak
while claimed < n and #expired < 1000 do
  local first, second = KEYS[1], KEYS[2]
  if burst > 0 and streak >= burst then first, second = KEYS[2], KEYS[1] end
  local id, f = next_pending(first)
  local from = first
  if not id then
    id, f = next_pending(second)
    from = second
  end
  if not id then break end
  if from == KEYS[1] then streak = streak + 1 else streak = 0 end
  local key = prefix .. id
  local expires = tonumber(f[2] or '0')
  if expires > 0 and expires <= now then
    expire(key, id)
    expired[#expired + 1] = id
  else
    -- The attempt and the claim number (the lease token) are counted here, in the same
    -- atomic step that marks the job running.
    local attempts = tonumber(f[3] or '0') + 1
    local lease = tonumber(f[4] or '0') + 1
    redis.call('HSET', key, 'state', 'running', 'started_at', now, 'worker', worker,
      'attempts', attempts, 'lease', lease)
    running[#running + 1] = id
    for _, v in ipairs({id, f[5], attempts, f[6], f[7], f[8] or 'normal', f[9] or '',
        f[10] or 'default', f[11] or '', lease, f[12] or '0', f[13] or '0', f[14] or '',
        f[15] or ''}) do
      jobs[#jobs + 1] = v
    end
    claimed = claimed + 1
  end
end
for i = 1, #running, 1000 do
  redis.call('SADD', KEYS[4], unpack(running, i, math.min(i + 999, #running)))
end
if streak ~= streak0 then redis.call('SET', KEYS[7], streak) end
if tokens then
  redis.call('HSET', KEYS[10], 'tokens', tostring(tokens - claimed), 'at', now)
  redis.call('PEXPIRE', KEYS[10], period * 2 + 60000)
end
if claimed + #expired > 0 then redis.call('LPOP', KEYS[5], claimed + #expired) end
local out = {-1, throttled, #expired}
for _, id in ipairs(expired) do out[#out + 1] = id end
for _, v in ipairs(jobs) do out[#out + 1] = v end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = math.max(tonumber(nxt[2]) - now, 0) end
return out
