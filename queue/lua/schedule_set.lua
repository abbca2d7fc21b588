-- schedule_set.lua: stores, pauses, resumes or removes one schedule, with its place in its
-- task's schedule zset, in one step (a scheduler never sees a definition without its tick or
-- a tick without its definition).
-- KEYS[1] the task's schedules (zset: id -> next tick, ms)  KEYS[2] the definition (string)
-- KEYS[3] the schedule's runs (list)
-- ARGV: 1 schedule id, 2 mode: 'create' (only when absent), 'update' (only when present),
--       'remove'; 3 the definition (JSON), 4 the next tick ('' when none: paused, or never)
-- Returns 1 when done, 0 when 'create' found it present or 'update'/'remove' found it absent.
local id, mode = ARGV[1], ARGV[2]
local exists = redis.call('EXISTS', KEYS[2]) == 1
if mode == 'remove' then
  if not exists then return 0 end
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[1], id)
  return 1
end
if (mode == 'create' and exists) or (mode == 'update' and not exists) then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], id)
else
  redis.call('ZADD', KEYS[1], ARGV[4], id)
end
return 1
