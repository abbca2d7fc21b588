-- declare.lua: declare a task in the registry, refusing what would contradict it.
-- KEYS[1] registry hash (task name -> definition JSON)
-- ARGV: 1 name, 2 definition JSON, 3 version, 4 schema digest ('' without a schema),
--       5 owning tenant ('' for a task open to every tenant)
-- Returns {outcome, detail}:
--   {'declared', ''}        stored (first declaration, a newer version, or the same again)
--   {'older', version}      a newer version is in force; it stays
--   {'conflict', digest}    this version is in force with another schema (its digest)
--   {'owned', tenant}       the name belongs to another owner ('' = open to every tenant)
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, cur = pcall(cjson.decode, current)
  if ok and type(cur) == 'table' then
    local owner = cur.tenant
    if type(owner) ~= 'string' then owner = '' end
    if owner ~= ARGV[5] then return {'owned', owner} end
    local version = tonumber(cur.version) or 0
    local wanted = tonumber(ARGV[3])
    if version > wanted then return {'older', tostring(version)} end
    local digest = cur.schema_digest
    if type(digest) ~= 'string' then digest = '' end
    if version == wanted and digest ~= ARGV[4] then return {'conflict', digest} end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'declared', ''}
