-- intake.lua: turn messages at the old end of foreign Redis lists (a Celery producer's kombu
-- lists) into jobs, atomically: each message leaves its list in the same script that pushes
-- its job, so none is ever in neither place (kombu's own BRPOP-then-HSET has such a window)
-- and none makes two jobs. The caller peeked the messages (LRANGE) and worked out each one's
-- job; a message no longer at its list's old end (another reader took it) stops the batch
-- (what was popped instead goes back where it was, in the same atomic step).
-- KEYS[1 .. L] the foreign lists; then, per message, the keys of push.lua (PUSH_KEYS)
-- ARGV: 1 L, then per message: the index (1 .. L) of its list, the message as peeked, then
--       the arguments of push.lua (PUSH_ARGS)
-- Returns {taken, then per message taken: its job's id, created (1, or 0 when it existed)}.
local lists = tonumber(ARGV[1])
local out = {0}
local k, a = lists + 1, 2
-- Wake tokens and tenants' counts are added once per queue after the loop.
local deferred = {}
while a <= #ARGV do
  local list = KEYS[tonumber(ARGV[a])]
  local taken = redis.call('RPOP', list)
  if taken ~= ARGV[a + 1] then
    -- Another reader took the peeked message: put back what came instead, untouched.
    if taken then redis.call('RPUSH', list, taken) end
    break
  end
  local K, A = {}, {}
  for i = 1, PUSH_KEYS do K[i] = KEYS[k + i - 1] end
  for i = 1, PUSH_ARGS do A[i] = ARGV[a + 1 + i] end
  local pushed = push_job(K, A, deferred)
  if pushed[2] == 2 then
    -- A unique job's holder changed since the caller read it: the message goes back, and the
    -- batch stops (the caller reads the holder again).
    redis.call('RPUSH', list, taken)
    break
  end
  out[1] = out[1] + 1
  out[#out + 1] = pushed[1]
  out[#out + 1] = pushed[2]
  k, a = k + PUSH_KEYS, a + 2 + PUSH_ARGS
end
flush_queued(deferred)
return out
