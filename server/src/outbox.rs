//! Each connection's bounded outbound queue (asyncio's `Queue(maxsize=N)`),
//! as one small state machine: who may add a frame, who waits, who is
//! woken, and when the connection counts as falling behind.
//!
//! Producers never touch this type directly: they go through the enqueue
//! step in [`crate::broadcast`]. The connection's writer takes frames
//! through a [`WriterSide`], and its reader waits here for space.
//!
//! # Two kinds of frames
//! The queue counts frames by who caused them ([`Cause`]):
//! - **Others' events** never wait: if `limit` of them are queued, the
//!   reader is too slow for the room and the push is refused
//!   ([`Refused::Full`]; the caller closes it as a slow consumer). Waiting
//!   would let one stalled socket stall the sender, and the registry lock
//!   the sender holds.
//! - **Own frames** (replies, the echo of its own messages, its presence)
//!   are always accepted. Before reading its next request the reader waits
//!   in [`Outbox::wait_for_space`] until fewer than `limit` are queued, so a
//!   client that pipelines faster than it reads is slowed down (TCP
//!   backpressure reaches it), never dropped.
//!
//! Both are also counted in bytes, because frames differ in size by four
//! orders of magnitude (a presence event against a join reply carrying a
//! hundred escaped messages): others' events past [`OTHERS_BYTES`] make a
//! slow consumer as `limit` frames do, and own frames past [`OWN_BYTES`]
//! hold the reader as `limit` own frames do.
//!
//! One request causes at most `headroom` own frames, so the queue never
//! holds more than `2 * limit + headroom + 3` items (the 3: the final
//! `shutdown` event, one keepalive ping, one pong), and never more than
//! `OTHERS_BYTES + OWN_BYTES` plus one request's replies in bytes: one
//! connection's memory bound (README "Memory and limits" adds it up).
//!
//! # The writer's states (all under one lock, [`Inner::writer`])
//! ```text
//!            park (queue empty, open; uncounted)
//!  Running ───────────────────────────▶ Parked(waker)
//!   ▲ │ ▲                                  │ push: the waker goes to the
//!   │ │ │ finds frames, yields first       │ producer's Wakeups
//!   │ │ └──────────────────────────┐       ▼
//!   │ │ takes its batch (uncounted) └──▶ Woken { deep }
//!   │ │◀──────────────────────────────────┘
//!   │ │ socket takes nothing for STALL (uncounted)
//!   │ └──────────▶ Stalled ── finds frames ──▶ Woken
//!   Parked ──close──▶ Running (woken to drain and finish, or to stop)
//! ```
//! A writer that is `Woken` (not run yet, or yielding before it takes its
//! frames, see [`WriterSide::next_batch`]) or `Running` (sending a batch)
//! while pushes take its queue to a quarter of the limit is *deep*:
//! counted in the [`Backlog`], which paces every reader, until it takes its
//! next batch. Both are the server's own lag, not the client's: with one
//! executor thread the writer has not been scheduled yet, with several it
//! is still sending while other threads push. A writer whose socket takes
//! nothing for [`STALL`] is `Stalled` and never counted: a client that
//! stopped reading can hold the others up for that long at most, and is
//! then closed as a slow consumer when its queue fills.
//!
//! # Closing
//! Closed is stored once, in [`Outbox::closed`]: 0 while open, else the
//! [`CloseReason`]'s code, written only under the lock so no push can slip
//! in after it, and readable without the lock so a broadcast skips a
//! closing member with one load (when thousands drop at once, each one's
//! `leave` goes past all the others, which are closing too).
//!
//! # Why not a channel
//! A `VecDeque` behind a std mutex (held for a push or a swap, never across
//! an await) lets a broadcast *queue* a frame for a thousand members while
//! holding the registry lock and *wake* their writers after releasing it
//! (waking a parked task can cost a syscall; a thousand of them under the
//! lock serialized every sender). It lets the writer take the whole queue
//! in one swap, and an idle connection's queue costs no allocation. Each
//! wait has exactly one waiter (one half of one connection), so a waker
//! slot per wait replaces an `Event` and its listeners.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use async_tungstenite::tungstenite::Bytes;

use crate::backlog::Backlog;
use crate::close_reason::CloseReason;
use crate::frame::Frame;

