-- workflow_step.lua: the fan-in. A node's job reached a final state ('done'), or someone asks
-- which nodes are ready ('kick': after the create, or a repair). Runs in the workflow's slot,
-- before the member's job is acknowledged.
-- 'done' records the node's outcome once: a second report of it (the job re-run after a crash
-- between this script and its ack) changes nothing, so each dependent's counter drops exactly
-- once per dependency, and of two members finishing at the same moment exactly one sees the
-- counter reach 0. With on_failure 'stop', a failure stops the workflow.
-- A ready node (waiting, counter 0) is answered to the caller, which pushes its job under an id
-- derived from the workflow and the node (a second push finds the first job) and then marks it
-- queued (workflow_queued.lua). It is answered every time until then, so a caller that died
-- between this script and the push is replaced by the member's re-run or the repair sweep.
-- KEYS[1] the workflow's hash
-- ARGV: 1 'done' or 'kick', 2 node index, 3 its final state (succeeded|dead|cancelled),
--       4 its outcome (JSON), 5 its error ('' when none)
-- Returns {state, cancel, ready}: the workflow's state ('' when there is none), the
-- {index, task} of queued nodes to cancel, and per ready node {index, plan, then the pairs
-- (dependency index, its outcome)}.
local wf = KEYS[1]
if redis.call('EXISTS', wf) == 0 then return {'', {}, {}} end
local cancel, candidates = {}, {}
if ARGV[1] == 'done' then
  local p = 'n:' .. ARGV[2]
  local s = redis.call('HGET', wf, p .. ':s')
  -- (waiting: the job was pushed and finished before it was marked queued)
  if s == 'waiting' or s == 'queued' then
    redis.call('HSET', wf, p .. ':s', ARGV[3], p .. ':out', ARGV[4])
    if ARGV[5] ~= '' then redis.call('HSET', wf, p .. ':err', ARGV[5]) end
    redis.call('HINCRBY', wf, 'left', -1)
    for _, d in ipairs(wf_split(redis.call('HGET', wf, p .. ':next'))) do
      redis.call('HINCRBY', wf, 'n:' .. d .. ':w', -1)
    end
    if ARGV[3] ~= 'succeeded' then
      redis.call('HINCRBY', wf, 'failed', 1)
      if redis.call('HGET', wf, 'on_failure') == 'stop'
        and redis.call('HGET', wf, 'state') == 'running' then
        cancel = wf_stop(wf, 'failed')
      end
    end
  end
  candidates = wf_split(redis.call('HGET', wf, p .. ':next'))
else
  for i = 0, tonumber(redis.call('HGET', wf, 'nodes')) - 1 do candidates[#candidates + 1] = i end
end
local ready = {}
if redis.call('HGET', wf, 'state') == 'running' then
  for _, d in ipairs(candidates) do
    local p = 'n:' .. d
    local f = redis.call('HMGET', wf, p .. ':s', p .. ':w')
    if f[1] == 'waiting' and tonumber(f[2]) <= 0 then
      local entry = {tostring(d), redis.call('HGET', wf, p)}
      for _, dep in ipairs(wf_split(redis.call('HGET', wf, p .. ':deps'))) do
        entry[#entry + 1] = dep
        entry[#entry + 1] = redis.call('HGET', wf, 'n:' .. dep .. ':out') or 'null'
      end
      ready[#ready + 1] = entry
    end
  end
end
wf_finish_if_over(wf)
return {redis.call('HGET', wf, 'state'), cancel, ready}
