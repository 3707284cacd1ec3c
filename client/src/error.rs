//! What can go wrong talking to a natter server, worded for a person.

use natter_protocol::ErrorCode;

use crate::close::CloseInfo;

/// Every way a connection or a request can fail, one type so that callers
/// (the chat client, the load tester) can both print it and tell the cases
/// apart (a full server is worth retrying, a refused request is not).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL could not be parsed or is not a ws:// or wss:// URL.
    #[error("invalid server URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// The TCP connection could not be made.
    #[error("cannot reach the server at {addr}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    /// The CA file given for TLS could not be read or holds no usable
    /// certificate.
    #[error("cannot use the CA certificates in {path}: {why}")]
    Certificate { path: String, why: String },
    /// The TLS handshake failed: most often the server's certificate is
    /// not signed by a trusted CA (see `--ca`) or names another host.
    #[error("TLS handshake failed {0}")]
    Tls(String),
    /// The server answered the upgrade with 503: at its connection cap.
    #[error("the server is full (HTTP 503); try again later")]
    ServerFull,
    /// The server answered the upgrade with another HTTP status.
    #[error("the server refused the WebSocket upgrade: HTTP {status}")]
    Refused { status: u16 },
    /// The WebSocket handshake failed for another reason.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The server sent something the protocol does not allow.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The connection ended, with the server's close frame when it sent one.
    #[error("{}", closed_text(.0))]
    Closed(Option<CloseInfo>),
    /// The server answered a request with an error reply.
    #[error("{code}: {message}")]
    Request { code: ErrorCode, message: String },
    /// Writing to the socket failed.
    #[error("sending failed: {0}")]
    Send(String),
}

fn closed_text(info: &Option<CloseInfo>) -> String {
    match info {
        Some(info) => format!("connection closed by the server: {info}"),
        None => "connection closed".into(),
    }
}
