//! Each connection's bounded outbound queue (asyncio's `Queue(maxsize=N)`),
//! and the rule that decides who waits and who gets dropped when it fills.
//!
//! Frames are `Utf8Bytes`: a room message is encoded once and every member's
//! queue holds a reference-counted handle to the same bytes.
//!
//! Two kinds of producer share one queue, with different rights, and the
//! queue counts their frames apart:
//! - **Events caused by someone else** ([`Outbox::offer`]) never wait: if
//!   `limit` of them are already queued, the reader is too slow for the
//!   room, and it is disconnected. Waiting would let one stalled socket
//!   stall the sender (and the registry lock the sender holds).
//! - **Frames caused by the connection's own requests** ([`Outbox::push_own`]:
//!   replies, the echo of its own messages, its own presence) are always
//!   accepted. Before reading its next request, the connection waits in
//!   [`Outbox::wait_for_space`] until fewer than `limit` own frames are
//!   queued, so a client that pipelines faster than it reads is slowed down
//!   (TCP backpressure reaches it), never dropped: its own frames do not
//!   count towards the slow-consumer limit.
//!
//! One request causes at most `headroom` own frames, so the queue never
//! holds more than `2 * limit + headroom + 2` items (the 2: the final
//! `shutdown` event and one keepalive ping): that is the memory bound of one
//! connection's queue, in frames whose bytes are mostly shared.
//!
//! Why not an `async_channel`: the queue is a `VecDeque` behind a std mutex
//! (held for a push or a swap, never across an await) plus an `AtomicWaker`
//! for the one consumer, the writer. That lets a broadcast *queue* a frame
//! for a thousand members while holding the registry lock and *wake* their
//! writers only after releasing it ([`crate::broadcast::Wakeups`]); waking a
//! parked task can cost a syscall, and a thousand of them under the lock
//! serialized every sender behind it. It also lets the writer take the whole
//! queue in one swap, and an idle connection's queue costs no allocation.
//!
//! Every wait on the queue has exactly one waiter (one half of one
//! connection), so each is an `AtomicWaker` inside the outbox rather than
//! an `event_listener::Event`: no allocation per connection for the event
//! or its listeners (about 250 bytes per idle connection), and a wake-up
//! nobody waits for is one atomic swap. Each wait has its own slot so that
//! one kind of wake-up never polls a half waiting for another: a reply
//! must not poll a reader parked on its socket, for instance.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};

use async_tungstenite::tungstenite::Utf8Bytes;
use futures::task::AtomicWaker;
use natter_protocol::CloseCode;
use natter_protocol::close::reason;

use crate::backlog::Backlog;

/// One encoded text frame, shareable between many queues.
pub type Frame = Utf8Bytes;

/// Why a connection is being closed; the first reason recorded wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame; tungstenite answers it.
    PeerClosed,
    /// The socket failed or hit EOF; there is nobody to tell.
    Gone,
    SlowConsumer,
    Flooding,
    Binary,
    TooBig,
    BadUtf8,
    ProtocolViolation,
    Internal,
    Shutdown,
    /// Nothing heard from the peer within the idle timeout.
    Idle,
}

impl CloseReason {
    /// The close frame to send, if any.
    pub fn close_frame(self) -> Option<(CloseCode, &'static str)> {
        Some(match self {
            CloseReason::PeerClosed | CloseReason::Gone => return None,
            CloseReason::SlowConsumer => (CloseCode::POLICY, reason::SLOW_CONSUMER),
            CloseReason::Flooding => (CloseCode::POLICY, reason::FLOODING),
            CloseReason::Binary => (
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not supported",
            ),
            CloseReason::TooBig => (CloseCode::TOO_BIG, "message too big"),
            CloseReason::BadUtf8 => (CloseCode::INVALID_PAYLOAD, "invalid UTF-8"),
            CloseReason::ProtocolViolation => (CloseCode::PROTOCOL_ERROR, "protocol error"),
            CloseReason::Internal => (CloseCode::INTERNAL, "internal error"),
            CloseReason::Shutdown => (CloseCode::GOING_AWAY, reason::SHUTDOWN),
            CloseReason::Idle => (CloseCode::NORMAL, "idle timeout"),
        })
    }

    /// Whether frames still queued are thrown away rather than delivered:
    /// a slow consumer would not read them, and a closed or dead socket
    /// cannot take them.
    pub fn discards_queue(self) -> bool {
        matches!(
            self,
            CloseReason::PeerClosed | CloseReason::Gone | CloseReason::SlowConsumer
        )
    }
}

/// What happened to an event offered to someone else's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue is at its limit: the reader is a slow consumer.
    Full,
    /// The connection is closing; the event is not for it any more.
    Closed,
}

/// Who caused a queued frame; decides which count it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Own,
    Other,
}

/// One item for the writer: a text frame, or a keepalive ping.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(Frame, Origin),
    Ping,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    closed: bool,
}

