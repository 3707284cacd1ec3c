-- register(node, lease_ms, max_rooms, kept): a node (re)joins the cluster.
-- Whatever an earlier life of this node left behind (a crash, a lost
-- broker) is reaped first, so its members leave exactly once; then the
-- node takes its lease. Returns the memberships reaped.
local node, lease_ms = ARGV[1], tonumber(ARGV[2])
local ended = reap(node, tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('SET', P .. 'lease:' .. node, '1', 'PX', lease_ms)
redis.call('SADD', P .. 'nodes', node)
return ended
