-- workflow_lib.lua: what every workflow script shares (after prelude.lua). A workflow is one
-- hash, {<prefix>:wf:<id>}, so each script touches one slot:
--   tenant, name, on_failure, state (running|succeeded|failed|cancelled), created_at,
--   finished_at, retention (ms kept once finished), output (the result's template, JSON),
--   nodes (count), left (nodes not final), failed (nodes that failed)
--   n:<i>        the node's plan (JSON: task, args, input, max_attempts, path)
--   n:<i>:t      its task          n:<i>:s  its state (waiting|queued|succeeded|dead|cancelled|skipped)
--   n:<i>:w      dependencies not yet final (the fan-in counter)
--   n:<i>:deps   the nodes it waits for (comma-separated)   n:<i>:next  the nodes waiting for it
--   n:<i>:out    its outcome as its dependents see it (JSON)  n:<i>:err  why it failed
--   n:<i>:job    its job's id, once pushed

local function wf_split(s)
  local t = {}
  if s then
    for x in string.gmatch(s, '[^,]+') do t[#t + 1] = x end
  end
  return t
end

-- Stops a running workflow as `state` (failed, cancelled): waiting nodes are skipped; answers
-- the queued ones, {index, task} pairs, for the caller to cancel.
local function wf_stop(wf, state)
  redis.call('HSET', wf, 'state', state)
  local cancel, skipped = {}, 0
  for i = 0, tonumber(redis.call('HGET', wf, 'nodes')) - 1 do
    local p = 'n:' .. i
    local s = redis.call('HGET', wf, p .. ':s')
    if s == 'waiting' then
      redis.call('HSET', wf, p .. ':s', 'skipped')
      skipped = skipped + 1
    elseif s == 'queued' then
      cancel[#cancel + 1] = {tostring(i), redis.call('HGET', wf, p .. ':t')}
    end
  end
  if skipped > 0 then redis.call('HINCRBY', wf, 'left', -skipped) end
  return cancel
end

-- Once every node is final: the workflow's own final state, its finish time, its expiry.
local function wf_finish_if_over(wf)
  if tonumber(redis.call('HGET', wf, 'left')) > 0 or redis.call('HEXISTS', wf, 'finished_at') == 1
  then return end
  if redis.call('HGET', wf, 'state') == 'running' then
    local failed = tonumber(redis.call('HGET', wf, 'failed')) > 0
    redis.call('HSET', wf, 'state', failed and 'failed' or 'succeeded')
  end
  redis.call('HSET', wf, 'finished_at', now_ms())
  redis.call('PEXPIRE', wf, tonumber(redis.call('HGET', wf, 'retention')))
end
