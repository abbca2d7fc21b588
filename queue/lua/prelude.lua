-- prelude.lua: helpers every queue script shares; scripts.rs prepends this file to each, so
-- what more than one script does is written once, here: Redis' clock, a tenant's counts, a
-- job's attempt history, the fence, putting a job back in its queue, calls over long lists,
-- finishing a job (cancelled, dead), retention, and pushing a new job.
-- Time is Redis' own (TIME), never the caller's: a worker whose clock is off cannot make a
-- live worker look dead nor run a delayed job early.

-- Unix milliseconds on Redis' clock, read once per script run (a script is atomic: its
-- steps happen at one moment; a batch script pushing many jobs asks once).
local now_cached
local function now_ms()
  if not now_cached then
    local t = redis.call('TIME')
    now_cached = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_cached
end

-- `count` jobs of `tenant` (with `priority`) are finished: the tenant has `count` unfinished
-- jobs less (never below 0), and as many unfinished high-priority jobs less (field
-- '<tenant>:high') when they were.
local function tenants_done_as(tenants, tenant, priority, count)
  tenant = tenant or 'default'
  if redis.call('HINCRBY', tenants, tenant, -count) < 0 then redis.call('HSET', tenants, tenant, 0) end
  if priority == 'high' and redis.call('HINCRBY', tenants, tenant .. ':high', -count) < 0 then
    redis.call('HSET', tenants, tenant .. ':high', 0)
  end
end

-- `count` more jobs of `tenant` (with `priority`) wait: the tenant has `count` unfinished jobs
-- more, and as many unfinished high-priority jobs more (field '<tenant>:high') when they are.
-- The inverse of tenants_done_as.
local function tenants_queued_as(tenants, tenant, priority, count)
  tenant = tenant or 'default'
  redis.call('HINCRBY', tenants, tenant, count)
  if priority == 'high' then redis.call('HINCRBY', tenants, tenant .. ':high', count) end
end

-- One job of `tenant` (with `priority`) is finished.
local function tenant_done_as(tenants, tenant, priority)
  tenants_done_as(tenants, tenant, priority, 1)
end

-- The job at `key` is finished (see tenant_done_as).
local function tenant_done(tenants, key)
  local f = redis.call('HMGET', key, 'tenant', 'priority')
  tenant_done_as(tenants, f[1], f[2])
end

-- One finished attempt as a job's history records it (`AttemptRecord` in Rust): its number,
-- the worker that ran it and when it started (nil: none), when and how it ended, and why.
local function attempt_entry(attempt, worker, started_at, now, outcome, err)
  return {attempt = tonumber(attempt), worker = worker, started_at_ms = tonumber(started_at),
    finished_at_ms = now, outcome = outcome, error = err}
end

-- The history `stored` (JSON text or nil) with one finished attempt appended, as JSON text
-- (the last 20 are kept). cjson encodes an empty table as an object, so a history always
-- holds at least the new entry.
local function history_with(stored, entry)
  local history = {}
  if stored and stored ~= '{}' then history = cjson.decode(stored) end
  history[#history + 1] = entry
  while #history > 20 do table.remove(history, 1) end
  return cjson.encode(history)
end

-- Appends one finished attempt to the job's history.
local function push_history(key, entry)
  redis.call('HSET', key, 'history', history_with(redis.call('HGET', key, 'history'), entry))
end

-- Fencing: true only while the job is running under this lease (its claim number) and is in
-- this worker's in-flight set. A stale attempt (its worker was presumed dead and the job
-- recovered, maybe claimed again) fails this and changes nothing.
local function holds(key, inflight, id, lease)
  if redis.call('SISMEMBER', inflight, id) == 0 then return false end
  local f = redis.call('HMGET', key, 'state', 'lease')
  return f[1] == 'running' and f[2] == lease
end

-- The same fence on a job whose `state` and `stored_lease` were read already; when the attempt
-- holds the job, takes it out of the in-flight set (the first step of finishing it).
local function take(inflight, id, state, stored_lease, lease)
  return state == 'running' and stored_lease == lease and redis.call('SREM', inflight, id) == 1
end

-- Puts a job back at the claim end of its priority's pending list and wakes a worker (none
-- when `wake` is nil: the caller is about to claim).
local function requeue(key, id, high, normal, wake)
  redis.call('HSET', key, 'state', 'pending')
  if redis.call('HGET', key, 'priority') == 'high' then
    redis.call('RPUSH', high, id)
  else
    redis.call('RPUSH', normal, id)
  end
  if wake then redis.call('LPUSH', wake, '1') end
end