pub struct Outbox {
    queue: Mutex<Queue>,
    /// The writer, when it is parked waiting for frames.
    writer: AtomicWaker,
    limit: usize,
    headroom: usize,
    own: AtomicUsize,
    others: AtomicUsize,
    ping_queued: AtomicBool,
    /// The reader, when it waits for the writer to make space.
    space: AtomicWaker,
    reason: OnceLock<CloseReason>,
    /// `queue.closed`, readable without the lock: a broadcast skips a
    /// closing member with one load. When thousands of clients drop at
    /// once, each one's `leave` goes past all the others, which are closing
    /// too; a push attempt each (counters, lock, waker) made that storm
    /// take seconds of the executor.
    closed: AtomicBool,
    aborted: AtomicBool,
    /// The reader and the writer, each waiting for the queue to be
    /// abandoned (indexed by [`Side`]).
    abort: [AtomicWaker; 2],
    /// The writer's standing for [`crate::backlog`]: [`PARKED`] (waiting in
    /// `take_all`), [`PENDING`] (woken by a broadcast since), [`DEEP`]
    /// (counted in `backlog`). One atomic, so that a broadcast marking it
    /// and the writer clearing it as it runs cannot interleave into a mark
    /// that outlives the wait (which would stall every reader).
    standing: AtomicU8,
    backlog: Arc<Backlog>,
}

const PARKED: u8 = 1;
const PENDING: u8 = 2;
const DEEP: u8 = 4;

/// Which half of the connection waits in [`Outbox::aborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reader = 0,
    Writer = 1,
}

impl Outbox {
    /// A queue of `limit` frames for others' events, plus `headroom` for the
    /// frames a single own request can cause.
    pub fn new(limit: usize, headroom: usize, backlog: Arc<Backlog>) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::default(),
            writer: AtomicWaker::new(),
            limit,
            headroom,
            own: AtomicUsize::new(0),
            others: AtomicUsize::new(0),
            ping_queued: AtomicBool::new(false),
            space: AtomicWaker::new(),
            reason: OnceLock::new(),
            closed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            abort: [AtomicWaker::new(), AtomicWaker::new()],
            standing: AtomicU8::new(0),
            backlog,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Only pushes and swaps happen under this lock; a panic cannot leave
        // the deque half-modified, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends unless closed; does not wake the writer (see [`Outbox::wake`]).
    fn push(&self, item: Outgoing) -> bool {
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        q.items.push_back(item);
        true
    }

