-- repair(room, after): the room's events after event number `after`, for a
-- node that missed some. Returns { last ev, 'ok', payload… } when every
-- one is still kept, { last ev, 'lost' } when some were trimmed (or the
-- room was forgotten: last ev -1).
local key = P .. 'room:' .. ARGV[1]
local last = tonumber(redis.call('HGET', key, 'ev'))
local after = tonumber(ARGV[2])
if not last then
  return { -1, 'lost' }
end
if after >= last then
  return { last, 'ok' }
end
local evs = P .. 'evs:' .. ARGV[1]
local first = last - redis.call('LLEN', evs) + 1
if after + 1 < first then
  return { last, 'lost' }
end
local out = { last, 'ok' }
for _, p in ipairs(redis.call('LRANGE', evs, after + 1 - first, -1)) do
  table.insert(out, p)
end
return out
