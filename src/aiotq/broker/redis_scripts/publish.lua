-- Publish a batch of messages in one call: each goes to a lane stream, or, when its ETA is
-- beyond the horizon, to the queue's schedule (a sorted set scored by the ETA).
--
-- KEYS: the target key of each message (lane stream or schedule), in order.
-- ARGV: for each message three values: "x" or "z", the ETA score ("" for "x"), the payload
-- (the packed frame for "x"; the schedule member for "z").

for i = 1, #KEYS do
  local kind, score, payload = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  if kind == 'x' then
    redis.call('XADD', KEYS[i], '*', 'm', payload)
  else
    redis.call('ZADD', KEYS[i], score, payload)
  end
end
return #KEYS
