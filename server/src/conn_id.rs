//! The one name a connection has inside the server.

/// Identifies one connection for the whole life of the server: handed out
/// by the accept loop in order, never reused, so a registry entry, a log
/// line and a room membership all mean the same connection.
pub(crate) type ConnId = u64;
