-- Shared by every natter script (prepended to each; see cluster/scripts.rs).
--
-- Keys, all under "natter:":
--   nick            HASH  lower-cased nick -> "node|conn|Nick" (who holds it)
--   guest           the counter behind guest-N nicks
--   epochs          the counter behind room epochs
--   nodes           SET   nodes that hold a lease or left state behind
--   lease:NODE      a key with a TTL: the node is alive while it exists;
--   conns:NODE      HASH  conn -> nick, the node's connections
--   in:NODE         SET   "conn|room", the node's memberships
--   lease:NODE      holds the token of the node's current life
--   room:ROOM       HASH  seq (last message), ev (last event), epoch
--   hist:ROOM       LIST  the last --history message events, oldest first
--   evs:ROOM        LIST  the last EVENTS_KEPT bus payloads, for repair
--                         (trimmed to a few once the room empties)
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

-- A whole number as digits (Lua's `..` would write 1e+14 from 10^14 on).
local function int(n)
  return string.format('%d', n)
end

-- Gives an event the room's next event number, keeps it for repair and
-- publishes it. The payload's header lines are what cluster/bus.rs parses;
-- the epoch in it tells a node that a room was forgotten and re-created
-- (its numbering restarts). Returns the event number and the epoch.
local function emit(room, kind, node, conn, frame, kept)
  local key = P .. 'room:' .. room
  local ev = redis.call('HINCRBY', key, 'ev', 1)
  local epoch = redis.call('HGET', key, 'epoch')
  local payload = kind .. '\n' .. room .. '\n' .. epoch .. '\n' .. int(ev) .. '\n' .. node .. '\n'
    .. conn .. '\n' .. frame
  local evs = P .. 'evs:' .. room
  redis.call('RPUSH', evs, payload)
  redis.call('LTRIM', evs, -kept, -1)
  redis.call('PUBLISH', P .. 'bus', payload)
  return ev, epoch
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Ends a membership: the room hears `leave` in its order; a room left
-- empty keeps only its last few events (nobody is left to repair), is
-- ranked for eviction, and the least recently active empty rooms past
-- max_rooms are forgotten. Returns the leave's event number and the
-- room's epoch, or nil when it was not a member.
local function exit_room(room, node, conn, max_rooms, kept)
  local mem = P .. 'mem:' .. room
  local field = node .. '|' .. conn
  local nick = redis.call('HGET', mem, field)
  if not nick then
    return nil
  end
  redis.call('HDEL', mem, field)
  redis.call('SREM', P .. 'in:' .. node, conn .. '|' .. room)
  local ev, epoch = emit(room, 'l', node, conn, presence(room, 'leave', nick), kept)
  if redis.call('HINCRBY', P .. 'active', room, -1) <= 0 then
    redis.call('HDEL', P .. 'active', room)
    redis.call('LTRIM', P .. 'evs:' .. room, -16, -1)
    redis.call('ZADD', P .. 'empty', now_ms(), room)
    while redis.call('ZCARD', P .. 'empty') > max_rooms do
      local name = redis.call('ZPOPMIN', P .. 'empty')[1]
      redis.call('DEL', P .. 'room:' .. name, P .. 'hist:' .. name, P .. 'evs:' .. name,
        P .. 'mem:' .. name)
    end
  end
  return ev, epoch
end

-- Frees a nick if this connection holds it.
local function free_nick(node, conn, nick)
  local key = string.lower(nick)
  if redis.call('HGET', P .. 'nick', key) == node .. '|' .. conn .. '|' .. nick then
    redis.call('HDEL', P .. 'nick', key)
  end
end

-- Forgets (part of) a node: up to `limit` of its memberships end, each
-- room hearing `leave` in its order (once: the membership goes with its
-- leave); when none is left, its nicks are freed and its records go.
-- Bounded so that reaping a big node never blocks Redis for long: the
-- caller repeats until done. Returns { memberships ended, done (0/1) }.
local function reap(node, max_rooms, kept, limit)
  local ended = 0
  local members = redis.call('SRANDMEMBER', P .. 'in:' .. node, limit)
  for _, m in ipairs(members) do
    local bar = string.find(m, '|', 1, true)
    local room, conn = string.sub(m, bar + 1), string.sub(m, 1, bar - 1)
    if exit_room(room, node, conn, max_rooms, kept) then
      ended = ended + 1
    else
      -- A membership record whose room forgot it (evicted): drop it.
      redis.call('SREM', P .. 'in:' .. node, m)
    end
  end
  if redis.call('SCARD', P .. 'in:' .. node) > 0 then
    return { ended, 0 }
  end
  local conns = redis.call('HGETALL', P .. 'conns:' .. node)
  for i = 1, #conns, 2 do
    free_nick(node, conns[i], conns[i + 1])
  end
  redis.call('DEL', P .. 'in:' .. node, P .. 'conns:' .. node)
  return { ended, 1 }
end

-- Whether `token` is the live lease of `node` (not an earlier or a later
-- life of it).
local function has_lease(node, token)
  return redis.call('GET', P .. 'lease:' .. node) == token
end

