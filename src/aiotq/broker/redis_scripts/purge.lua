-- Remove every waiting entry of one queue: its schedule, and the entries of its lanes that
-- were never delivered (after the group's last delivered id; all of them without a group).
-- Entries delivered and not yet settled stay with their consumers.
--
-- KEYS: the schedule, then the lane streams. ARGV[1]: group.
-- Returns how many entries were removed.

local removed = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])

local function waiting_from(stream)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if groups.err then return nil end
  for _, info in ipairs(groups) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields.name == ARGV[1] then return '(' .. fields['last-delivered-id'] end
  end
  return '-'
end

for i = 2, #KEYS do
  local start = waiting_from(KEYS[i])
  while start do
    local batch = redis.call('XRANGE', KEYS[i], start, '+', 'COUNT', 500)
    if #batch == 0 then break end
    local ids = {}
    for j, entry in ipairs(batch) do ids[j] = entry[1] end
    redis.call('XDEL', KEYS[i], unpack(ids))
    removed = removed + #batch
    start = '(' .. ids[#ids]
  end
end
return removed
