-- release.lua: give claimed-but-unstarted jobs back (or jobs a stopping handler gave up).
-- KEYS[1] worker's in-flight set  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- KEYS[5 ..] the jobs' hashes, in the order of their pairs
-- ARGV: 1 uncount ('1': the attempt never ran), 2.. (id, lease) pairs
-- Fenced: only jobs this worker still holds under that lease move. Released jobs go to the
-- claim end of their queue. Returns how many moved.
local n = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local key = KEYS[4 + i / 2]
  local f = redis.call('HMGET', key, 'state', 'lease')
  if take(KEYS[1], id, f[1], f[2], ARGV[i + 1]) then
    if ARGV[1] == '1' then redis.call('HINCRBY', key, 'attempts', -1) end
    requeue(key, id, KEYS[2], KEYS[3], KEYS[4])
    n = n + 1
  end
end
return n
