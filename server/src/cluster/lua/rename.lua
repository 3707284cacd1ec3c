-- rename(node, conn, nick, kept, room…): a connection takes another nick;
-- each of its rooms hears `rename` in its order. Returns { 'taken' },
-- { 'gone' } (the node was reaped), or { 'ok', room, ev, epoch, … }.
local node, conn, nick, kept = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local old = redis.call('HGET', P .. 'conns:' .. node, conn)
if not old then
  return { 'gone' }
end
local owner = node .. '|' .. conn .. '|'
local holder = redis.call('HGET', P .. 'nick', string.lower(nick))
if holder and string.sub(holder, 1, #owner) ~= owner then
  return { 'taken' }
end
if old == nick then
  return { 'ok' }
end
free_nick(node, conn, old)
redis.call('HSET', P .. 'nick', string.lower(nick), owner .. nick)
redis.call('HSET', P .. 'conns:' .. node, conn, nick)
local out = { 'ok' }
for i = 5, #ARGV do
  local room = ARGV[i]
  local mem = P .. 'mem:' .. room
  if redis.call('HEXISTS', mem, node .. '|' .. conn) == 1 then
    redis.call('HSET', mem, node .. '|' .. conn, nick)
    local ev, epoch = emit(room, 'r', node, conn, presence(room, 'rename', nick, old), kept)
    table.insert(out, room)
    table.insert(out, ev)
    table.insert(out, epoch)
  end
end
return out
