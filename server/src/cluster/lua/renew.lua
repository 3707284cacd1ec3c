-- renew(node, token, lease_ms): extends this life's lease. 1: renewed;
-- 0: it had expired (another node may have reaped this one: register
-- again); 2: another life of the same node id holds it (a second process
-- started with this --node-id: this one must stop).
local key = P .. 'lease:' .. ARGV[1]
local holder = redis.call('GET', key)
if holder == ARGV[2] then
  redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  return 1
elseif holder then
  return 2
end
return 0
