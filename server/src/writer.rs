//! The writer half of a connection: drains the outbox into the socket.
//!
//! It sends everything queued with one flush — many frames per syscall
//! under load — and is the only place that writes to the socket, so frames
//! leave in exactly the order they were queued.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use async_tungstenite::WebSocketSender;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::{Bytes, Message};
use futures::SinkExt;
use futures::future::{Either, select};
use std::task::Poll;

use natter_runtime::{sleep, timeout};
use prometheus_client::metrics::counter::Counter;

use crate::close_reason::CloseReason;
use crate::frame::Frame as Text;
use crate::outbox::{Batch, Outbox, Outgoing, STALL, Side};
use crate::ping_filter::Wire;

/// How long a close frame may take to get out before the socket is dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Text frames longer than this go out as several fragments of this size.
/// tungstenite copies a frame whole into its write buffer and keeps the
/// buffer's capacity for the connection's life: a 2.4 MB join reply sent in
/// one frame left 2.6 MiB behind per connection. In fragments the buffer
/// never grows past `write_buffer_size` plus one fragment, and a reader
/// that is slow to take a big reply holds the writer back fragment by
/// fragment instead of the server holding a second copy of it.
pub(crate) const FRAGMENT: usize = 4096;

/// Bytes of one big message the writer sends before letting other tasks run.
const YIELD_BYTES: usize = 16 * FRAGMENT;

/// Runs until the outbox is closed and drained (or abandoned), then sends
/// the close frame its close reason calls for.
/// Every frame written is counted in `sent` (`natter_deliveries_total`),
/// once per batch.
pub(crate) async fn run(mut sink: WebSocketSender<Wire>, outbox: &Outbox, sent: &Counter) {
    let drained = {
        let drain = pin!(drain(&mut sink, outbox, sent));
        let aborted = pin!(outbox.aborted(Side::Writer));
        match select(drain, aborted).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => Ok(()),
        }
    };
    if let Err(async_tungstenite::tungstenite::Error::WriteBufferFull(_)) = &drained {
        // A frame larger than the write buffer's bound: say so with 1011
        // rather than dropping the connection without a word.
        log::error!("a frame exceeded the write buffer bound; closing with 1011");
        outbox.close(CloseReason::Internal);
    } else if drained.is_err() && outbox.reason() != Some(CloseReason::PeerClosed) {
        // The socket failed: nothing more can be sent on it.
        outbox.close(CloseReason::Gone);
        return;
    }
    // After the client's close, a frame that raced it fails to send
    // (tungstenite refuses data after a close), but the close reply must
    // still go out: that is the flush below. Boxed: this runs once, and its
    // state would otherwise be part of every connection for its whole life.
    Box::pin(close(sink, outbox)).await;
}

/// Sends the close frame (or the reply to the client's) the outbox's close
/// reason calls for.
async fn close(mut sink: WebSocketSender<Wire>, outbox: &Outbox) {
    match outbox.reason() {
        Some(CloseReason::Gone) | None => {}
        Some(CloseReason::PeerClosed) => {
            // Flushes tungstenite's automatic reply to the client's close
            // (sending a close of our own would be a protocol error now).
            let _ = timeout(CLOSE_SEND_TIMEOUT, sink.flush()).await;
        }
        Some(reason) => {
            if let Some((code, why)) = reason.close_frame() {
                let frame = CloseFrame {
                    code: code.0.into(),
                    reason: why.into(),
                };
                let _ = timeout(CLOSE_SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
            }
        }
    }
}

/// Moves frames from the queue to the socket until the queue is closed
/// and empty, or abandoned.
async fn drain(
    sink: &mut WebSocketSender<Wire>,
    outbox: &Outbox,
    sent: &Counter,
) -> Result<(), async_tungstenite::tungstenite::Error> {
    let mut queue = outbox.writer();
    while let Some(batch) = queue.next_batch().await {
        // Boxed: an idle connection's writer is parked in `next_batch`, and
        // the state of sending a batch would otherwise be part of it for
        // the connection's whole life (one small allocation a batch costs
        // less than that memory on thousands of idle connections).
        let mut send = Box::pin(send_batch(sink, batch));
        // Usually the socket takes the whole batch at once. If not, the
        // writer counts as the server's lag (it paces everyone's readers,
        // see `crate::outbox`) only until `STALL` has passed; the timer is
        // armed only then.
        let frames = match futures::poll!(send.as_mut()) {
            Poll::Ready(frames) => frames?,
            Poll::Pending => Box::pin(send_or_stall(send.as_mut(), outbox)).await?,
        };
        sent.inc_by(frames);
    }
    Ok(())
}

/// Finishes sending a batch that the socket did not take at once; past
/// [`STALL`] the writer stops counting as the server's lag.
async fn send_or_stall(
    send: Pin<&mut impl Future<Output = Result<u64, async_tungstenite::tungstenite::Error>>>,
    outbox: &Outbox,
) -> Result<u64, async_tungstenite::tungstenite::Error> {
    match select(send, pin!(sleep(STALL))).await {
        Either::Left((sent, _)) => sent,
        Either::Right(((), send)) => {
            outbox.stalled();
            send.await
        }
    }
}

/// Feeds one batch to the socket and flushes it; returns how many frames
/// it held.
async fn send_batch(
    sink: &mut WebSocketSender<Wire>,
    batch: Batch<'_, '_>,
) -> Result<u64, async_tungstenite::tungstenite::Error> {
    let mut frames = 0;
    for item in batch {
        frames += 1;
        match item {
            // Boxed: rare, and its state would otherwise be part of every
            // connection's writer.
            Outgoing::Text(text, _) if text.len() > FRAGMENT => {
                Box::pin(feed_fragments(sink, text)).await?;
            }
            Outgoing::Text(text, _) => sink.feed(Message::Text(text)).await?,
            Outgoing::Ping => sink.feed(Message::Ping(Bytes::new())).await?,
            Outgoing::Pong(data) => sink.feed(Message::Pong(data)).await?,
        }
    }
    sink.flush().await?;
    Ok(frames)
}

/// Feeds one text message as fragments of [`FRAGMENT`] bytes (RFC 6455
/// §5.4): a text frame without FIN, continuations, the last with FIN. The
/// fragments share the message's bytes; UTF-8 may be split between them
/// (the receiver validates the whole message).
async fn feed_fragments(
    sink: &mut WebSocketSender<Wire>,
    text: Text,
) -> Result<(), async_tungstenite::tungstenite::Error> {
    let bytes = Bytes::from(text);
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = if start == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let fragment = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
        sink.feed(Message::Frame(fragment)).await?;
        start = end;
        // A socket that takes everything at once (loopback, a fast client)
        // would let one 2.4 MB reply hold the executor for milliseconds:
        // let other tasks run between slices of it.
        if start % YIELD_BYTES == 0 {
            natter_runtime::yield_now().await;
        }
    }
    Ok(())
}
