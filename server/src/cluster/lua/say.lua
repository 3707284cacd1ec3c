-- say(node, conn, room, head, tail, history, kept): numbers a message,
-- keeps it in the room's history and publishes it, in one atomic step, so
-- that publish order is seq order. The event is head .. seq .. tail
-- (encoded by the node, only the seq is decided here). Returns { seq, ev,
-- epoch }, or 0 when the connection is not a member.
local node, conn, room = ARGV[1], ARGV[2], ARGV[3]
local history, kept = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('HEXISTS', P .. 'mem:' .. room, node .. '|' .. conn) == 0 then
  return 0
end
local seq = redis.call('HINCRBY', P .. 'room:' .. room, 'seq', 1)
local frame = ARGV[4] .. int(seq) .. ARGV[5]
if history > 0 then
  local hist = P .. 'hist:' .. room
  redis.call('RPUSH', hist, frame)
  redis.call('LTRIM', hist, -history, -1)
end
local ev, epoch = emit(room, 'm', node, conn, frame, kept)
return { seq, ev, epoch }
