-- Store the states of several tasks, atomically: for each, the newest state under Celery's
-- key (published on the channel of that name, as Celery's own backend does), and the state
-- history stream. Both expire together, so neither outlives the other. One call carries a
-- whole batch: a worker finishing many tasks at once pays one round trip.
--
-- KEYS: celery-task-meta-<id>, its state stream; then the same for the next task, ...
-- ARGV[1]: time to live in ms (0: forever). ARGV[2]: most states kept per task.
-- ARGV[3..]: one serialized meta per task, in the order of KEYS.

local ttl = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local meta_key, states_key, meta = KEYS[i], KEYS[i + 1], ARGV[2 + (i + 1) / 2]
  if ttl > 0 then
    redis.call('SET', meta_key, meta, 'PX', ttl)
  else
    redis.call('SET', meta_key, meta)
  end
  redis.call('XADD', states_key, 'MAXLEN', ARGV[2], '*', 's', meta)
  if ttl > 0 then
    redis.call('PEXPIRE', states_key, ttl)
  else
    redis.call('PERSIST', states_key)
  end
  redis.call('PUBLISH', meta_key, meta)
end
return #KEYS / 2
