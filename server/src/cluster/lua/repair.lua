-- repair(room, epoch, after): the room's events after event number `after`
-- of incarnation `epoch` ('' when the node does not know it yet), for a
-- node that missed some. Returns { 'ok', epoch, payload… } when every one
-- is still kept, { 'lost' } when some were trimmed, or the room was
-- forgotten or re-created meanwhile.
local key = P .. 'room:' .. ARGV[1]
local last = tonumber(redis.call('HGET', key, 'ev'))
local epoch = redis.call('HGET', key, 'epoch')
local after = tonumber(ARGV[3])
if not last or (ARGV[2] ~= '' and ARGV[2] ~= epoch) then
  return { 'lost' }
end
if after >= last then
  return { 'ok', epoch }
end
local evs = P .. 'evs:' .. ARGV[1]
local first = last - redis.call('LLEN', evs) + 1
if after + 1 < first then
  return { 'lost' }
end
local out = { 'ok', epoch }
for _, p in ipairs(redis.call('LRANGE', evs, after + 1 - first, -1)) do
  table.insert(out, p)
end
return out
