-- disconnect(node, conn, max_rooms, kept, room…): a connection is gone:
-- it leaves the rooms it was in (each hears `leave`) and its nick is
-- freed. Harmless to repeat, and after a reap.
local node, conn = ARGV[1], ARGV[2]
local max_rooms, kept = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV do
  exit_room(ARGV[i], node, conn, max_rooms, kept)
end
local nick = redis.call('HGET', P .. 'conns:' .. node, conn)
if nick then
  free_nick(node, conn, nick)
  redis.call('HDEL', P .. 'conns:' .. node, conn)
end
return 1
