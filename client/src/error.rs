//! What can go wrong talking to a natter server, worded for a person.

use natter_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the server at {addr}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server is full (HTTP 503); try again later")]
    ServerFull,
    #[error("the server refused the WebSocket upgrade: HTTP {status}")]
    Refused { status: u16 },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("{}", closed_text(.0))]
    Closed(Option<crate::client::CloseInfo>),
    #[error("{code}: {message}")]
    Request { code: ErrorCode, message: String },
    #[error("sending failed: {0}")]
    Send(String),
}

fn closed_text(info: &Option<crate::client::CloseInfo>) -> String {
    match info {
        Some(info) => format!("connection closed by the server: {info}"),
        None => "connection closed".into(),
    }
}
