-- reap_node(node, max_rooms, kept, limit, only_if_dead): ends up to
-- `limit` of a node's memberships (see `reap` in the prelude); when it has
-- none left, its nicks and records go and it leaves the nodes. With
-- only_if_dead = 1 nothing happens if the node holds a lease again (it
-- came back meanwhile). Returns { memberships ended, done (0/1) }.
local node = ARGV[1]
if ARGV[5] == '1' and redis.call('EXISTS', P .. 'lease:' .. node) == 1 then
  return { 0, 1 }
end
local out = reap(node, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if out[2] == 1 then
  redis.call('SREM', P .. 'nodes', node)
end
return out
