-- Shared by every natter script (prepended to each; see cluster/scripts.rs).
--
-- Keys, all under "natter:":
--   nick            HASH  lower-cased nick -> "node|conn|Nick" (who holds it)
--   guest           the counter behind guest-N nicks
--   epochs          the counter behind room epochs
--   nodes           SET   nodes that hold a lease or left state behind
--   lease:NODE      a key with a TTL: the node is alive while it exists
--   conns:NODE      HASH  conn -> nick, the node's connections
--   in:NODE         SET   "conn|room", the node's memberships
--   room:ROOM       HASH  seq (last message), ev (last event), epoch
--   hist:ROOM       LIST  the last --history message events, oldest first
--   evs:ROOM        LIST  the last EVENTS_KEPT bus payloads, for repair
--   mem:ROOM        HASH  "node|conn" -> nick, the room's members
--   active          HASH  room -> member count, rooms with members
--   empty           ZSET  rooms without members, by when they emptied (ms)
-- Every script runs atomically, so the order in which they publish on
-- natter:bus is the order of every room's events.

local P = 'natter:'

-- A presence event, byte for byte as natter encodes one (names and nicks
-- need no escaping: their alphabets have no quote or backslash).
local function presence(room, event, nick, old)
  local s = '{"type":"presence","room":"' .. room .. '","event":"' .. event
    .. '","nick":"' .. nick .. '"'
  if old then
    s = s .. ',"old":"' .. old .. '"'
  end
  return s .. '}'
end

-- Gives an event the room's next event number, keeps it for repair and
-- publishes it. The payload's header lines are what cluster/bus.rs parses.
local function emit(room, kind, node, conn, frame, kept)
  local ev = redis.call('HINCRBY', P .. 'room:' .. room, 'ev', 1)
  local payload = kind .. '\n' .. room .. '\n' .. ev .. '\n' .. node .. '\n' .. conn .. '\n' .. frame
  local evs = P .. 'evs:' .. room
  redis.call('RPUSH', evs, payload)
  redis.call('LTRIM', evs, -kept, -1)
  redis.call('PUBLISH', P .. 'bus', payload)
  return ev
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ends a membership: the room hears `leave` in its order; a room left
-- empty is ranked for eviction, and the least recently active empty rooms
-- past max_rooms are forgotten. Returns the leave's event number, or nil
-- when it was not a member.
local function exit_room(room, node, conn, max_rooms, kept)
  local mem = P .. 'mem:' .. room
  local field = node .. '|' .. conn
  local nick = redis.call('HGET', mem, field)
  if not nick then
    return nil
  end
  redis.call('HDEL', mem, field)
  redis.call('SREM', P .. 'in:' .. node, conn .. '|' .. room)
  local ev = emit(room, 'l', node, conn, presence(room, 'leave', nick), kept)
  if redis.call('HINCRBY', P .. 'active', room, -1) <= 0 then
    redis.call('HDEL', P .. 'active', room)
    redis.call('ZADD', P .. 'empty', now_ms(), room)
    while redis.call('ZCARD', P .. 'empty') > max_rooms do
      local name = redis.call('ZPOPMIN', P .. 'empty')[1]
      redis.call('DEL', P .. 'room:' .. name, P .. 'hist:' .. name, P .. 'evs:' .. name,
        P .. 'mem:' .. name)
    end
  end
  return ev
end

-- Frees a nick if this connection holds it.
local function free_nick(node, conn, nick)
  local key = string.lower(nick)
  if redis.call('HGET', P .. 'nick', key) == node .. '|' .. conn .. '|' .. nick then
    redis.call('HDEL', P .. 'nick', key)
  end
end

-- Forgets a node: each of its members leaves each room (once: the
-- membership goes with its leave), its nicks are freed, its records go.
-- Returns how many memberships ended.
local function reap(node, max_rooms, kept)
  local ended = 0
  for _, m in ipairs(redis.call('SMEMBERS', P .. 'in:' .. node)) do
    local bar = string.find(m, '|', 1, true)
    if exit_room(string.sub(m, bar + 1), node, string.sub(m, 1, bar - 1), max_rooms, kept) then
      ended = ended + 1
    end
  end
  local conns = redis.call('HGETALL', P .. 'conns:' .. node)
  for i = 1, #conns, 2 do
    free_nick(node, conns[i], conns[i + 1])
  end
  redis.call('DEL', P .. 'in:' .. node, P .. 'conns:' .. node, P .. 'lease:' .. node)
  redis.call('SREM', P .. 'nodes', node)
  return ended
end

local function has_lease(node)
  return redis.call('EXISTS', P .. 'lease:' .. node) == 1
end

