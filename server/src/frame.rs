//! What travels to clients: encoded frames, made once and shared.

use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Utf8Bytes;
use natter_protocol::ServerMessage;

/// One encoded text frame. Reference-counted: a room message is encoded
/// once and every member's queue holds a handle to the same bytes.
pub(crate) type Frame = Utf8Bytes;

/// Encodes a server message once, as a frame every recipient can share.
pub(crate) fn encode(message: &ServerMessage) -> Frame {
    Frame::from(message.to_json())
}

/// Milliseconds since the Unix epoch, the `ts` of messages and whispers.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
