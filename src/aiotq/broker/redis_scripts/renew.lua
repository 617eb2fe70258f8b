-- The lease heartbeat: reset the idle time of the entries this consumer still owns, so no
-- other consumer takes them over. Entries another consumer owns by now are left alone.
--
-- KEYS[1]: a lane stream. ARGV: group, consumer, entry ids.
-- Returns the ids this consumer no longer owns.

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local claim, lost = {'XCLAIM', stream, group, consumer, 0}, {}
for i = 3, #ARGV do
  local pending = redis.pcall('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer)
  if pending.err or #pending == 0 then
    lost[#lost + 1] = ARGV[i]
  else
    claim[#claim + 1] = ARGV[i]
  end
end
if #claim > 5 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return lost
