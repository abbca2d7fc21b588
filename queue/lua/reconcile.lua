-- reconcile.lua: release the strays in a live worker's in-flight set: jobs it does not run
-- (a claim whose reply was lost, an ack or fail that gave up). Without this they would stay
-- `running` for as long as the worker heartbeats.
-- KEYS[1] worker's in-flight set  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- KEYS[5 ..] the candidates' hashes, in the order of their ids
-- ARGV: 1 worker id, 2 minimum age ms (a claim younger than this may still be on its way to
--       the worker), 3 C, then C candidates: members of the in-flight set, as the caller read
--       it just before, that the worker does not hold; then the ids the previous call found
--       taken by a claim's first step and not started
-- A candidate that left the set meanwhile is left alone. Strays go back to the claim end of
-- their queue with the attempt counted and a history entry saying why. A job a claim's first
-- step took (claim.lua) and its second has not started is a stray only when the previous call
-- (at least half a lease earlier) found it so too: its claim's second step never came.
-- Returns {the strays' ids, the ids found taken and not started (for the next call)}.
local now = now_ms()
local c = tonumber(ARGV[3])
local before = {}
for i = 4 + c, #ARGV do before[ARGV[i]] = true end
local strays, waiting = {}, {}
for i = 4, 3 + c do
  local id = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], id) == 1 then
    local key = KEYS[1 + i]
    local f = redis.call('HMGET', key, 'state', 'worker', 'started_at', 'attempts')
    if claimed_not_started(f[1]) then
      if before[id] then
        redis.call('SREM', KEYS[1], id)
        requeue(key, id, KEYS[2], KEYS[3], KEYS[4])
        strays[#strays + 1] = id
      else
        waiting[#waiting + 1] = id
      end
    elseif f[1] ~= 'running' or f[2] ~= ARGV[1] then
      redis.call('SREM', KEYS[1], id)
    elseif tonumber(f[3] or '0') < now - tonumber(ARGV[2]) then
      redis.call('SREM', KEYS[1], id)
      push_history(key, attempt_entry(f[4], ARGV[1], f[3], now, 'stranded',
        'claimed by worker ' .. ARGV[1] .. ' but not running there; released'))
      requeue(key, id, KEYS[2], KEYS[3], KEYS[4])
      strays[#strays + 1] = id
    end
  end
end
return {strays, waiting}
