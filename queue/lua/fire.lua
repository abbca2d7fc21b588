-- fire.lua: one due tick of a schedule, handled exactly once. A scheduler read the tick due
-- (the schedule's score) and worked out, in Rust, which tick to handle, whether it fires and
-- the tick after it; this script commits that only while the score is still the tick it read
-- (compare and set) and the tick is due on Redis' clock. Two schedulers that read the same
-- tick race here: the first moves the score on, the second finds it moved and does nothing.
-- Firing the job, moving the schedule on and recording the run are one step, so a scheduler
-- killed at any point leaves either all of it or none of it.
-- KEYS[1] the task's schedules (zset: id -> next tick, ms)  KEYS[2] the schedule's runs (list)
--      then the keys of push.lua (PUSH_KEYS: the job of this tick)
-- ARGV: 1 schedule id, 2 the tick read as due, 3 the next tick ('' when none), 4 the run entry
--       (JSON, recorded newest first), 5 runs kept, 6 '1' to submit the job ('0': skipped),
--       then the arguments of push.lua (PUSH_ARGS)
-- Returns {1, created (1, or 0 when the tick's job existed)} when handled, {0} when another
-- scheduler handled it first (or it was paused, removed or is not due yet).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) or tonumber(ARGV[2]) > now_ms() then
  return {0}
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
local created = 0
if ARGV[6] == '1' then
  local K, A = {}, {}
  for i = 1, PUSH_KEYS do K[i] = KEYS[2 + i] end
  for i = 1, PUSH_ARGS do A[i] = ARGV[6 + i] end
  -- (a schedule's jobs pass no tenant cap: push_job cannot refuse them)
  created = push_job(K, A)[2]
end
redis.call('LPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return {1, created}
