-- Store one state of a task, atomically: the newest state under Celery's key (published on
-- the channel of that name, as Celery's own backend does), and the state history stream.
-- Both expire together, so neither outlives the other.
--
-- KEYS[1]: celery-task-meta-<id>. KEYS[2]: the state stream.
-- ARGV: serialized meta, time to live in ms (0: forever), most states kept.

local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 's', ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[2])
end
return redis.call('PUBLISH', KEYS[1], ARGV[1])
