//! The natter wire protocol, version 1, as Rust types.
//!
//! This crate is the single place where the contract (`protocol/README.md`)
//! becomes code: what a request looks like, how every malformed input maps to
//! an error code, what the server sends back, and which names and texts are
//! acceptable. It does no I/O and knows no async runtime, so the server, the
//! client and any test can share it without dragging a runtime along.

pub mod close;
pub mod error;
pub mod id;
pub mod limits;
pub mod message;
pub mod names;
pub mod request;
mod scan;

pub use close::CloseCode;
pub use error::{DecodeError, ErrorCode};
pub use id::Id;
pub use limits::Limits;
pub use message::{
    ChatMessage, ErrorReply, JoinOk, OkReply, Presence, PresenceKind, Reply, RoomCount,
    ServerMessage, Welcome, WhisperEvent, encode_error, encode_join_ok_spliced, encode_ok,
};
pub use request::{Envelope, Request, decode_request};

/// The protocol version announced in every `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The only path that upgrades to the chat WebSocket.
pub const CHAT_PATH: &str = "/ws";
