//! Lingering close: how the server lets go of a socket without losing the
//! last thing it said.
//!
//! If a server closes a TCP socket while the client's bytes are still
//! unread in its receive buffer, the kernel answers with a reset, and the
//! reset can destroy the server's final data (an HTTP error, a close frame)
//! before the client reads it. So the server first shuts down its sending
//! side (the client sees EOF after our last byte), then reads and discards
//! whatever the client still sends, for a bounded time and amount, until
//! the client closes too.

use std::net::Shutdown;
use std::time::Duration;

use futures::AsyncReadExt;
use natter_runtime::{TcpStream, timeout};

const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Shuts down the sending side, then drains the socket briefly.
pub(crate) async fn linger(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let drain = async {
        // On the heap: an array here would be part of every connection
        // task's size for its whole life, not just while lingering.
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(LINGER_TIME, drain).await;
}
