-- cancel.lua: cancel a job. A waiting job is cancelled at once; a running one
-- gets a cancel request its worker sees at its next heartbeat (cooperative).
-- KEYS[1] job hash  KEYS[2] scheduled zset  KEYS[3] cancel-request set  KEYS[4] done zset
-- KEYS[5] unfinished jobs per tenant (hash)
-- ARGV: 1 id
-- Returns the job's state after the call ('cancelled', 'cancelling', or a final
-- state it already had), or '' when there is no such job.
local st = redis.call('HGET', KEYS[1], 'state')
local now = now_ms()
if not st then return '' end
if st == 'pending' or st == 'scheduled' or st == 'retrying' then
  -- A pending id stays in its list; claims skip ids that are not pending.
  redis.call('ZREM', KEYS[2], ARGV[1])
  finish_cancelled(KEYS[1], ARGV[1], KEYS[4], KEYS[5], now)
  return 'cancelled'
end
if st == 'running' then
  redis.call('SADD', KEYS[3], ARGV[1])
  return 'cancelling'
end
return st
