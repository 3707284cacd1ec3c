-- reap_dead(max_rooms, kept): reaps every node whose lease expired.
-- Atomic, so when several nodes look at once a dead node is reaped once.
-- Returns { node, memberships ended, node, … }.
local reaped = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if not has_lease(node) then
    local ended = reap(node, tonumber(ARGV[1]), tonumber(ARGV[2]))
    table.insert(reaped, node)
    table.insert(reaped, ended)
  end
end
return reaped
