-- connect(node, token, conn, wanted): a connection arrives, wanting a nick
-- ('' for none or an invalid one). Returns { nick, refusal } where refusal
-- is '' or 'nick_taken' (then the nick is a guest's). Error NOLEASE: this
-- life of the node does not hold the lease, and must not add state that
-- nobody would reap.
local node, token, conn, wanted = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not has_lease(node, token) then
  return redis.error_reply('NOLEASE')
end
local owner = node .. '|' .. conn .. '|'
local nick, refusal = nil, ''
if wanted ~= '' then
  if redis.call('HSETNX', P .. 'nick', string.lower(wanted), owner .. wanted) == 1 then
    nick = wanted
  else
    refusal = 'nick_taken'
  end
end
while not nick do
  local guest = 'guest-' .. int(redis.call('INCR', P .. 'guest'))
  if redis.call('HSETNX', P .. 'nick', guest, owner .. guest) == 1 then
    nick = guest
  end
end
redis.call('HSET', P .. 'conns:' .. node, conn, nick)
return { nick, refusal }
