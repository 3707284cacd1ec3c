//! The chat requests and replies the binary-level tests share: message
//! events as [`Said`], `join` (with and without `since`), `leave` and
//! `say`, reading a room up to a seq, and connecting with a nick.
//!
//! They began in `durable.rs`; the multi-node tests (`cluster*.rs`) make
//! the same requests against several nodes, so they live here once.

use serde_json::{Value, json};

use super::{BOUND, MAX_FRAMES, ServerProcess, Ws};

/// A message event of a room, as the tests compare it.
#[derive(Clone, Debug, PartialEq)]
pub struct Said {
    pub seq: u64,
    pub from: String,
    pub text: String,
    pub ts: u64,
}

/// `v` as a message event of `room`.
pub fn message(v: &Value, room: &str) -> Said {
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["room"], room, "{v}");
    let field = |name: &str| {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .to_owned()
    };
    let number = |name: &str| {
        v[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in {v}"))
    };
    Said {
        seq: number("seq"),
        from: field("from"),
        text: field("text"),
        ts: number("ts"),
    }
}

/// The `history` of a join reply.
pub fn history(reply: &Value, room: &str) -> Vec<Said> {
    reply["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in {reply}"))
        .iter()
        .map(|m| message(m, room))
        .collect()
}

/// The `epoch` of a join reply (an opaque string).
pub fn epoch_of(reply: &Value) -> String {
    reply["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {reply}"))
        .to_owned()
}

pub fn join(room: &str) -> Value {
    json!({"type": "join", "room": room, "id": "join"})
}

pub fn join_since(room: &str, since: u64, epoch: &str) -> Value {
    json!({"type": "join", "room": room, "since": since, "epoch": epoch, "id": "join-since"})
}

pub fn leave(room: &str) -> Value {
    json!({"type": "leave", "room": room, "id": "leave"})
}

/// Says `text` in `room`: the seq of its `ok`, and the room's message
/// events read on the way to it.
pub async fn say(c: &mut Ws, room: &str, text: &str) -> (u64, Vec<Said>) {
    let (reply, events) = c
        .request(json!({"type": "say", "room": room, "text": text, "id": "say"}))
        .await;
    assert_eq!(reply["type"], "ok", "say {text:?} got {reply}");
    let seq = reply["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {reply}"));
    let heard = events
        .iter()
        .filter(|v| v["type"] == "message" && v["room"] == room)
        .map(|v| message(v, room))
        .collect();
    (seq, heard)
}

/// Reads `c`'s frames until `heard` ends with `room`'s message `seq` (or a
/// later one), adding the room's message events to it.
pub async fn read_messages_to(c: &mut Ws, room: &str, seq: u64, heard: &mut Vec<Said>) {
    for _ in 0..MAX_FRAMES {
        if heard.last().is_some_and(|m| m.seq >= seq) {
            return;
        }
        let v = c.next().await;
        if v["type"] == "message" && v["room"] == room {
            heard.push(message(&v, room));
        }
    }
    panic!("no message {seq} of {room} within {MAX_FRAMES} frames");
}

/// Connects as `nick` (checked in the welcome).
pub async fn connect(server: &ServerProcess, nick: &str) -> Ws {
    let (c, welcome) = Ws::connect(&format!("{}?nick={nick}", server.url), None, BOUND)
        .await
        .unwrap_or_else(|e| panic!("connect {nick}: {e}\n{}", server.stderr_text()));
    assert_eq!(welcome["nick"], nick, "{welcome}");
    c
}

/// Reads `c`'s frames until one satisfies `want` and returns every frame
/// read, that one last. Each read is bounded by [`BOUND`], the frames by
/// [`MAX_FRAMES`]; `what` names the awaited frame in the failure.
pub async fn read_until(c: &mut Ws, what: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut read = Vec::new();
    for _ in 0..MAX_FRAMES {
        match c.next_within(BOUND).await {
            Some(v) => {
                let done = want(&v);
                read.push(v);
                if done {
                    return read;
                }
            }
            None => panic!("no {what} within {BOUND:?}; read before: {read:?}"),
        }
    }
    panic!("no {what} within {MAX_FRAMES} frames")
}

/// Whether `v` is the `presence` event `event` (`join`, `leave`) of `nick`
/// in `room`.
pub fn is_presence(v: &Value, room: &str, event: &str, nick: &str) -> bool {
    v["type"] == "presence" && v["room"] == room && v["event"] == event && v["nick"] == nick
}

/// A `say` request with its `id`.
pub fn say_request(room: &str, text: &str, id: &str) -> Value {
    json!({"type": "say", "room": room, "text": text, "id": id})
}
