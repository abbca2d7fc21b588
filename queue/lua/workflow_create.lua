-- workflow_create.lua: stores a planned workflow, every node waiting. The caller then runs
-- workflow_step.lua in 'kick' mode to learn the nodes that wait for nothing and pushes them.
-- KEYS[1] the workflow's hash
-- ARGV: 1 tenant, 2 on_failure, 3 name, 4 node count, 5 output template (JSON), 6 retention ms,
--       then per node: plan (JSON), task, deps (comma-separated), dependents (comma-separated)
-- Returns 1, or 0 when a workflow of that id exists.
local wf = KEYS[1]
if redis.call('EXISTS', wf) == 1 then return 0 end
local n = tonumber(ARGV[4])
redis.call('HSET', wf, 'tenant', ARGV[1], 'on_failure', ARGV[2], 'name', ARGV[3], 'nodes', n,
  'left', n, 'failed', 0, 'state', 'running', 'created_at', now_ms(), 'output', ARGV[5],
  'retention', ARGV[6])
local fields = {}
for i = 0, n - 1 do
  local a, p = 7 + 4 * i, 'n:' .. i
  local deps = ARGV[a + 2]
  local fields_of = {p, ARGV[a], p .. ':t', ARGV[a + 1], p .. ':s', 'waiting',
    p .. ':w', #wf_split(deps), p .. ':deps', deps, p .. ':next', ARGV[a + 3]}
  for _, f in ipairs(fields_of) do fields[#fields + 1] = f end
  if #fields >= 1200 then
    redis.call('HSET', wf, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then redis.call('HSET', wf, unpack(fields)) end
return 1
