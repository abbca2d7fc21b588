-- intake.lua: move messages from foreign Redis lists (a Celery producer's kombu lists) into
-- new pending jobs of one queue, atomically: a message leaves its list in the same script
-- that makes it a job, so none is ever in neither place (kombu's own BRPOP-then-HSET has
-- such a window).
-- KEYS[1] the queue's pending list  KEYS[2] its wake list  KEYS[3] unfinished jobs per tenant
-- KEYS[4 .. 3+L] the foreign lists, most urgent first: taken in this order, each from its
--   right end (its oldest message, as kombu's consumers take them)
-- KEYS[4+L ..] one job hash key per message that may be moved (fresh ids: ARGV[8 ..])
-- ARGV: 1 L, 2 lookahead (move nothing more while the pending list holds this many),
--       3 the queue's name (the jobs' kind), 4 max_attempts, 5 tenant, 6 wake cap,
--       7 the source's name, put in each job's args, 8 .. the fresh ids
-- Each job's args: {"source": ARGV[7], "message": <the message as it was>}.
-- Returns the number of messages moved, or -1 when the pending list already holds the
-- lookahead (nothing is moved then).
local lists = tonumber(ARGV[1])
local room = tonumber(ARGV[2]) - redis.call('LLEN', KEYS[1])
if room <= 0 then return -1 end
local ids = #ARGV - 7
if room > ids then room = ids end
local now = now_ms()
local moved = 0
for l = 4, 3 + lists do
  while moved < room do
    local message = redis.call('RPOP', KEYS[l])
    if not message then break end
    moved = moved + 1
    local id = ARGV[7 + moved]
    local args = cjson.encode({source = ARGV[7], message = message})
    new_job(KEYS[3 + lists + moved], id, args, ARGV[3], ARGV[4], now, 'pending', 'normal', 0,
      ARGV[5])
    redis.call('LPUSH', KEYS[1], id)
  end
end
if moved > 0 then queued(KEYS[2], tonumber(ARGV[6]), KEYS[3], ARGV[5], moved) end
return moved
