-- register(node, token, lease_ms): the node's life `token` takes its lease
-- (replacing an earlier life's: whatever that one left has been reaped by
-- the caller first, see cluster/session.rs) and joins the nodes.
redis.call('SET', P .. 'lease:' .. ARGV[1], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('SADD', P .. 'nodes', ARGV[1])
return 1
