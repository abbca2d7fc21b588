-- workflow_queued.lua: nodes whose jobs were pushed become queued (unless they already ended).
-- KEYS[1] the workflow's hash
-- ARGV: (node index, job id) pairs
-- Returns the {index, task} of nodes skipped meanwhile (the workflow stopped between the
-- step and the push): their fresh jobs are the caller's to cancel.
local wf = KEYS[1]
local cancel = {}
if redis.call('EXISTS', wf) == 0 then return cancel end
for i = 1, #ARGV, 2 do
  local p = 'n:' .. ARGV[i]
  local s = redis.call('HGET', wf, p .. ':s')
  redis.call('HSET', wf, p .. ':job', ARGV[i + 1])
  if s == 'waiting' then
    redis.call('HSET', wf, p .. ':s', 'queued')
  elseif s == 'skipped' then
    cancel[#cancel + 1] = {ARGV[i], redis.call('HGET', wf, p .. ':t')}
  end
end
return cancel
