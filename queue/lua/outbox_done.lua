-- outbox_done.lua: remove handled entries from the head of an outbox, only while they are
-- still there in that order (another reader may have removed them already: then nothing
-- more is removed, and no entry that was not handled ever is).
-- KEYS[1] the outbox (list, oldest at the head)
-- ARGV: the handled entries, oldest first
-- Returns how many were removed.
local head = redis.call('LRANGE', KEYS[1], 0, #ARGV - 1)
local removed = 0
while removed < #ARGV and head[removed + 1] == ARGV[removed + 1] do removed = removed + 1 end
if removed > 0 then redis.call('LTRIM', KEYS[1], removed, -1) end
return removed