/// Bytes of others' events a connection may fall behind by before it is a
/// slow consumer, whatever `--queue` allows in frames: 256 maximal
/// messages (4 096 bytes of text escaping to 24 KiB each) would otherwise
/// be 6 MiB held for one reader that does not read.
pub(crate) const OTHERS_BYTES: usize = 2 << 20;

/// Bytes of own frames queued before the reader waits to read the next
/// request: what a client that pipelines re-joins of a room with a full
/// history and never reads can make the server hold, plus one reply.
pub(crate) const OWN_BYTES: usize = 1 << 20;

/// Who caused a frame; decides which count it belongs to and whether a
/// full queue refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The connection's own request: always accepted, slows its reader.
    Own,
    /// Someone else's action: refused when `limit` are queued.
    Other,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `limit` events of others are queued: the reader is a slow consumer.
    Full,
    /// The connection is closing; the frame is not for it any more.
    Closed,
}

/// One item for the writer.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A text frame, with who caused it (for the counts).
    Text(Frame, Cause),
    /// A keepalive ping.
    Ping,
    /// The answer to a client's ping (counted as an own frame).
    Pong(Bytes),
}

impl Outgoing {
    /// What the item adds to its count, in bytes.
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Text(frame, _) => frame.len(),
            Outgoing::Ping => 0,
            Outgoing::Pong(data) => data.len(),
        }
    }
}

/// Frames and bytes of one kind, queued or in the writer's batch, packed in
/// one atomic (frames above bit 40, bytes below) so that counting a frame
/// in or out is one atomic operation, not two: it happens twice for every
/// delivery. `--queue` is at most a million (`Config::validate`), far below
/// the 2^24 frames the top bits hold, and no queue holds 2^40 bytes.
#[derive(Default)]
struct Tally(AtomicU64);

const FRAME: u64 = 1 << 40;

impl Tally {
    fn add(&self, bytes: usize) {
        self.0.fetch_add(FRAME + bytes as u64, Ordering::SeqCst);
    }

    fn sub(&self, bytes: usize) {
        self.0.fetch_sub(FRAME + bytes as u64, Ordering::SeqCst);
    }

    fn frames(&self) -> usize {
        (self.0.load(Ordering::SeqCst) / FRAME) as usize
    }

    fn bytes(&self) -> usize {
        (self.0.load(Ordering::SeqCst) % FRAME) as usize
    }
}

/// Which half of the connection waits in [`Outbox::aborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The reader half, which stops reading requests.
    Reader = 0,
    /// The writer half, which stops writing, even mid-frame on a full socket.
    Writer = 1,
}

pub(crate) struct Outbox {
    /// The queue and everything that changes with it (see [`Inner`]).
    inner: Mutex<Inner>,
    /// Own frames queued or in the writer's batch, not yet taken by the
    /// writer for the socket: the reader's brake. An atomic so the writer
    /// can count each frame off as it goes without taking the lock per
    /// frame; [`Batch`]'s drop then takes the lock to wake the reader, which
    /// is what makes [`Outbox::wait_for_space`] miss no decrement.
    own: Tally,
    /// Others' events queued or in the writer's batch: the slow-consumer
    /// measure.
    others: Tally,
    /// 0 while open, else the [`CloseReason`] code (see the module docs).
    closed: AtomicU8,
    /// Others' events a reader may fall behind by before it is dropped,
    /// and own frames it may have queued before its next request waits.
    limit: usize,
    /// Own frames one request may cause on top of `limit`.
    headroom: usize,
    /// Where a woken writer with a deep queue is counted (server-wide).
    backlog: Arc<Backlog>,
}

/// What the lock protects.
#[derive(Default)]
struct Inner {
    /// Frames waiting for the writer, oldest first.
    items: VecDeque<Outgoing>,
    /// Whether a keepalive ping is queued: never more than one.
    ping_queued: bool,
    /// Where the writer is (see the module docs).
    writer: Writer,
    /// The reader, waiting in [`Outbox::wait_for_space`].
    space: Option<Waker>,
    /// Each half, waiting in [`Outbox::aborted`] (indexed by [`Side`]).
    abort: [Option<Waker>; 2],
}

