-- The partition record of one queue: how many partitions pushes spread over
-- now ("current") and the most it ever had ("high": claims and lookups cover
-- them all, so a queue made smaller loses nothing). See partitions.rs.
--
-- KEYS[1]  HASH  queue -> "<current>,<high>"
-- ARGV[1]  the queue
-- ARGV[2]  the partition count configured in the calling process
-- ARGV[3]  "set": make ARGV[2] the current count (the operator's change);
--          "check": record ARGV[2] if the queue has no record yet (a count
--          of 1 needs none), then answer the record
-- Returns {current, high}.
local rec = redis.call('HGET', KEYS[1], ARGV[1])
local asked = tonumber(ARGV[2])
if not rec then
  if asked > 1 or ARGV[3] == 'set' then
    redis.call('HSET', KEYS[1], ARGV[1], asked .. ',' .. asked)
  end
  return {asked, asked}
end
local current, high = string.match(rec, '^(%d+),(%d+)$')
current, high = tonumber(current), tonumber(high)
if ARGV[3] == 'set' then
  current = asked
  if asked > high then high = asked end
  redis.call('HSET', KEYS[1], ARGV[1], current .. ',' .. high)
end
return {current, high}
