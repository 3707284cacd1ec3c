//! A client's socket as the server reads and writes it: plain TCP, or TLS
//! over TCP with `--tls-cert`/`--tls-key`.
//!
//! One type whether or not TLS is on, so the connection task's type does
//! not change with it, and the TLS session (rustls' state and buffers)
//! lives on the heap, so a plain connection's task does not grow by it:
//! natter-runtime's `MaybeTls`, which the client's `wss://` connections
//! use too.

use futures_rustls::server::TlsStream;
use natter_runtime::{MaybeTls, TcpStream};

/// One client socket: `Stream::Plain` (`ws://`, `http://`) or
/// `Stream::Tls` (`wss://`, `https://`).
pub(crate) type Stream = MaybeTls<TlsStream<TcpStream>>;