/// How long a writer's socket may take nothing before the writer stops
/// counting as the server's lag (see the module docs): long enough for a
/// reader that reads to drain a burst, short enough that a reader that
/// does not read holds the others up once, briefly.
pub(crate) const STALL: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer as producers see it.
enum Writer {
    /// Sending a batch, or gone: nothing to wake; `deep` as for `Woken`.
    Running { deep: bool },
    /// Sending a batch the socket has taken nothing of for [`STALL`]:
    /// nothing to wake, never counted.
    Stalled,
    /// Waiting for frames; the first producer takes this waker.
    Parked(Waker),
    /// Woken by a producer, or found frames and yielding before it takes
    /// them; `deep` when its queue reached a quarter of the limit
    /// meanwhile, and so counted in the [`Backlog`].
    Woken { deep: bool },
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::Running { deep: false }
    }
}

impl Inner {
    /// A parked writer's waker, taken to be woken; the writer is then
    /// `next` (Woken by a push, Running for a close).
    fn take_parked(&mut self, next: Writer) -> Option<Waker> {
        if !matches!(self.writer, Writer::Parked(_)) {
            return None;
        }
        match std::mem::replace(&mut self.writer, next) {
            Writer::Parked(waker) => Some(waker),
            _ => None,
        }
    }

    /// The writer moves to `next` and holds nobody up any more (it took
    /// its batch, stalled, parked or stopped). If it was the last deep one,
    /// the readers are let go by `wakes`.
    fn uncount(&mut self, next: Writer, backlog: &Arc<Backlog>, wakes: &mut Wakeups) {
        if let Writer::Woken { deep: true } | Writer::Running { deep: true } =
            std::mem::replace(&mut self.writer, next)
            && backlog.remove()
        {
            wakes.cleared = Some(backlog.clone());
        }
    }

    /// The writer runs (or stops for good).
    fn writer_runs(&mut self, backlog: &Arc<Backlog>, wakes: &mut Wakeups) {
        self.uncount(Writer::default(), backlog, wakes);
    }
}

/// Wake-ups to make once the caller's locks are released.
///
/// Waking a parked task can cost a syscall; doing it for every member of a
/// big room under the registry lock made every other sender wait for all
/// of those wakes. So a push only hands the writer's waker over, and
/// dropping `Wakeups` wakes them. The same goes for the readers waiting on
/// the [`Backlog`]: the transition that clears it only records that they
/// are to be let go. [`crate::broadcast::Locked`] owns one next to the
/// registry guard and releases the guard first; inside this module every
/// method that makes one drops its outbox lock before it.
#[derive(Default)]
pub(crate) struct Wakeups {
    /// Parked halves to wake.
    wakers: Vec<Waker>,
    /// The backlog whose deep count this call brought to zero.
    cleared: Option<Arc<Backlog>>,
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.wakers.drain(..).for_each(Waker::wake);
        if let Some(backlog) = self.cleared.take() {
            backlog.notify_clear();
        }
    }
}

impl Outbox {
    /// A queue of `limit` frames for others' events, plus `headroom` for the
    /// frames a single own request can cause.
    pub(crate) fn new(limit: usize, headroom: usize, backlog: Arc<Backlog>) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::default(),
            own: Tally::default(),
            others: Tally::default(),
            closed: AtomicU8::new(0),
            limit,
            headroom,
            backlog,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock can panic half-way through a change, so a
        // poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame`; the writer's waker, if it was parked, goes to
    /// `wakes`. The producers' one door in: [`crate::broadcast`] calls it.
    pub(crate) fn push(
        &self,
        frame: Frame,
        cause: Cause,
        wakes: &mut Wakeups,
    ) -> Result<(), Refused> {
        let mut inner = self.lock();
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        let bytes = frame.len();
        match cause {
            Cause::Other
                if self.others.frames() >= self.limit
                    || self.others.bytes() + bytes > OTHERS_BYTES =>
            {
                return Err(Refused::Full);
            }
            Cause::Other => self.others.add(bytes),
            // The final `shutdown` event may come on top of a full allowance.
            Cause::Own if self.own.frames() > self.limit + self.headroom => {
                // Unreachable by the argument in the module docs; if it ever
                // happens, closing beats silently losing a reply.
                drop(inner);
                log::error!("own frames exceeded their bound; closing connection");
                self.close_into(CloseReason::Internal, wakes);
                return Err(Refused::Closed);
            }
            Cause::Own => self.own.add(bytes),
        };
        inner.items.push_back(Outgoing::Text(frame, cause));
        self.woken_by_push(&mut inner, wakes);
        Ok(())
    }

