-- join(node, token, conn, room, nonce, since, epoch, reply_default, kept):
-- a connection joins a room (created, with a new epoch, if unknown). A
-- re-join changes nothing and gets the same reply. The history follows
-- the rules of a single server (server/src/room.rs `history_since`):
-- since '' when not given; epoch '' when not given, else '=' and the
-- epoch the client sent (which may itself be empty). Returns { 'ok', ev, seq, epoch,
-- complete (0/1), member count, nick…, frame… }, { 'gone' } (the node was
-- reaped), or error NOLEASE.
local node, token, conn, room, nonce = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local since, want_epoch = tonumber(ARGV[6]), ARGV[7]
local reply_default, kept = tonumber(ARGV[8]), tonumber(ARGV[9])
if not has_lease(node, token) then
  return redis.error_reply('NOLEASE')
end
local nick = redis.call('HGET', P .. 'conns:' .. node, conn)
if not nick then
  return { 'gone' }
end
local key = P .. 'room:' .. room
if redis.call('EXISTS', key) == 0 then
  local epoch = nonce .. '.' .. int(redis.call('INCR', P .. 'epochs'))
  redis.call('HSET', key, 'seq', 0, 'ev', 0, 'epoch', epoch)
end
local mem = P .. 'mem:' .. room
local field = node .. '|' .. conn
local ev
if redis.call('HEXISTS', mem, field) == 0 then
  redis.call('ZREM', P .. 'empty', room)
  redis.call('HSET', mem, field, nick)
  redis.call('HINCRBY', P .. 'active', room, 1)
  redis.call('SADD', P .. 'in:' .. node, conn .. '|' .. room)
  ev = emit(room, 'j', node, conn, presence(room, 'join', nick), kept)
else
  ev = tonumber(redis.call('HGET', key, 'ev'))
end
local seq = tonumber(redis.call('HGET', key, 'seq'))
local epoch = redis.call('HGET', key, 'epoch')
local hist = P .. 'hist:' .. room
local held = redis.call('LLEN', hist)
-- The history list holds seqs seq-held+1 … seq, without gaps.
local oldest = seq - held + 1
local frames, complete
if since and since <= seq and (want_epoch == '' or string.sub(want_epoch, 2) == epoch) then
  local from = math.max(since + 1, oldest)
  if from <= seq then
    frames = redis.call('LRANGE', hist, from - oldest, -1)
  else
    frames = {}
  end
  complete = (since >= seq or oldest <= since + 1) and 1 or 0
else
  local count = math.min(held, seq - math.max(seq - reply_default, 0))
  if count > 0 then
    frames = redis.call('LRANGE', hist, -count, -1)
  else
    frames = {}
  end
  complete = (not since and seq + 1 - count == 1) and 1 or 0
end
local members = redis.call('HVALS', mem)
local out = { 'ok', ev, seq, epoch, complete, #members }
for _, m in ipairs(members) do
  table.insert(out, m)
end
for _, f in ipairs(frames) do
  table.insert(out, f)
end
return out
