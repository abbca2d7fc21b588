-- claim.lua: the first of a claim's two steps (the second is claim_start.lua). It touches only
-- queue-level keys, all declared: it promotes nothing and starts nothing, it takes ids out of
-- the ready structures into the worker's in-flight set, where they wait, not started, for the
-- second step, which gets their job hashes in KEYS. Nothing is in limbo: an id taken here is
-- in the worker's in-flight set until claim_start.lua starts it or puts it back, and a worker
-- that dies in between has it recovered (recover.lua re-queues an in-flight id whose job is
-- not running; deregister.lua and reconcile.lua hand it back too).
-- KEYS[1] pending:high  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] worker's in-flight set
-- KEYS[5] wake list  KEYS[6] workers zset  KEYS[7] high-priority streak counter
-- KEYS[8] rate-limit bucket  KEYS[9] running jobs by tenant (zset)
-- KEYS[10] parked jobs by tenant (zset)
-- ARGV: 1 n, 2 worker id, 3 promote limit, 4 lease ms, 5 high-priority burst (after this many
--       high claims in a row one normal job goes first; 0: high always first), 6 rate limit:
--       starts per period (0: none), 7 its period (ms), 8 tenant concurrency: most jobs of one
--       tenant running at once (0: none)
-- Takes, in this order: due scheduled jobs (at most ARGV[3]; the second step re-queues those
-- still scheduled or retrying, and the claimer claims again), parked jobs of tenants that seem
-- to have room (their running count below the limit, members whose job no longer runs
-- included: the second step drops those it is answered, and the claimer claims again), then
-- ids from the pending lists, high first but one normal after each ARGV[5] high ones, as many
-- as the call may start. A rate-limited queue is a token bucket of ARGV[6] tokens refilled at
-- ARGV[6] per ARGV[7]: the whole tokens in it bound what is taken, and are reserved here (the
-- second step gives back those it did not start); with none it takes nothing and answers how
-- long until the next token. Each id popped from a pending list takes one wake token.
-- Returns {-2} when the worker is not registered or its lease ran out (it was, or is about to
-- be, presumed dead: it must register afresh), else {next due in ms or -1 (at most
-- PARKED_RECHECK_MS while jobs are parked), ms until the rate limit allows a start (-1: not
-- throttled), tokens reserved (-1: no rate limit), D, the D due ids, P, the P parked ids, Q,
-- the Q popped ids in the order taken, then running-set members (`<tenant>\t<id>`) of tenants
-- at their limit, for the second step to drop those whose job no longer runs}.
local n, worker = tonumber(ARGV[1]), ARGV[2]
local burst = tonumber(ARGV[5])
local now = now_ms()
local beat = redis.call('ZSCORE', KEYS[6], worker)
if not beat or tonumber(beat) < now - tonumber(ARGV[4]) then return {-2} end
local due = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
call_chunked('ZREM', KEYS[3], due)
local rate, period = tonumber(ARGV[6] or '0'), tonumber(ARGV[7] or '0')
local tokens, throttled = nil, -1
if rate > 0 and period > 0 then
  local b = redis.call('HMGET', KEYS[8], 'tokens', 'at')
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
local limit = tonumber(ARGV[8] or '0')
local RUNNING, PARKED = KEYS[9], KEYS[10]
local PARKED_RECHECK_MS = 200
-- The lex range of `tenant`'s members in RUNNING or PARKED (tenant names hold no control
-- characters: '\n' sorts right after the '\t' that ends the name).
local function tenant_range(tenant)
  return '[' .. tenant .. '\t', '(' .. tenant .. '\n'