    /// Queues a last own frame and closes, in one step: nothing another
    /// connection sends can land behind it (the `shutdown` event must be
    /// the last thing before the close frame).
    pub(crate) fn push_last(&self, frame: Frame, reason: CloseReason) {
        let mut wakes = Wakeups::default();
        let mut inner = self.lock();
        if self.is_closed() {
            return;
        }
        self.own.add(frame.len());
        inner.items.push_back(Outgoing::Text(frame, Cause::Own));
        // Closed under the same lock: no push can come between the two.
        self.close_locked(&mut inner, reason, &mut wakes);
        drop(inner); // then `wakes` wakes, unlocked
    }

    /// Queues a keepalive ping unless one is already waiting.
    pub(crate) fn ping(&self, wakes: &mut Wakeups) {
        let mut inner = self.lock();
        if !self.is_closed() && !inner.ping_queued {
            inner.ping_queued = true;
            inner.items.push_back(Outgoing::Ping);
            self.woken_by_push(&mut inner, wakes);
        }
    }

    /// Queues the answer to a client's ping, as an own frame (it counts
    /// towards the pipelining brake like a reply).
    pub(crate) fn pong(&self, data: Bytes, wakes: &mut Wakeups) {
        let mut inner = self.lock();
        if !self.is_closed() {
            self.own.add(data.len());
            inner.items.push_back(Outgoing::Pong(data));
            self.woken_by_push(&mut inner, wakes);
        }
    }

    /// The writer's transitions on a push: a parked writer is woken (after
    /// the caller's locks), and a woken one that has not run while its
    /// queue grew to a quarter of the limit is counted as deep.
    fn woken_by_push(&self, inner: &mut Inner, wakes: &mut Wakeups) {
        wakes
            .wakers
            .extend(inner.take_parked(Writer::Woken { deep: false }));
        let deep = match inner.writer {
            Writer::Woken { deep: false } => Writer::Woken { deep: true },
            Writer::Running { deep: false } => Writer::Running { deep: true },
            _ => return,
        };
        if self.others.frames() >= (self.limit / 4).max(1)
            || self.others.bytes() >= OTHERS_BYTES / 4
        {
            inner.writer = deep;
            self.backlog.add();
        }
    }

