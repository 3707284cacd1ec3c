//! Request ids: what a client uses to match replies to requests.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest string id, in bytes.
pub const MAX_STRING_ID_BYTES: usize = 64;
/// Largest integer id magnitude: what a JavaScript number holds exactly.
pub const MAX_INT_ID: i64 = (1 << 53) - 1;

/// A request id as the client wrote it: an exact integer or a short string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Int(i64),
    Str(String),
}

impl Id {
    /// Reads an id from its raw JSON text.
    ///
    /// Works on the raw text rather than a parsed number because `1.0` and
    /// `1e3` are not valid ids even though they are integral values: the
    /// contract wants ids echoed byte-for-byte-equivalent, and a float
    /// would not round-trip. Returns `Ok(None)` for `null` (treated as no id).
    pub(crate) fn from_raw(raw: &str) -> Result<Option<Id>, String> {
        let raw = raw.trim();
        if raw == "null" {
            return Ok(None);
        }
        if raw.starts_with('"') {
            let s: String = serde_json::from_str(raw).map_err(|e| format!("invalid id: {e}"))?;
            if s.len() > MAX_STRING_ID_BYTES {
                return Err(format!(
                    "invalid id: a string id is at most {MAX_STRING_ID_BYTES} bytes"
                ));
            }
            return Ok(Some(Id::Str(s)));
        }
        let is_integer_literal = raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            && raw.bytes().all(|b| b == b'-' || b.is_ascii_digit());
        if !is_integer_literal {
            return Err(
                "invalid id: an id is a string or an integer without fraction or exponent".into(),
            );
        }
        match raw.parse::<i64>() {
            Ok(n) if (-MAX_INT_ID..=MAX_INT_ID).contains(&n) => Ok(Some(Id::Int(n))),
            _ => Err("invalid id: integer ids lie within ±(2^53-1)".into()),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Id {
        Id::Int(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::Str(s.to_owned())
    }
}
