-- leave_cluster(node, max_rooms, kept): a node shutting down gracefully
-- reaps itself (its connections have normally left already).
return reap(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
