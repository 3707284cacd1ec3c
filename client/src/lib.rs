//! natter's client library: connect, send requests, await their replies by
//! id, and receive events. The bundled `natter chat` client and the load
//! tester are built on it; any Rust program can use it to talk to a server
//! that speaks the natter protocol.

pub mod client;
pub mod close;
pub mod error;
pub mod tls;
pub mod transport;

pub use client::{Client, ConnectOptions, LeanConnection, LeanReceiver, LeanSender, TextFrame};
pub use close::CloseInfo;
pub use error::ClientError;
pub use transport::Transport;