    /// Records why the connection closes and stops the queue taking frames.
    /// Frames already queued are still delivered unless the reason discards
    /// them, in which case both halves are told to stop. Later calls keep
    /// the first reason.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.close_into(reason, &mut Wakeups::default());
    }

    /// [`Outbox::close`], with the wake-ups left to the caller's `wakes`
    /// (a broadcast closing a slow consumer holds the registry lock).
    pub(crate) fn close_into(&self, reason: CloseReason, wakes: &mut Wakeups) {
        let mut inner = self.lock();
        if !self.is_closed() {
            self.close_locked(&mut inner, reason, wakes);
        }
    }

    /// The close transition, with the lock held (the wakes happen after).
    fn close_locked(&self, inner: &mut Inner, reason: CloseReason, wakes: &mut Wakeups) {
        self.closed.store(reason.code(), Ordering::SeqCst);
        // The writer must look again: to drain and finish, or to stop.
        wakes.wakers.extend(inner.take_parked(Writer::default()));
        wakes.wakers.extend(inner.space.take());
        if reason.discards_queue() {
            // The writer stops without taking its frames: uncount it now.
            inner.writer_runs(&self.backlog, wakes);
            wakes
                .wakers
                .extend(inner.abort.iter_mut().filter_map(Option::take));
        }
    }

    /// Whether the queue takes no more frames.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) != 0
    }

    /// Why the connection closes, once it does.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.closed.load(Ordering::SeqCst))
    }

    /// Whether the queue has been abandoned (slow consumer, dead socket,
    /// peer close): what is queued will not be sent.
    pub(crate) fn is_aborted(&self) -> bool {
        self.reason().is_some_and(CloseReason::discards_queue)
    }

    /// Resolves once the queue has been abandoned: the writer stops and the
    /// reader stops reading. Each side may have one waiter at a time.
    pub(crate) async fn aborted(&self, side: Side) {
        self.wait(
            |inner| &mut inner.abort[side as usize],
            || self.is_aborted(),
        )
        .await;
    }

    /// Whether the reader may go on to its next request: fewer than
    /// `limit` own frames and [`OWN_BYTES`] queued, or the connection is
    /// closing.
    pub(crate) fn has_space(&self) -> bool {
        (self.own.frames() < self.limit && self.own.bytes() < OWN_BYTES) || self.is_closed()
    }

    /// Waits until [`Outbox::has_space`]: the pipelining client's brake.
    /// Only the connection's reader may wait here.
    pub(crate) async fn wait_for_space(&self) {
        self.wait(|inner| &mut inner.space, || self.has_space())
            .await;
    }

    /// Waits in `slot` until `ready()`. The check and the registration are
    /// under the lock, and whatever makes the condition true takes the lock
    /// afterwards to wake the slot (closing sets `closed` under it; the
    /// writer counts `own` down without it but takes it when the batch
    /// ends), so no wake-up can fall between check and registration. The
    /// slot is emptied on the way out so a later wake-up does not poll a
    /// half that waits for something else.
    async fn wait(
        &self,
        slot: impl Fn(&mut Inner) -> &mut Option<Waker>,
        ready: impl Fn() -> bool,
    ) {
        std::future::poll_fn(|cx| {
            let mut inner = self.lock();
            if ready() {
                *slot(&mut inner) = None;
                Poll::Ready(())
            } else {
                let slot = slot(&mut inner);
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await;
    }

    /// Frames waiting to be written (for log lines).
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// The writer's end of the queue. One per connection.
    pub(crate) fn writer(&self) -> WriterSide<'_> {
        WriterSide {
            outbox: self,
            batch: VecDeque::new(),
        }
    }

    /// The writer's socket has taken nothing of its batch for [`STALL`]:
    /// it stops counting as the server's lag (see the module docs).
    pub(crate) fn stalled(&self) {
        let mut wakes = Wakeups::default();
        let mut inner = self.lock();
        if let Writer::Running { .. } = inner.writer {
            inner.uncount(Writer::Stalled, &self.backlog, &mut wakes);
        }
        drop(inner);
    }

    /// Counts off one item the writer took.
    fn sent(&self, item: &Outgoing) {
        match item {
            Outgoing::Text(_, Cause::Own) | Outgoing::Pong(_) => self.own.sub(item.bytes()),
            Outgoing::Text(_, Cause::Other) => self.others.sub(item.bytes()),
            Outgoing::Ping => {}
        }
    }
}

impl Drop for Outbox {
    /// However the connection ended, it must not stay counted as deep.
    fn drop(&mut self) {
        let mut wakes = Wakeups::default();
        let backlog = self.backlog.clone();
        self.lock().writer_runs(&backlog, &mut wakes);
    }
}

/// The writer's end: takes batches, counts each frame off as it goes to the
/// socket, and lets the reader know when there is space. Dropping it (the
/// writer ends, however) means nobody runs for this queue any more.
pub(crate) struct WriterSide<'a> {
    outbox: &'a Outbox,
    /// Reused from batch to batch; swapped with the queue's deque.
    batch: VecDeque<Outgoing>,
}

impl<'a> WriterSide<'a> {
    /// Waits for frames and takes them all; `None` once the queue is closed
    /// and drained, or abandoned.
    ///
    /// Before taking, it lets every task that is already runnable go first
    /// (other connections' broadcasts, usually): under load they add frames
    /// to this queue meanwhile, and all of them leave in one write. When the
    /// server is idle this costs nothing: nobody else is waiting.
    pub(crate) async fn next_batch(&mut self) -> Option<Batch<'_, 'a>> {
        let outbox = self.outbox;
        let more = std::future::poll_fn(|cx| {
            let mut wakes = Wakeups::default();
            let mut inner = outbox.lock();
            let poll = if outbox.is_aborted() || (inner.items.is_empty() && outbox.is_closed()) {
                inner.writer_runs(&outbox.backlog, &mut wakes);
                Poll::Ready(false)
            } else if !inner.items.is_empty() {
                // About to yield with frames still queued: until it takes
                // them it counts as woken, and may become deep.
                inner.writer = match inner.writer {
                    Writer::Running { deep } | Writer::Woken { deep } => Writer::Woken { deep },
                    Writer::Stalled | Writer::Parked(_) => Writer::Woken { deep: false },
                };
                Poll::Ready(true)
            } else {
                // Woken implies frames queued, so this uncounts nothing
                // today; it keeps a future change from leaking a count.
                inner.writer_runs(&outbox.backlog, &mut wakes);
                let waker = cx.waker();
                if !matches!(&inner.writer, Writer::Parked(w) if w.will_wake(waker)) {
                    inner.writer = Writer::Parked(waker.clone());
                }
                Poll::Pending
            };
            drop(inner);
            drop(wakes);
            poll
        })
        .await;
        if !more {
            return None;
        }
        natter_runtime::yield_now().await;
        let mut wakes = Wakeups::default();
        let mut inner = outbox.lock();
        inner.writer_runs(&outbox.backlog, &mut wakes);
        if outbox.is_aborted() {
            return None;
        }
        std::mem::swap(&mut inner.items, &mut self.batch);
        inner.ping_queued = false;
        drop(inner);
        drop(wakes);
        Some(Batch { side: self })
    }
}

