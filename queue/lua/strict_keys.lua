-- strict_keys.lua: the key rule, enforced. Every key a queue script touches must be declared in
-- KEYS (a cluster-aware proxy, or a future Redis, refuses a script that builds its own keys).
-- With HOPPER_LUA_STRICT_KEYS=1, scripts.rs puts this file in front of a script (before
-- prelude.lua), after a line naming the script (`local STRICT_SCRIPT = '<name>'`): a local
-- `redis` then shadows the global one for the rest of the script, and its call and pcall raise
-- `undeclared key <k> in <name>` for a key argument that is not in KEYS. Each command a queue
-- script runs is classified here by where its keys are; a command not classified is an error
-- too, so a script that starts using one must classify it first. Scripts keep their text (and
-- SHA) when the mode is off: this is only ever a different, longer script.
local STRICT_DECLARED = {}
for _, k in ipairs(KEYS) do STRICT_DECLARED[k] = true end
-- Commands whose only key is their first argument.
local STRICT_FIRST = {}
for _, c in ipairs({'APPEND', 'DECR', 'DECRBY', 'EXPIRE', 'EXPIREAT', 'GET', 'GETDEL', 'GETSET',
  'HDEL', 'HEXISTS', 'HGET', 'HGETALL', 'HINCRBY', 'HINCRBYFLOAT', 'HKEYS', 'HLEN', 'HMGET',
  'HMSET', 'HSCAN', 'HSET', 'HSETNX', 'HVALS', 'INCR', 'INCRBY', 'LINDEX', 'LINSERT', 'LLEN',
  'LPOP', 'LPOS', 'LPUSH', 'LRANGE', 'LREM', 'LSET', 'LTRIM', 'PERSIST', 'PEXPIRE',
  'PEXPIREAT', 'PSETEX', 'PTTL', 'RPOP', 'RPUSH', 'SADD', 'SCARD', 'SET', 'SETEX', 'SETNX',
  'SISMEMBER', 'SMEMBERS', 'SMISMEMBER', 'SPOP', 'SRANDMEMBER', 'SREM', 'SSCAN', 'STRLEN', 'TTL',
  'TYPE', 'ZADD', 'ZCARD', 'ZCOUNT', 'ZINCRBY', 'ZLEXCOUNT', 'ZMSCORE', 'ZPOPMAX', 'ZPOPMIN',
  'ZRANGE', 'ZRANGEBYLEX', 'ZRANGEBYSCORE', 'ZRANK', 'ZREM', 'ZREMRANGEBYLEX',
  'ZREMRANGEBYRANK', 'ZREMRANGEBYSCORE', 'ZREVRANGE', 'ZREVRANGEBYSCORE', 'ZREVRANK', 'ZSCAN',
  'ZSCORE'}) do STRICT_FIRST[c] = true end
-- Commands whose every argument is a key.
local STRICT_ALL = {DEL = true, EXISTS = true, MGET = true, SDIFF = true, SDIFFSTORE = true,
  SINTER = true, SINTERSTORE = true, SUNION = true, SUNIONSTORE = true, TOUCH = true,
  UNLINK = true}
-- Commands whose first two arguments are keys.
local STRICT_TWO = {LMOVE = true, RPOPLPUSH = true, SMOVE = true, RENAME = true}
-- Commands that take no key.
local STRICT_NONE = {TIME = true, PING = true, ECHO = true}
local STRICT_REDIS = redis
local STRICT_AT_FIRST, STRICT_AT_NONE = {2}, {}
-- The positions in `args` (the command's name first) that hold keys.
local function strict_key_positions(cmd, args)
  if STRICT_FIRST[cmd] then return STRICT_AT_FIRST end
  if STRICT_NONE[cmd] then return STRICT_AT_NONE end
  local at = {}
  if STRICT_ALL[cmd] then
    for i = 2, #args do at[#at + 1] = i end
  elseif STRICT_TWO[cmd] then
    at = {2, 3}
  elseif cmd == 'ZUNIONSTORE' or cmd == 'ZINTERSTORE' or cmd == 'ZDIFFSTORE' then
    -- destination, numkeys, then the keys
    at = {2}
    for i = 4, 3 + (tonumber(args[3]) or 0) do at[#at + 1] = i end
  else
    error('unclassified command ' .. cmd .. ' in ' .. STRICT_SCRIPT ..
      ' (classify its keys in strict_keys.lua)', 4)
  end
  return at
end
-- Raises unless every key the command `args` names is declared.
local function strict_keys(args)
  for _, i in ipairs(strict_key_positions(string.upper(tostring(args[1])), args)) do
    local key = tostring(args[i])
    if not STRICT_DECLARED[key] then
      error('undeclared key ' .. key .. ' in ' .. STRICT_SCRIPT, 3)
    end
  end
end
local redis = setmetatable({
  call = function(...)
    strict_keys({...})
    return STRICT_REDIS.call(...)
  end,
  pcall = function(...)
    strict_keys({...})
    return STRICT_REDIS.pcall(...)
  end,
}, {__index = STRICT_REDIS})
