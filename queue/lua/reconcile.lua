-- reconcile.lua: release the strays in a live worker's in-flight set: jobs it does not run
-- (a claim whose reply was lost, an ack or fail that gave up). Without this they would stay
-- `running` for as long as the worker heartbeats.
-- KEYS[1] worker's in-flight set  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- ARGV: 1 job key prefix, 2 worker id, 3 minimum age ms (a claim younger than this may still
--       be on its way to the worker), 4.. ids the worker holds right now
-- Strays go back to the claim end of their queue with the attempt counted and a history
-- entry saying why. Returns their ids.
local now, held = now_ms(), {}
for i = 4, #ARGV do held[ARGV[i]] = true end
local strays = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not held[id] then
    local key = ARGV[1] .. id
    local f = redis.call('HMGET', key, 'state', 'worker', 'started_at', 'attempts')
    if f[1] ~= 'running' or f[2] ~= ARGV[2] then
      redis.call('SREM', KEYS[1], id)
    elseif tonumber(f[3] or '0') < now - tonumber(ARGV[3]) then
      redis.call('SREM', KEYS[1], id)
      push_history(key, attempt_entry(f[4], ARGV[2], f[3], now, 'stranded',
        'claimed by worker ' .. ARGV[2] .. ' but not running there; released'))
      requeue(key, id, KEYS[2], KEYS[3], KEYS[4])
      strays[#strays + 1] = id
    end
  end
end
return strays
