-- push_batch.lua: enqueue many jobs of one queue (or partition) under the same options, in
-- one call: what push.lua does per job, with the per-call work (arguments, wake tokens,
-- tenant counts, list pushes) done once per batch.
-- KEYS[1] pending list (of their priority)  KEYS[2] scheduled zset  KEYS[3] wake list
-- KEYS[4] unfinished jobs per tenant (hash), then KEYS[5 ..] the jobs' hashes, in order
-- ARGV[1 .. 24]: push.lua's arguments (its 1 id and 2 args are unused here; its 5 says
-- whether the ids were given by the caller, in which case one that exists is skipped); no
-- idempotency or unique key and no caps (the caller checked the batch against them).
-- ARGV[25 ..]: (id, args json) per job, in the order of their keys.
-- Returns how many jobs were created.
local given = ARGV[5] == '1'
local now = now_ms()
local state, run_at = 'pending', 0
local delay = tonumber(ARGV[6])
if delay > 0 then state, run_at = 'scheduled', now + delay end
local ids = {}
for i = 25, #ARGV, 2 do
  local key = KEYS[5 + (i - 25) / 2]
  if not (given and redis.call('EXISTS', key) == 1) then
    new_job(key, ARGV[i + 1], ARGV[4], now, state, ARGV[9], run_at, ARGV[12], extra_fields(ARGV))
    ids[#ids + 1] = ARGV[i]
  end
end
if #ids == 0 then return 0 end
if state == 'scheduled' then
  local scored = {}
  for _, id in ipairs(ids) do
    scored[#scored + 1] = run_at
    scored[#scored + 1] = id
  end
  call_chunked('ZADD', KEYS[2], scored)
else
  -- LPUSH of a, b, c leaves c b a: the claim end (RPOP) gets them in order.
  call_chunked('LPUSH', KEYS[1], ids)
end
queued(KEYS[3], tonumber(ARGV[10]), #ids)
tenants_queued_as(KEYS[4], ARGV[12], ARGV[9], #ids)
return #ids