    /// Queues an event caused by another connection, without waiting and
    /// without waking the writer: the caller wakes it once it has released
    /// its own locks.
    pub fn offer(&self, frame: Frame) -> Offer {
        if self.others.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.others.fetch_sub(1, Ordering::SeqCst);
            return if self.is_closed() {
                Offer::Closed
            } else {
                Offer::Full
            };
        }
        if self.push(Outgoing::Text(frame, Origin::Other)) {
            Offer::Queued
        } else {
            self.others.fetch_sub(1, Ordering::SeqCst);
            Offer::Closed
        }
    }

    /// Queues a frame caused by this connection's own request, without
    /// waking the writer.
    pub fn push_own(&self, frame: Frame) {
        // The final `shutdown` event may come on top of a full allowance.
        if self.own.fetch_add(1, Ordering::SeqCst) > self.limit + self.headroom {
            self.own.fetch_sub(1, Ordering::SeqCst);
            // Unreachable by the argument in the module docs; if it ever
            // happens, closing beats silently losing a reply.
            log::error!("own frames exceeded their bound; closing connection");
            self.close(CloseReason::Internal);
            return;
        }
        if !self.push(Outgoing::Text(frame, Origin::Own)) {
            // Closed: the connection is going away and the frame with it.
            self.own.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Queues a reply and wakes the writer: for callers holding no lock.
    pub fn reply(&self, frame: Frame) {
        self.push_own(frame);
        self.wake();
    }

    /// Wakes the writer if it is parked.
    pub fn wake(&self) {
        self.writer.wake();
    }

    /// The parked writer's waker, taken so it can be woken later (after
    /// the caller's locks are released); `None` if the writer is running.
    pub fn take_waker(&self) -> Option<Waker> {
        let waker = self.writer.take();
        if waker.is_some() {
            // Only a writer still parked is marked: one that has started
            // running has cleared its standing, and the mark fails.
            let _ = self.standing.compare_exchange(
                PARKED,
                PARKED | PENDING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        waker
    }

    /// After a broadcast queued a frame here: counts this member in the
    /// backlog if its writer is woken but has not run, and its queue has
    /// reached a quarter of the limit (see [`crate::backlog`]).
    pub fn note_depth(&self) {
        const WOKEN: u8 = PARKED | PENDING;
        if self.standing.load(Ordering::SeqCst) == WOKEN
            && self.others.load(Ordering::SeqCst) >= (self.limit / 4).max(1)
            && self
                .standing
                .compare_exchange(WOKEN, WOKEN | DEEP, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.backlog.add();
        }
    }

    /// The writer runs (or is gone): it no longer holds anyone up.
    fn ran(&self) {
        if self.standing.load(Ordering::SeqCst) != 0
            && self.standing.swap(0, Ordering::SeqCst) & DEEP != 0
        {
            self.backlog.remove();
        }
    }

    /// Whether the reader may go on to its next request: fewer than
    /// `limit` own frames queued, or the connection is closing.
    pub fn has_space(&self) -> bool {
        self.own.load(Ordering::SeqCst) < self.limit || self.is_closed()
    }

    /// Waits until [`Outbox::has_space`]: the pipelining client's brake.
    /// Only the connection's reader may wait here.
    pub async fn wait_for_space(&self) {
        wait_until(&self.space, || self.has_space()).await;
    }

    /// Queues a keepalive ping unless one is already waiting.
    pub fn ping(&self) {
        if !self.ping_queued.swap(true, Ordering::SeqCst) {
            if self.push(Outgoing::Ping) {
                self.wake();
            } else {
                self.ping_queued.store(false, Ordering::SeqCst);
            }
        }
    }

    /// The writer's receive: moves every queued item into `batch` (which
    /// must be empty). Resolves to `false` once the queue is closed and
    /// empty.
    pub async fn take_all(&self, batch: &mut VecDeque<Outgoing>) -> bool {
        // Not parked when it returns: the slot is emptied (a broadcast must
        // not take a waker for a writer busy elsewhere, say on a full
        // socket) and the standing cleared.
        let running = |more| {
            self.writer.take();
            self.ran();
            Poll::Ready(more)
        };
        std::future::poll_fn(|cx| {
            if let Some(more) = self.try_take_all(batch) {
                return running(more);
            }
            self.writer.register(cx.waker());
            // Check again: a push between the first look and `register`
            // would otherwise be a lost wake-up.
            match self.try_take_all(batch) {
                Some(more) => running(more),
                None => {
                    self.standing.fetch_or(PARKED, Ordering::SeqCst);
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn try_take_all(&self, batch: &mut VecDeque<Outgoing>) -> Option<bool> {
        let mut q = self.lock();
        if !q.items.is_empty() {
            std::mem::swap(&mut q.items, batch);
            return Some(true);
        }
        q.closed.then_some(false)
    }

    /// Moves whatever else is queued to the end of `batch`.
    pub fn take_more(&self, batch: &mut VecDeque<Outgoing>) {
        let mut q = self.lock();
        batch.extend(q.items.drain(..));
    }

    /// Called by the writer for each item it takes off the queue.
    pub fn taken(&self, item: &Outgoing) {
        match item {
            Outgoing::Text(_, Origin::Own) => {
                self.own.fetch_sub(1, Ordering::SeqCst);
            }
            Outgoing::Text(_, Origin::Other) => {
                self.others.fetch_sub(1, Ordering::SeqCst);
            }
            Outgoing::Ping => self.ping_queued.store(false, Ordering::SeqCst),
        }
    }

    /// Called by the writer after a batch, to wake a waiting reader.
    pub fn notify_space(&self) {
        self.space.wake();
    }

    /// Queues a last frame of its own and closes, in one step: nothing an
    /// other connection sends can land behind it (the `shutdown` event must
    /// be the last thing before the close frame).
    pub fn close_with(&self, frame: Frame, reason: CloseReason) {
        {
            let mut q = self.lock();
            if !q.closed {
                self.own.fetch_add(1, Ordering::SeqCst);
                q.items.push_back(Outgoing::Text(frame, Origin::Own));
            }
        }
        self.close(reason);
    }

    /// Records why the connection closes and stops the queue taking frames.
    /// Frames already queued are still delivered unless the reason discards
    /// them. Later calls keep the first reason.
    pub fn close(&self, reason: CloseReason) {
        let reason = *self.reason.get_or_init(|| reason);
        {
            let mut q = self.lock();
            q.closed = true;
            self.closed.store(true, Ordering::SeqCst);
        }
        self.wake();
        self.space.wake();
        if reason.discards_queue() && !self.aborted.swap(true, Ordering::SeqCst) {
            self.abort.iter().for_each(AtomicWaker::wake);
            // The writer stops without taking its frames.
            self.ran();
        }
    }

    /// Whether the queue takes no more frames. Set under the queue's lock,
    /// so once this is true no push can succeed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Whether the queue has been abandoned (see [`Outbox::aborted`]).
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Resolves once the queue has been abandoned (slow consumer, dead
    /// socket, peer close): the writer stops and the reader stops reading.
    /// Each side may have one waiter at a time.
    pub async fn aborted(&self, side: Side) {
        wait_until(&self.abort[side as usize], || self.is_aborted()).await;
    }

    /// Frames waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits on `slot` (one waiter at a time) until `ready()` holds. The
/// second check after registering closes the gap where the condition
/// changed, and its wake-up was spent, between the first look and the
/// registration.
async fn wait_until(slot: &AtomicWaker, ready: impl Fn() -> bool) {
    std::future::poll_fn(|cx| {
        if ready() {
            return Poll::Ready(());
        }
        slot.register(cx.waker());
        if ready() {
            // Unregister, or a later wake-up for nobody would poll this
            // half for nothing (a `recv` that finds no data, for a reader).
            slot.take();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

impl Drop for Outbox {
    /// However the connection ended, it must not stay counted as deep.
    fn drop(&mut self) {
        self.ran();
    }
}
