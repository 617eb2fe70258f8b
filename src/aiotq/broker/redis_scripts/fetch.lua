-- One fetch for one consumer, in one round trip: move due parked entries into their lanes,
-- take over entries of dead consumers (when asked), then read new entries, highest lane of
-- every queue first.
--
-- KEYS: per queue, its schedule (sorted set) then its lane streams, lowest lane first.
-- ARGV: group, consumer, count, now, lanes per queue, claim idle ms (0: no claiming),
--       most entries promoted per queue, then one XAUTOCLAIM cursor per lane key.
-- Returns {entries, next due score or false, tail ids or {}, cursors or {}} where entries
-- is flat: key index, entry id, fields, times delivered. Tail ids (the newest id of each
-- lane key, for a blocking XREAD) are only returned when nothing was found.

local group, consumer = ARGV[1], ARGV[2]
local wanted = tonumber(ARGV[3])
local now = ARGV[4]
local lanes = tonumber(ARGV[5])
local claim_idle = tonumber(ARGV[6])
local promote_limit = tonumber(ARGV[7])
local stride = lanes + 1
local queues = #KEYS / stride
local entries, found, cursors = {}, 0, {}

-- Every lane stream gets the group on first use, and again after a restart lost it.
local function grouped(key, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    local missing = string.find(reply.err, 'NOGROUP', 1, true)
      or string.find(reply.err, 'no such key', 1, true)
    if not missing then error(reply) end
    redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
    reply = redis.call(...)
  end
  return reply
end

local function promote(base)
  local schedule = KEYS[base]
  local due = redis.call('ZRANGE', schedule, '-inf', now, 'BYSCORE', 'LIMIT', 0, promote_limit)
  for _, member in ipairs(due) do
    local lane = math.min(tonumber(string.sub(member, 1, 3)), lanes - 1)
    redis.call('XADD', KEYS[base + 1 + lane], '*', 'm', string.sub(member, 20))
    redis.call('ZREM', schedule, member)
  end
  return redis.call('ZRANGE', schedule, 0, 0, 'WITHSCORES')[2]
end

local function add(index, id, fields, times)
  entries[#entries + 1] = index
  entries[#entries + 1] = id
  entries[#entries + 1] = fields
  entries[#entries + 1] = times
  found = found + 1
end

local function claim(index, slot)
  local key = KEYS[index]
  local reply = grouped(key, 'XAUTOCLAIM', key, group, consumer, claim_idle, cursors[slot],
                        'COUNT', wanted - found)
  cursors[slot] = reply[1]
  for _, entry in ipairs(reply[2]) do
    if entry[2] then
      local pending = redis.call('XPENDING', key, group, entry[1], entry[1], 1)
      add(index, entry[1], entry[2], pending[1][4])
    end
  end
end

-- Consumers that hold nothing and were idle past the lease are forgotten (crashed workers);
-- a live one is re-created by its next read.
local function forget_idle(key)
  for _, info in ipairs(grouped(key, 'XINFO', 'CONSUMERS', key, group)) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields.pending == 0 and fields.idle > claim_idle and fields.name ~= consumer then
      redis.call('XGROUP', 'DELCONSUMER', key, group, fields.name)
    end
  end
end

local function read(index)
  local key = KEYS[index]
  local reply = grouped(key, 'XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted - found,
                        'STREAMS', key, '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do add(index, entry[1], entry[2], 1) end
  end
end

local next_due = false
for q = 0, queues - 1 do
  local due = promote(q * stride + 1)
  if due and (not next_due or tonumber(due) < tonumber(next_due)) then next_due = due end
end

for lane = lanes - 1, 0, -1 do
  for q = 0, queues - 1 do
    local index = q * stride + 2 + lane
    if claim_idle > 0 then
      local slot = q * lanes + lane + 1
      cursors[slot] = ARGV[7 + slot]
      if found < wanted then claim(index, slot) end
      forget_idle(KEYS[index])
    end
    if found < wanted then read(index) end
  end
end

local tails = {}
if found == 0 then
  for q = 0, queues - 1 do
    for lane = 0, lanes - 1 do
      local newest = redis.call('XREVRANGE', KEYS[q * stride + 2 + lane], '+', '-', 'COUNT', 1)
      tails[#tails + 1] = newest[1] and newest[1][1] or '0-0'
    end
  end
end
return {entries, next_due, tails, cursors}
