-- whisper(nick_key, frame): publishes a whisper for whoever holds the
-- nick, on whichever node. Returns the nick as spelled, or 0 for nobody.
-- Whispers belong to no room: they carry no event number (and, like a
-- single server's, are not kept).
local holder = redis.call('HGET', P .. 'nick', ARGV[1])
if not holder then
  return 0
end
local a = string.find(holder, '|', 1, true)
local b = string.find(holder, '|', a + 1, true)
local node, conn, nick = string.sub(holder, 1, a - 1), string.sub(holder, a + 1, b - 1),
  string.sub(holder, b + 1)
redis.call('PUBLISH', P .. 'bus', 'w\n\n\n0\n' .. node .. '\n' .. conn .. '\n' .. ARGV[2])
return nick
