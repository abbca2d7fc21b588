-- progress.lua: stores a running attempt's progress report (JSON text) in its job hash, field
-- `progress`, fenced like ack.lua: only the attempt that holds the job under its lease writes.
-- KEYS: job hash, in-flight set of the attempt's worker
-- ARGV: id, lease, progress JSON
-- Returns 1 stored, 0 the attempt no longer holds the job (nothing written), -1 no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if not holds(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
return 1
