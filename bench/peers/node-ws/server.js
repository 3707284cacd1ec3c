// A minimal natter-protocol server on Node's `ws`, for one comparison only:
// `natter load ramp` against the peer the issue names ("ramp >= 2x the
// clients Node `ws` holds under the limit"). It implements just what ramp
// uses: welcome, join (presence to every member, then the reply with the
// member list), say (message event to every member, then the reply). No
// history, no rate limits, no validation: it does less work per message
// than natter, which only favours it.
//
//   node server.js [PORT]     prints "listening on ws://127.0.0.1:PORT/ws"
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const rooms = new Map(); // name -> { seq, members: Map<nick, socket> }
let guests = 0;

const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/ws', backlog: 4096 });
wss.on('listening', () => {
  console.log(`listening on ws://127.0.0.1:${wss.address().port}/ws`);
});

function send(ws, obj) {
  ws.send(JSON.stringify(obj));
}

function broadcast(room, obj) {
  const frame = JSON.stringify(obj);
  for (const ws of room.members.values()) ws.send(frame);
}

wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://x');
  const nick = url.searchParams.get('nick') || `guest${++guests}`;
  const joined = new Set();
  send(ws, {
    type: 'welcome', nick, protocol: 1, server: 'node-ws-peer',
    limits: { max_message_bytes: 65536, max_text_bytes: 4096, rate_per_sec: 0, burst: 0, max_rooms_per_connection: 32 },
  });
  ws.on('message', (data) => {
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (m.type === 'join') {
      let room = rooms.get(m.room);
      if (!room) { room = { seq: 0, members: new Map() }; rooms.set(m.room, room); }
      room.members.set(nick, ws);
      joined.add(m.room);
      broadcast(room, { type: 'presence', room: m.room, event: 'join', nick });
      send(ws, {
        type: 'ok', id: m.id, room: m.room, members: [...room.members.keys()],
        seq: room.seq, epoch: 'node', history: [], complete: true,
      });
    } else if (m.type === 'say') {
      const room = rooms.get(m.room);
      if (!room || !room.members.has(nick)) {
        send(ws, { type: 'error', id: m.id, code: 'not_member', message: 'not a member' });
        return;
      }
      const seq = ++room.seq;
      broadcast(room, { type: 'message', room: m.room, seq, from: nick, text: m.text, ts: Date.now() });
      send(ws, { type: 'ok', id: m.id, room: m.room, seq });
    }
  });
  ws.on('close', () => {
    for (const name of joined) {
      const room = rooms.get(name);
      if (!room) continue;
      room.members.delete(nick);
      broadcast(room, { type: 'presence', room: name, event: 'leave', nick });
    }
  });
});
