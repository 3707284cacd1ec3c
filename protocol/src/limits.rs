//! The limits a server announces in its `welcome`, with the contract's defaults.

use serde::{Deserialize, Serialize};

/// What a client may send; announced so clients can stay inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_text_bytes: usize,
    /// Requests per second per connection; 0 means no rate limit.
    pub rate_per_sec: u32,
    pub burst: u32,
    pub max_rooms_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65536,
            max_text_bytes: 4096,
            rate_per_sec: 20,
            burst: 40,
            max_rooms_per_connection: 32,
        }
    }
}
