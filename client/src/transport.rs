//! The byte stream under a WebSocket: plain TCP for `ws://`, TLS over TCP
//! for `wss://`. One type for both so that [`crate::Client`] and the lean
//! connections of the load tester are not generic over the stream: the
//! runtime crate's `MaybeTls`, which the server's sockets use too (the TLS
//! session boxed, so tens of thousands of plain load-test connections do
//! not grow for a case they never use).

use futures_rustls::client::TlsStream;
use natter_runtime::{MaybeTls, TcpStream};

/// A connected socket, with or without TLS: `Transport::Plain` for
/// `ws://`, `Transport::Tls` for `wss://`.
pub type Transport = MaybeTls<TlsStream<TcpStream>>;
