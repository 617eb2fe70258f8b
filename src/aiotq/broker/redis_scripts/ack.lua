-- Settled entries leave the group and the stream together, so acked entries never pile up.
--
-- KEYS[1]: a lane stream. ARGV: group, entry ids.

redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
