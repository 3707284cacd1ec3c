//! Why a connection closes, and what the client is told.
//!
//! Whatever ends a connection — the client's close, abuse, a slow-consumer
//! kick from someone else's broadcast, shutdown — is recorded once, as one
//! of these, on the connection's outbox; the writer then sends the close
//! frame it calls for.

use natter_protocol::CloseCode;
use natter_protocol::close::reason;

/// Why a connection is being closed; the first reason recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CloseReason {
    /// The client sent a close frame; tungstenite answers it.
    PeerClosed = 1,
    /// The socket failed or hit EOF; there is nobody to tell.
    Gone,
    /// Another connection's broadcast found this one's queue full: 1008.
    SlowConsumer,
    /// Too many rate-limited requests within the flood window: 1008.
    Flooding,
    /// The client sent a binary frame, which the protocol does not use: 1003.
    Binary,
    /// A frame or message over `--max-message-bytes`: 1009.
    TooBig,
    /// A text frame that is not UTF-8: 1007.
    BadUtf8,
    /// A WebSocket protocol violation (bad opcode, unmasked frame, …): 1002.
    ProtocolViolation,
    /// A bug on our side (a handler panicked, a bound was broken): 1011.
    Internal,
    /// The server is shutting down: the `shutdown` event, then 1001.
    Shutdown,
    /// Nothing heard from the peer within the idle timeout: 1000.
    Idle,
    /// This node lost its broker (or a room's order it could not repair):
    /// what was queued goes out, then 1013, and the client reconnects.
    TryAgainLater,
}

impl CloseReason {
    const ALL: [CloseReason; 12] = [
        CloseReason::PeerClosed,
        CloseReason::Gone,
        CloseReason::SlowConsumer,
        CloseReason::Flooding,
        CloseReason::Binary,
        CloseReason::TooBig,
        CloseReason::BadUtf8,
        CloseReason::ProtocolViolation,
        CloseReason::Internal,
        CloseReason::Shutdown,
        CloseReason::Idle,
        CloseReason::TryAgainLater,
    ];

    /// The reason stored as `code` (see [`CloseReason::code`]); `None` for 0,
    /// which means "not closed".
    pub(crate) fn from_code(code: u8) -> Option<CloseReason> {
        CloseReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A non-zero byte for the reason, so one atomic can hold "open" (0) or
    /// why the connection closed.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The close frame to send, if any.
    pub(crate) fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        Some(match self {
            CloseReason::PeerClosed | CloseReason::Gone => return None,
            CloseReason::SlowConsumer => (CloseCode::POLICY, reason::SLOW_CONSUMER),
            CloseReason::Flooding => (CloseCode::POLICY, reason::FLOODING),
            CloseReason::Binary => (
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not supported",
            ),
            CloseReason::TooBig => (CloseCode::TOO_BIG, "message too big"),
            CloseReason::BadUtf8 => (CloseCode::INVALID_PAYLOAD, "invalid UTF-8"),
            CloseReason::ProtocolViolation => (CloseCode::PROTOCOL_ERROR, "protocol error"),
            CloseReason::Internal => (CloseCode::INTERNAL, "internal error"),
            CloseReason::Shutdown => (CloseCode::GOING_AWAY, reason::SHUTDOWN),
            CloseReason::Idle => (CloseCode::NORMAL, "idle timeout"),
            CloseReason::TryAgainLater => (CloseCode::TRY_AGAIN_LATER, reason::TRY_AGAIN_LATER),
        })
    }

    /// Whether frames still queued are thrown away rather than delivered:
    /// a slow consumer would not read them, and a closed or dead socket
    /// cannot take them.
    pub(crate) fn discards_queue(self) -> bool {
        matches!(
            self,
            CloseReason::PeerClosed | CloseReason::Gone | CloseReason::SlowConsumer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason;

    #[test]
    fn codes_round_trip_and_zero_is_open() {
        assert_eq!(CloseReason::from_code(0), None);
        for reason in CloseReason::ALL {
            assert_ne!(reason.code(), 0);
            assert_eq!(CloseReason::from_code(reason.code()), Some(reason));
        }
    }
}
