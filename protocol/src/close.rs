//! WebSocket close codes natter uses, named for why they are sent.

/// A close code from RFC 6455 with the meaning natter gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The client said goodbye, or the server answered its goodbye.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// A frame broke RFC 6455 itself (unmasked client frame, bad opcode...).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A binary message: natter speaks text only.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// A text message that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// Slow consumer or flooding.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// A message over `max_message_bytes`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The server failed while handling this connection.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// The node lost its broker (`--broker`): reconnect, to any node, and
    /// recover with `since`.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

/// Close reasons that clients can match on (sent with [`CloseCode::POLICY`]).
pub mod reason {
    pub const SLOW_CONSUMER: &str = "slow consumer";
    pub const FLOODING: &str = "flooding";
    pub const SHUTDOWN: &str = "server shutdown";
    pub const TRY_AGAIN_LATER: &str = "try again later";
}
