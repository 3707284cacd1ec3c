//! How a connection ended. Its own module because both the connection
//! ([`crate::client`]) and its errors ([`crate::error`]) speak of it, and
//! neither should depend on the other for it.

use std::fmt;

/// How the server closed the connection: kept so that a caller (and an
/// error) can say why the conversation ended, not just that it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The WebSocket close code (1006 when the connection was lost without one).
    pub code: u16,
    /// The reason the server gave with the code; may be empty.
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "close code {}", self.code)
        } else {
            write!(f, "close code {}: {}", self.code, self.reason)
        }
    }
}
