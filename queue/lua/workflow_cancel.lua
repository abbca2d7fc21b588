-- workflow_cancel.lua: a client cancels a running workflow: nodes not started are skipped, and
-- the queued ones are answered for the caller to cancel (each then reports 'cancelled', or its
-- real outcome when it was finishing, through workflow_step.lua).
-- KEYS[1] the workflow's hash
-- Returns {state before, {index, task} of nodes to cancel}; state '' when there is none.
local wf = KEYS[1]
local state = redis.call('HGET', wf, 'state')
if not state then return {'', {}} end
if state ~= 'running' then return {state, {}} end
local cancel = wf_stop(wf, 'cancelled')
wf_finish_if_over(wf)
return {state, cancel}
