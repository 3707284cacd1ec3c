-- reap_dead(): the nodes whose lease expired (each is then reaped with
-- reap_node, in bounded steps).
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'lease:' .. node) == 0 then
    table.insert(dead, node)
  end
end
return dead