end
-- Parked jobs first, tenant by tenant (at most 200 tenants a call), while their tenant seems
-- to have room (without a limit, every parked job has room). The running-set members of a
-- tenant with parked jobs and no room are answered for the second step to check.
local parked, crowded = {}, {}
local tenant_member = redis.call('ZRANGE', PARKED, '-', '+', 'BYLEX', 'LIMIT', 0, 1)[1]
local visited = 0
while tenant_member and #parked < n and visited < 200 do
  visited = visited + 1
  local tenant = string.match(tenant_member, '^([^\t]*)')
  local lo, hi = tenant_range(tenant)
  local room = n - #parked
  if limit > 0 then room = math.min(room, limit - redis.call('ZLEXCOUNT', RUNNING, lo, hi)) end
  if room > 0 then
    local members = redis.call('ZRANGE', PARKED, lo, hi, 'BYLEX', 'LIMIT', 0, room)
    call_chunked('ZREM', PARKED, members)
    for _, m in ipairs(members) do parked[#parked + 1] = string.match(m, '([^\t]*)$') end
  else
    crowded[#crowded + 1] = tenant
  end
  tenant_member = redis.call('ZRANGE', PARKED, '(' .. tenant .. '\n', '+', 'BYLEX', 'LIMIT', 0,
    1)[1]
end
-- Then the pending lists, in the order the claims of the high-priority burst take them.
local streak = tonumber(redis.call('GET', KEYS[7]) or '0')
local streak0 = streak
local lists = {KEYS[1], KEYS[2]}
local left, count, order = {0, 0}, {0, 0}, {}
if n > #parked then
  left = {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2])}
end
for _ = 1, n - #parked do
  local first, second = 1, 2
  if burst > 0 and streak >= burst then first, second = 2, 1 end
  local from = first
  if left[first] <= 0 then from = second end
  if left[from] <= 0 then break end
  left[from] = left[from] - 1
  count[from] = count[from] + 1
  order[#order + 1] = from
  if from == 1 then streak = streak + 1 else streak = 0 end
end
local popped_by = {{}, {}}
for i = 1, 2 do
  if count[i] > 0 then popped_by[i] = redis.call('RPOP', lists[i], count[i]) or {} end
end
local popped, at = {}, {0, 0}
for _, from in ipairs(order) do
  at[from] = at[from] + 1
  local id = popped_by[from][at[from]]
  if id then popped[#popped + 1] = id end
end
if streak ~= streak0 then redis.call('SET', KEYS[7], streak) end
if #popped > 0 then redis.call('LPOP', KEYS[5], #popped) end
local taken = {}
for _, group in ipairs({due, parked, popped}) do
  for _, id in ipairs(group) do taken[#taken + 1] = id end
end
call_chunked('SADD', KEYS[4], taken)
local reserved = -1
if tokens then
  reserved = #parked + #popped
  redis.call('HSET', KEYS[8], 'tokens', tostring(tokens - reserved), 'at', now)
  redis.call('PEXPIRE', KEYS[8], period * 2 + 60000)
end
local out = {-1, throttled, reserved, #due}
for _, id in ipairs(due) do out[#out + 1] = id end
out[#out + 1] = #parked
for _, id in ipairs(parked) do out[#out + 1] = id end
out[#out + 1] = #popped
for _, id in ipairs(popped) do out[#out + 1] = id end
-- The running-set members to check: of every tenant at its limit when ids were popped (their
-- tenants are known only to the second step), else of the tenants with parked jobs and no room.
if limit > 0 and #popped > 0 then
  local by_tenant = {}
  for _, m in ipairs(redis.call('ZRANGE', RUNNING, 0, -1)) do
    local tenant = string.match(m, '^([^\t]*)')
    local members = by_tenant[tenant]
    if not members then
      members = {}
      by_tenant[tenant] = members
    end
    members[#members + 1] = m
  end
  for _, members in pairs(by_tenant) do
    if #members >= limit then
      for _, m in ipairs(members) do out[#out + 1] = m end
    end
  end
elseif limit > 0 then
  for _, tenant in ipairs(crowded) do
    local lo, hi = tenant_range(tenant)
    for _, m in ipairs(redis.call('ZRANGEBYLEX', RUNNING, lo, hi)) do out[#out + 1] = m end
  end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = math.max(tonumber(nxt[2]) - now, 0) end
if redis.call('EXISTS', PARKED) == 1 and (out[1] < 0 or out[1] > PARKED_RECHECK_MS) then
  out[1] = PARKED_RECHECK_MS
end
return out
