-- leave(node, conn, room, max_rooms, kept): returns { the leave's event
-- number, the room's epoch }, or 0 when the connection was not a member.
local ev, epoch = exit_room(ARGV[3], ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
if not ev then
  return 0
end
return { ev, epoch }
