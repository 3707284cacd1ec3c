//! What the server sends: events, and the one reply every request gets.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::id::Id;
use crate::limits::Limits;

/// Every frame the server sends, as a client decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    Message(ChatMessage),
    Presence(Presence),
    Whisper(WhisperEvent),
    Shutdown { reason: String },
    Ok(OkReply),
    Error(ErrorReply),
}

/// The first frame on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub nick: String,
    pub protocol: u32,
    pub server: String,
    pub limits: Limits,
    /// Why the nick asked for in the URL was not given (a guest nick was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick_error: Option<ErrorCode>,
}

/// A message said in a room; also the element type of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// Server time, Unix milliseconds.
    pub ts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    Join,
    Leave,
    Rename,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub room: String,
    pub event: PresenceKind,
    pub nick: String,
    /// The previous nick, for `rename` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhisperEvent {
    pub from: String,
    pub text: String,
    pub ts: u64,
}

/// `{"type":"ok","id":…, …}`: the success reply, its fields by request type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OkReply {
    pub id: Option<Id>,
    #[serde(flatten)]
    pub reply: Reply,
}

/// The fields an `ok` reply carries, by the request it answers.
///
/// Untagged because the wire reply does not repeat the request type; the
/// variants are ordered most specific first so decoding picks the right one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Join(JoinOk),
    Say { room: String, seq: u64 },
    Who { room: String, members: Vec<String> },
    Rooms { rooms: Vec<RoomCount> },
    Nick { nick: String },
    Whisper { to: String },
    Leave { room: String },
}

/// The `join` reply. Generic over the history element so the server can
/// embed already-encoded messages without decoding them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinOk<H = ChatMessage> {
    pub room: String,
    pub members: Vec<String>,
    pub seq: u64,
    pub epoch: String,
    pub history: Vec<H>,
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    pub room: String,
    pub members: usize,
}

/// `{"type":"error","id":…,"code":…,"message":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub id: Option<Id>,
    pub code: ErrorCode,
    pub message: String,
}

/// Encodes an `ok` reply around any body that serializes as an object.
pub fn encode_ok<B: Serialize>(id: Option<&Id>, body: &B) -> String {
    #[derive(Serialize)]
    struct Tagged<'a, B> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: Option<&'a Id>,
        #[serde(flatten)]
        body: &'a B,
    }
    to_json(&Tagged {
        kind: "ok",
        id,
        body,
    })
}

/// Encodes a `join` reply whose `history` elements are already-encoded JSON
/// objects (the `message` events as they were broadcast), copied in
/// verbatim: no element is parsed, escaped or checked again, so the cost is
/// one copy of their bytes. The caller vouches that each element is one
/// JSON object. Same fields, same order, as [`encode_ok`] on a [`JoinOk`].
pub fn encode_join_ok_spliced<H: AsRef<str>>(id: Option<&Id>, reply: &JoinOk<H>) -> String {
    /// Everything before `history`, borrowed (nothing is cloned).
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: Option<&'a Id>,
        room: &'a str,
        members: &'a [String],
        seq: u64,
        epoch: &'a str,
    }
    let head = to_json(&Head {
        kind: "ok",
        id,
        room: &reply.room,
        members: &reply.members,
        seq: reply.seq,
        epoch: &reply.epoch,
    });
    // `head` is an object: drop its closing brace and go on from there.
    let head = head.strip_suffix('}').unwrap_or(&head);
    let history_len: usize = reply.history.iter().map(|h| h.as_ref().len() + 1).sum();
    let mut out = String::with_capacity(head.len() + history_len + 40);
    out.push_str(head);
    out.push_str(",\"history\":[");
    for (i, element) in reply.history.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(element.as_ref());
    }
    out.push_str("],\"complete\":");
    out.push_str(if reply.complete { "true" } else { "false" });
    out.push('}');
    out
}

/// Encodes an `error` reply.
pub fn encode_error(id: Option<&Id>, code: ErrorCode, message: &str) -> String {
    #[derive(Serialize)]
    struct Tagged<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: Option<&'a Id>,
        code: ErrorCode,
        message: &'a str,
    }
    to_json(&Tagged {
        kind: "error",
        id,
        code,
        message,
    })
}

impl ServerMessage {
    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// Serializes protocol values, which hold only strings, integers, booleans
/// and maps with string keys: serde_json cannot fail on them.
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}
