//! Client pings, turned into pongs before tungstenite sees them, so that
//! the server decides whether a ping is answered.
//!
//! Why: tungstenite answers every ping itself, inside `read`, and offers no
//! way to decline. The contract counts ping frames against the rate limit,
//! and a ping over the rate gets no pong: a client flooding pings must not
//! get the server to write for it without limit. So the socket is read
//! through this filter. It follows the frame headers (RFC 6455 §5.2) as the
//! bytes go by and rewrites each ping's opcode to pong (same length, same
//! masking). tungstenite then hands the reader an ordinary `Pong`, which it
//! answers itself, and the filter records, for every pong-coded frame, in
//! order, whether it was a ping: the reader asks [`PingLog::was_ping`] for
//! each `Pong` it gets. A genuine pong (the answer to the server's
//! keepalive) stays a pong.
//!
//! Only the opcode's low nibble is looked at and changed; everything else,
//! invalid frames included, passes untouched for tungstenite to judge.
//! Writes pass straight through.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Where a frame header or payload stands in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The next byte starts a frame: FIN, RSV and the opcode.
    Start,
    /// The mask bit and the 7-bit length.
    Length,
    /// An extended length: `left` more bytes, big-endian, into `len`.
    ExtendedLength { left: u8, len: u64, masked: bool },
    /// The masking key: `left` more bytes, then `payload` bytes.
    Mask { left: u8, payload: u64 },
    /// Payload bytes still to pass (never 0: that is `Start`).
    Payload(u64),
}

impl At {
    /// What follows a header whose length is known.
    fn after_length(masked: bool, payload: u64) -> At {
        if masked {
            At::Mask { left: 4, payload }
        } else {
            At::payload(payload)
        }
    }

    fn payload(n: u64) -> At {
        if n == 0 { At::Start } else { At::Payload(n) }
    }
}

/// The order in which pong-coded frames were pings or pongs, shared by the
/// filter (which writes it) and the reader (which reads it).
#[derive(Debug, Default, Clone)]
pub(crate) struct PingLog(Arc<Mutex<VecDeque<bool>>>);

impl PingLog {
    /// For the `Pong` the reader just got: whether the client sent it as a
    /// ping. Frames reach the reader in the order the filter saw them.
    pub(crate) fn was_ping(&self) -> bool {
        self.lock().pop_front().unwrap_or(false)
    }

    fn record(&self, ping: bool) {
        self.lock().push_back(ping);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<bool>> {
        // A push or a pop cannot leave the deque half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's socket as the WebSocket layer sees it.
pub(crate) type Wire = PingFilter<crate::stream::Stream>;

/// The socket as tungstenite reads it: pings rewritten to pongs.
pub(crate) struct PingFilter<S> {
    inner: S,
    /// Bytes the HTTP handshake read past the request head: the first
    /// frames, which must go through the filter too.
    early: Vec<u8>,
    at: At,
    log: PingLog,
}

impl<S> PingFilter<S> {
    /// Wraps `inner`; `early` is read first.
    pub(crate) fn new(inner: S, early: Vec<u8>, log: PingLog) -> PingFilter<S> {
        PingFilter {
            inner,
            early,
            at: At::Start,
            log,
        }
    }

    /// Follows the headers through `bytes`, rewriting ping opcodes.
    fn scan(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            self.at = match self.at {
                At::Start => {
                    let opcode = byte & 0x0F;
                    if opcode == OP_PING {
                        bytes[i] = (byte & 0xF0) | OP_PONG;
                    }
                    if opcode == OP_PING || opcode == OP_PONG {
                        self.log.record(opcode == OP_PING);
                    }
                    At::Length
                }
                At::Length => {
                    let masked = byte & 0x80 != 0;
                    match byte & 0x7F {
                        126 => At::ExtendedLength {
                            left: 2,
                            len: 0,
                            masked,
                        },
                        127 => At::ExtendedLength {
                            left: 8,
                            len: 0,
                            masked,
                        },
                        n => At::after_length(masked, u64::from(n)),
                    }
                }
                At::ExtendedLength { left, len, masked } => {
                    let len = (len << 8) | u64::from(byte);
                    if left == 1 {
                        At::after_length(masked, len)
                    } else {
                        At::ExtendedLength {
                            left: left - 1,
                            len,
                            masked,
                        }
                    }
                }
                At::Mask { left: 1, payload } => At::payload(payload),
                At::Mask { left, payload } => At::Mask {
                    left: left - 1,
                    payload,
                },
                At::Payload(n) => {
                    // Skip what is here of the payload in one step.
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.at = At::payload(n - take);
                    continue;
                }
            };
            i += 1;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PingFilter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = if this.early.is_empty() {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            }
        } else {
            let n = this.early.len().min(buf.len());
            buf[..n].copy_from_slice(&this.early[..n]);
            this.early.drain(..n);
            if this.early.is_empty() {
                this.early = Vec::new();
            }
            n
        };
        this.scan(&mut buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PingFilter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [1, 2, 3, 4];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Scans `stream` in chunks of `chunk` bytes; returns what tungstenite
    /// would see and the log.
    fn scan_in_chunks(stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<bool>) {
        let log = PingLog::default();
        let mut filter = PingFilter::new((), Vec::new(), log.clone());
        let mut out = stream.to_vec();
        for piece in out.chunks_mut(chunk) {
            filter.scan(piece);
        }
        let seen = log.lock().iter().copied().collect();
        (out, seen)
    }

    #[test]
    fn pings_become_pongs_and_everything_else_passes_untouched() {
        let text = frame(0x1, b"{\"type\":\"rooms\"}");
        let big = frame(0x1, &vec![b'a'; 300]);
        let huge = frame(0x2, &vec![b'b'; 70_000]);
        let mut stream = Vec::new();
        for f in [
            &text,
            &frame(OP_PING, b"hi"),
            &big,
            &frame(OP_PONG, b""),
            &huge,
            &frame(OP_PING, b""),
        ] {
            stream.extend_from_slice(f);
        }
        for chunk in [1, 2, 3, 7, 512, stream.len()] {
            let (out, log) = scan_in_chunks(&stream, chunk);
            let mut want = stream.clone();
            let first_ping = text.len();
            want[first_ping] = 0x80 | OP_PONG;
            let last_ping = stream.len() - frame(OP_PING, b"").len();
            want[last_ping] = 0x80 | OP_PONG;
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(log, [true, false, true], "chunk {chunk}");
        }
    }

    #[test]
    fn early_bytes_are_filtered_too() {
        let log = PingLog::default();
        let early = frame(OP_PING, b"x");
        let mut filter = PingFilter::new(futures::io::empty(), early, log.clone());
        let mut buf = [0u8; 64];
        let n = futures::executor::block_on(futures::AsyncReadExt::read(&mut filter, &mut buf))
            .unwrap();
        assert_eq!(n, 7);
        assert_eq!(buf[0] & 0x0F, OP_PONG);
        assert!(log.was_ping());
        assert!(!log.was_ping(), "nothing more recorded");
    }
}