impl Drop for WriterSide<'_> {
    fn drop(&mut self) {
        let mut wakes = Wakeups::default();
        self.outbox
            .lock()
            .writer_runs(&self.outbox.backlog, &mut wakes);
    }
}

/// One batch of frames for the socket, oldest first. Each item is counted
/// off as it is taken; dropping the batch counts off the rest (the writer
/// gave up on them) and wakes a reader waiting for space.
pub(crate) struct Batch<'s, 'a> {
    side: &'s mut WriterSide<'a>,
}

impl Iterator for Batch<'_, '_> {
    type Item = Outgoing;

    fn next(&mut self) -> Option<Outgoing> {
        let item = self.side.batch.pop_front()?;
        self.side.outbox.sent(&item);
        Some(item)
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        for item in self.side.batch.drain(..) {
            self.side.outbox.sent(&item);
        }
        let waiting = self.side.outbox.lock().space.take();
        if let Some(reader) = waiting {
            reader.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(limit: usize) -> (Arc<Outbox>, Arc<Backlog>) {
        let backlog = Arc::new(Backlog::default());
        (Outbox::new(limit, 2, backlog.clone()), backlog)
    }

    fn frame(s: &str) -> Frame {
        Frame::from(s.to_owned())
    }

    #[test]
    fn others_are_refused_at_the_limit_own_frames_are_not() {
        let (out, _) = outbox(2);
        let mut wakes = Wakeups::default();
        assert_eq!(out.push(frame("a"), Cause::Other, &mut wakes), Ok(()));
        assert_eq!(out.push(frame("b"), Cause::Other, &mut wakes), Ok(()));
        assert_eq!(
            out.push(frame("c"), Cause::Other, &mut wakes),
            Err(Refused::Full)
        );
        assert_eq!(out.push(frame("d"), Cause::Own, &mut wakes), Ok(()));
        assert_eq!(out.push(frame("e"), Cause::Own, &mut wakes), Ok(()));
        assert!(!out.has_space());
        out.close(CloseReason::Idle);
        assert!(out.has_space(), "a closing connection's reader never waits");
        assert_eq!(
            out.push(frame("f"), Cause::Own, &mut wakes),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn bytes_count_as_well_as_frames() {
        let (out, _) = outbox(1000);
        let mut wakes = Wakeups::default();
        let big = Frame::from("x".repeat(OTHERS_BYTES / 2));
        assert_eq!(out.push(big.clone(), Cause::Other, &mut wakes), Ok(()));
        assert_eq!(out.push(big.clone(), Cause::Other, &mut wakes), Ok(()));
        assert_eq!(
            out.push(frame("one byte more"), Cause::Other, &mut wakes),
            Err(Refused::Full),
            "others' bytes past OTHERS_BYTES make a slow consumer"
        );
        assert!(out.has_space());
        let reply = Frame::from("y".repeat(OWN_BYTES));
        assert_eq!(out.push(reply, Cause::Own, &mut wakes), Ok(()));
        assert!(!out.has_space(), "own bytes at OWN_BYTES hold the reader");
        natter_runtime::block_on(async {
            let mut writer = out.writer();
            assert_eq!(writer.next_batch().await.unwrap().count(), 3);
        });
        assert!(out.has_space());
        assert_eq!((out.own.bytes(), out.others.bytes()), (0, 0));
    }

    #[test]
    fn the_last_frame_comes_after_everything_and_closes() {
        let (out, _) = outbox(4);
        let mut wakes = Wakeups::default();
        out.push(frame("a"), Cause::Other, &mut wakes).unwrap();
        out.push_last(frame("bye"), CloseReason::Shutdown);
        assert_eq!(
            out.push(frame("late"), Cause::Other, &mut wakes),
            Err(Refused::Closed)
        );
        natter_runtime::block_on(async {
            let mut writer = out.writer();
            let texts: Vec<String> = writer
                .next_batch()
                .await
                .unwrap()
                .map(|item| match item {
                    Outgoing::Text(f, _) => f.as_str().to_owned(),
                    Outgoing::Ping | Outgoing::Pong(_) => "ping".into(),
                })
                .collect();
            assert_eq!(texts, ["a", "bye"]);
            assert!(writer.next_batch().await.is_none());
        });
        assert_eq!(out.reason(), Some(CloseReason::Shutdown));
        assert!(out.has_space());
    }

    #[test]
    fn a_woken_writer_with_a_deep_queue_is_counted_until_it_runs() {
        let (out, backlog) = outbox(8);
        natter_runtime::block_on(async {
            let mut writer = out.writer();
            // Park the writer: poll `next_batch` once on an empty queue.
            {
                let next = std::pin::pin!(writer.next_batch());
                let parked = futures::poll!(next);
                assert!(parked.is_pending());
            }
            let mut wakes = Wakeups::default();
            out.push(frame("1"), Cause::Other, &mut wakes).unwrap();
            assert_eq!(
                wakes.wakers.len(),
                1,
                "the parked writer's waker is handed over"
            );
            assert!(!backlog.is_congested(), "one frame is not deep");
            out.push(frame("2"), Cause::Other, &mut wakes).unwrap();
            assert!(backlog.is_congested(), "woken, unrun, a quarter full");
            let batch = writer.next_batch().await.unwrap();
            assert!(!backlog.is_congested(), "the writer ran");
            assert_eq!(batch.count(), 2);
        });
        assert!(out.has_space());
    }

    #[test]
    fn a_writer_still_sending_counts_as_deep_until_its_next_batch_or_a_stall() {
        let (out, backlog) = outbox(8);
        let mut wakes = Wakeups::default();
        natter_runtime::block_on(async {
            let mut writer = out.writer();
            out.push(frame("0"), Cause::Other, &mut wakes).unwrap();
            let batch = writer.next_batch().await.unwrap();
            // Sending that batch (another thread, say), pushes arrive.
            out.push(frame("1"), Cause::Other, &mut wakes).unwrap();
            out.push(frame("2"), Cause::Other, &mut wakes).unwrap();
            assert!(backlog.is_congested(), "busy, a quarter full: deep");
            assert_eq!(batch.count(), 1);
            let batch = writer.next_batch().await.unwrap();
            assert!(!backlog.is_congested(), "took its next batch");
            out.push(frame("3"), Cause::Other, &mut wakes).unwrap();
            out.push(frame("4"), Cause::Other, &mut wakes).unwrap();
            assert!(backlog.is_congested());
            out.stalled();
            assert!(!backlog.is_congested(), "a stalled socket holds nobody up");
            out.push(frame("5"), Cause::Other, &mut wakes).unwrap();
            assert!(!backlog.is_congested(), "and is not counted again");
            drop(batch);
        });
    }

    #[test]
    fn abandoning_the_queue_uncounts_a_deep_writer_and_discards_frames() {
        let (out, backlog) = outbox(4);
        natter_runtime::block_on(async {
            let mut writer = out.writer();
            {
                let next = std::pin::pin!(writer.next_batch());
                assert!(futures::poll!(next).is_pending());
            }
            let mut wakes = Wakeups::default();
            out.push(frame("1"), Cause::Other, &mut wakes).unwrap();
            assert!(backlog.is_congested());
            out.close(CloseReason::SlowConsumer);
            assert!(!backlog.is_congested());
            assert!(out.is_aborted());
            assert!(writer.next_batch().await.is_none());
            out.aborted(Side::Reader).await;
        });
    }
}
