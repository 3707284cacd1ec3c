-- renew(node, lease_ms): extends the lease. 0: it had expired — another
-- node may already have reaped this one, so it must register again.
if redis.call('PEXPIRE', P .. 'lease:' .. ARGV[1], tonumber(ARGV[2])) == 1 then
  return 1
end
return 0
