-- release.lua: give claimed-but-unstarted (or abandoned at shutdown) jobs back.
-- KEYS[1] worker's in-flight set  KEYS[2] pending:high  KEYS[3] pending  KEYS[4] wake list
-- ARGV: 1 job key prefix, 2 uncount ('1': the attempt never ran), 3.. ids
-- Released jobs go to the front of their queue.
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('SREM', KEYS[1], id) == 1 then
    local key = ARGV[1] .. id
    if redis.call('HGET', key, 'state') == 'running' then
      if ARGV[2] == '1' then redis.call('HINCRBY', key, 'attempts', -1) end
      redis.call('HSET', key, 'state', 'pending')
      if redis.call('HGET', key, 'priority') == 'high' then
        redis.call('RPUSH', KEYS[2], id)
      else
        redis.call('RPUSH', KEYS[3], id)
      end
      redis.call('LPUSH', KEYS[4], '1')
      n = n + 1
    end
  end
end
return n