-- Runs `cmd key <items>` in calls of at most 1,000 items each (none when `items` is empty: a
-- command without its items is an error); answers the calls' replies, in order. An even chunk
-- size keeps (score, member) pairs together.
local function call_chunked(cmd, key, items)
  local replies = {}
  for i = 1, #items, 1000 do
    replies[#replies + 1] = redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
  return replies
end

-- The done-set score of the job at `key`, finishing (succeeded or cancelled) at `now`: its
-- finish time moved by its own retention ('done_shift': the job's retention minus its
-- queue's, ms, set at submission; absent: 0), so that trimming by score against the queue's
-- retention (ack.lua, trim.lua) forgets it after its own. `shift`: the field when the caller
-- read it already (nil: read here). Readers of finish times read the hash's 'finished_at',
-- never this score.
local function done_score(key, now, shift)
  if shift == nil then shift = redis.call('HGET', key, 'done_shift') end
  return now + (tonumber(shift) or 0)
end

-- Finishes the job `id` (its hash at `key`) as cancelled at `now`, with `err` as its error
-- when given: into the done set `done` (so it expires like a succeeded job), and one
-- unfinished job less for its tenant in `tenants`.
local function finish_cancelled(key, id, done, tenants, now, err)
  if err then
    redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now, 'error', err)
  else
    redis.call('HSET', key, 'state', 'cancelled', 'finished_at', now)
  end
  redis.call('ZADD', done, done_score(key, now), id)
  tenant_done(tenants, key)
end

-- Dead-letters the job `id` (its hash at `key`) at `now` for `reason`, with `err` as its error
-- when given: into the dead letters `dead`, and one unfinished job less for its tenant in
-- `tenants`.
local function finish_dead(key, id, dead, tenants, now, reason, err)
  if err then
    redis.call('HSET', key, 'state', 'dead', 'finished_at', now, 'dead_reason', reason,
      'error', err)
  else
    redis.call('HSET', key, 'state', 'dead', 'finished_at', now, 'dead_reason', reason)
  end
  redis.call('ZADD', dead, now, id)
  tenant_done(tenants, key)
end

-- Forgets those of `ids` (their job hashes in `keys`, in the same order) that are still in the
-- zset `set` (scored by time, ms) with a score at most `age` ms before now on Redis' clock: out of
-- the set, their job hashes deleted (Postgres keeps the records). The caller found the ids by an
-- earlier reading of the set (its keys must be declared), so each is checked again here: one no
-- longer there, or no longer that old, stays. Returns how many went.
local function forget_listed(set, ids, keys, age)
  local cut, gone = now_ms() - age, {}
  local i = 0
  for _, scores in ipairs(call_chunked('ZMSCORE', set, ids)) do
    for j = 1, #scores do
      i = i + 1
      if scores[j] and tonumber(scores[j]) <= cut then
        redis.call('DEL', keys[i])
        gone[#gone + 1] = ids[i]
      end
    end
  end
  call_chunked('ZREM', set, gone)
  return #gone
end

-- Writes the hash of a new job at `key` (state 'pending' or 'scheduled'; run_at 0 when it
-- waits for nothing), with the optional fields in `extra` (name, value, …): the one layout
-- of a new job. Only what the job's key does not say and what differs from a default is
-- written (each field costs Redis time on every push): no id or queue (the key names both),
-- no attempts (absent: 0, counted by claim_start.lua), no run_at unless it waits.
local function new_job(key, args, max_attempts, now, state, priority, run_at, tenant, extra)
  if run_at > 0 then
    extra[#extra + 1] = 'run_at'
    extra[#extra + 1] = run_at
  end
  redis.call('HSET', key, 'args', args, 'max_attempts', max_attempts, 'enqueued_at', now,
    'state', state, 'priority', priority, 'tenant', tenant, unpack(extra))
end

-- The optional fields of a new job from push.lua's arguments A (see its header): those not
-- at their default, as (name, value, …).
local function extra_fields(A)
  local extra = {}
  local function opt(i, name, default)
    if A[i] ~= default then
      extra[#extra + 1] = name
      extra[#extra + 1] = A[i]
    end
  end
  opt(11, 'request_id', '')
  opt(13, 'callback', '')
  opt(16, 'expires_at', '0')
  opt(17, 'hard_ms', '0')
  opt(18, 'soft_ms', '0')
  opt(19, 'notify', '')
  opt(22, 'backoff', '')
  opt(23, 'done_shift', '0')
  opt(24, 'traceparent', '')
  return extra
end

-- `n` new jobs wait: one wake token each on `wake` (kept to `cap` tokens), so idle workers
-- claim at once. (Their tenants' counts are the caller's: tenants_queued_as.)
local function queued(wake, cap, n)
  local tokens = {}
  for i = 1, math.min(n, cap, 1000) do tokens[i] = '1' end
  if redis.call('LPUSH', wake, unpack(tokens)) > cap then redis.call('LTRIM', wake, 0, cap - 1) end
end

-- The keys and arguments push_job takes (intake.lua and fire.lua pass them through per job).
local PUSH_KEYS, PUSH_ARGS = 8, 25

-- Whether a job in `state`, found in a worker's in-flight set, was taken there by the first
-- step of a claim (claim.lua) and not started by the second (claim_start.lua): still pending,
-- or due (scheduled, retrying). Whoever hands the set back re-queues it.
local function claimed_not_started(state)
  return state == 'pending' or state == 'scheduled' or state == 'retrying'
end

-- Whether a job in `state` is over.
local function final_state(state)
  return state == 'succeeded' or state == 'dead' or state == 'cancelled'
end

-- Wake tokens and tenants' counts that a batch script (intake.lua) adds once per queue, after
-- its loop: `deferred[wake]` = {cap, tenants, {tenant = n}}.
local function defer_queued(deferred, wake, cap, tenants, tenant)
  local d = deferred[wake]
  if not d then
    d = {cap, tenants, {}}
    deferred[wake] = d
  end
  d[3][tenant] = (d[3][tenant] or 0) + 1
end

-- Adds what defer_queued gathered.
local function flush_queued(deferred)
  for wake, d in pairs(deferred) do
    local n = 0
    for tenant, count in pairs(d[3]) do
      tenants_queued_as(d[2], tenant, nil, count)
      n = n + count
    end
    queued(wake, d[1], n)
  end
end

-- Enqueues one job: the body of push.lua (see its header for the keys K and arguments A),
-- shared with intake.lua, which pushes one job per message it takes, and fire.lua, which
-- pushes a schedule's tick. With `deferred` (a batch), its wake token and tenant count are
-- gathered there for flush_queued. Returns {id, created}; created 2 when a unique job held
-- until finished found a holder other than the one declared (A[25], its hash K[8]): nothing is
-- written, and the id is the holder's.
local function push_job(K, A, deferred)
  -- A second submission under an idempotency key answers the first job.
  if A[8] == '1' then
    local existing = redis.call('GET', K[5])
    if existing then return {existing, 0} end
  end
  -- A unique job: while the key's holder counts (for its window, or until it is over), the
  -- holder is the answer.
  if A[20] ~= '' then
    local holder = redis.call('GET', K[7])
    if holder then
      if A[20] ~= 'finished' then return {holder, 0} end
      -- The holder's hash is K[8], declared by a caller that read the holder A[25] first; a
      -- caller that read none, or another, is answered the holder to ask again with.
      if holder ~= A[25] then return {holder, 2} end
      local state = redis.call('HGET', K[8], 'state')
      if state and not final_state(state) then return {holder, 0} end
    end
  end
  local cap = tonumber(A[14])
  if cap > 0 then
    local load = tonumber(redis.call('HGET', K[6], A[12]) or '0')
    if load >= cap then return {'', -load} end
  end
  local high = A[9] == 'high'
  local high_cap = tonumber(A[15] or '0')
  if high and high_cap > 0 then
    local load = tonumber(redis.call('HGET', K[6], A[12] .. ':high') or '0')
    if load >= high_cap then return {'high', -load} end
  end
  if A[20] ~= '' then redis.call('SET', K[7], A[1], 'PX', tonumber(A[21])) end
  if A[8] == '1' then redis.call('SET', K[5], A[1], 'EX', tonumber(A[7])) end
  -- A job id given by the caller (a Celery task id) names one job for good (a fresh id,
  -- A[5] ~= '1', is new by construction).
  if A[5] == '1' and redis.call('EXISTS', K[1]) == 1 then return {A[1], 0} end
  local now = now_ms()
  local run_at = 0
  local state = 'pending'
  if tonumber(A[6]) > 0 then
    state = 'scheduled'
    run_at = now + tonumber(A[6])
  end
  new_job(K[1], A[2], A[4], now, state, A[9], run_at, A[12], extra_fields(A))
  if state == 'scheduled' then
    redis.call('ZADD', K[3], run_at, A[1])
  else
    redis.call('LPUSH', K[2], A[1])
  end
  -- One wake token per push: an idle worker blocked on the wake list claims at
  -- once (or, for a scheduled job, recomputes how long to sleep).
  if deferred then
    -- The tenant's count once per batch (flush_queued); its high-priority count at once.
    defer_queued(deferred, K[4], tonumber(A[10]), K[6], A[12])
    if high then redis.call('HINCRBY', K[6], A[12] .. ':high', 1) end
  else
    queued(K[4], tonumber(A[10]), 1)
    tenants_queued_as(K[6], A[12], A[9], 1)
  end
  return {A[1], 1}
end
