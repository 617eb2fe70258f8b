-- Settle one delivered entry other than by ack, atomically, if this consumer still owns it:
--   release: back to the tail of its lane, keeping its delivery count (not an attempt);
--   defer:   into the queue's schedule until its ETA;
--   dead:    into the queue's dead-letter stream, with the reason.
--
-- KEYS[1]: the lane stream. KEYS[2]: the target (the lane, the schedule, the dead letters).
-- ARGV: group, consumer, id, action, then
--   release: deliveries so far;  defer: score, member prefix;  dead: reason, time, cap.
-- Returns 1 when settled, 0 when the entry is no longer this consumer's.

local stream, target = KEYS[1], KEYS[2]
local group, consumer, id, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local pending = redis.pcall('XPENDING', stream, group, id, id, 1, consumer)
if pending.err or #pending == 0 then return 0 end

local entry = redis.call('XRANGE', stream, id, id)[1]
local fields = entry and entry[2] or {}
local frame
for i = 1, #fields, 2 do
  if fields[i] == 'm' then frame = fields[i + 1] end
end

if action == 'release' then
  if frame then redis.call('XADD', target, '*', 'm', frame, 'n', ARGV[5]) end
elseif action == 'defer' then
  if frame then redis.call('ZADD', target, ARGV[5], ARGV[6] .. frame) end
else
  redis.call('XADD', target, 'MAXLEN', '~', ARGV[7], '*', 'reason', ARGV[5], 'time', ARGV[6],
             'raw', frame or cmsgpack.pack(fields))
end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
return 1
