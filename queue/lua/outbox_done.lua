-- outbox_done.lua: remove handled entries from the head of an outbox, only while they are
-- still there in that order (another reader may have removed them already: then nothing
-- more is removed, and no entry that was not handled ever is).
-- KEYS[1] the outbox (list, oldest at the head)
-- ARGV: the handled entries, oldest first
-- Returns how many were removed.
local removed = 0
for i = 1, #ARGV do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
  removed = removed + 1
end
return removed
