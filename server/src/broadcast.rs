//! The broadcast path: the one enqueue step every frame for a connection
//! takes — room messages, presence, whispers, replies, the welcome, the
//! keepalive ping, the shutdown notice.
//!
//! There is no channel and no broadcast task. A room message is encoded
//! once ([`crate::frame`]); the sender's own task, holding the registry
//! lock so every member sees one order, pushes a shared handle to it into
//! each member's [`Outbox`]. It never awaits there: a full queue is a slow
//! consumer and is closed on the spot, not waited for. The step is the
//! same for every producer:
//! 1. skip a member that is already closing (one atomic load);
//! 2. push, which queues, counts, and marks a writer falling behind
//!    (all inside the outbox's state machine);
//! 3. a refused event closes a slow consumer;
//! 4. the writer's wake-up is collected, and happens only once the lock
//!    is released: [`Locked`] owns both the registry guard and the
//!    collected wake-ups and lets go of them in that order.
//!
//! Why wake after the lock: waking a parked task can cost a syscall; a
//! thousand of them under the registry lock made every other sender wait.
//!
//! Three frames skip steps 1 and 3 because they cannot meet them: the
//! keepalive [`ping`] (the outbox keeps at most one, never refused), the
//! [`pong`] to a client's ping (the reader's own, so never refused), and
//! the shutdown notice, [`last_word`] (queued and closed in one step).

use std::sync::Arc;

use async_lock::{Mutex, MutexGuard};
use async_tungstenite::tungstenite::Bytes;

use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::outbox::{Cause, Outbox, Refused, Wakeups};

/// A registry lock guard together with the wake-ups its deliveries
/// collected. Dropping it releases the lock first, then wakes the writers:
/// Rust drops a struct's fields in declaration order, so `guard` must stay
/// the first field (the test below checks it).
pub(crate) struct Locked<'a, T> {
    guard: MutexGuard<'a, T>,
    wakes: Wakeups,
}

impl<'a, T> Locked<'a, T> {
    /// Takes the lock.
    pub(crate) async fn lock(mutex: &'a Mutex<T>) -> Locked<'a, T> {
        Locked {
            guard: mutex.lock().await,
            wakes: Wakeups::default(),
        }
    }

    /// The locked state and the way to deliver frames while holding it,
    /// borrowed apart so a delivery can read the state (a room's members).
    pub(crate) fn parts(&mut self) -> (&mut T, Post<'_>) {
        (&mut self.guard, Post(&mut self.wakes))
    }
}

/// Delivers frames; the writers are woken when the [`Locked`] (or, for
/// [`reply`], the call) it came from ends.
pub(crate) struct Post<'w>(&'w mut Wakeups);

impl Post<'_> {
    /// Delivers `frame` to each member of a room. The connection whose
    /// request caused it (`origin`) always gets its copy; others may be
    /// dropped as slow.
    pub(crate) fn broadcast<'m>(
        &mut self,
        members: impl IntoIterator<Item = (&'m ConnId, &'m Arc<Outbox>)>,
        frame: &Frame,
        origin: ConnId,
    ) {
        for (&id, outbox) in members {
            let cause = if id == origin {
                Cause::Own
            } else {
                Cause::Other
            };
            self.send(id, outbox, frame, cause);
        }
    }

    /// Delivers `frame` to one connection.
    pub(crate) fn send(&mut self, id: ConnId, outbox: &Outbox, frame: &Frame, cause: Cause) {
        if outbox.is_closed() {
            // Leaving anyway: no frame, no wake-up.
            return;
        }
        if outbox.push(frame.clone(), cause, self.0) == Err(Refused::Full) {
            log::info!(
                "connection {id}: slow consumer ({} frames queued), disconnecting",
                outbox.len()
            );
            outbox.close_into(CloseReason::SlowConsumer, self.0);
        }
    }
}

/// Queues a connection's reply to its own request and wakes its writer:
/// for callers holding no lock.
pub(crate) fn reply(id: ConnId, outbox: &Outbox, frame: Frame) {
    Post(&mut Wakeups::default()).send(id, outbox, &frame, Cause::Own);
}

/// Queues a keepalive ping (unless one is waiting) and wakes the writer.
pub(crate) fn ping(outbox: &Outbox) {
    outbox.ping(&mut Wakeups::default());
}

/// Queues the answer to a client's ping and wakes the writer.
pub(crate) fn pong(outbox: &Outbox, data: Bytes) {
    outbox.pong(data, &mut Wakeups::default());
}

/// Queues the connection's last frame and closes it in one step, so that
/// nothing can land behind it.
pub(crate) fn last_word(outbox: &Outbox, frame: Frame, reason: CloseReason) {
    outbox.push_last(frame, reason);
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};

    use super::*;
    use crate::backlog::Backlog;

    /// A waker that records whether the registry lock was free when it was
    /// woken.
    struct Probe {
        lock: Arc<Mutex<()>>,
        free_when_woken: AtomicBool,
    }

    impl Wake for Probe {
        fn wake(self: Arc<Self>) {
            let free = self.lock.try_lock().is_some();
            self.free_when_woken.store(free, Ordering::SeqCst);
        }
    }

    #[test]
    fn writers_are_woken_after_the_lock_is_released() {
        let lock = Arc::new(Mutex::new(()));
        let probe = Arc::new(Probe {
            lock: lock.clone(),
            free_when_woken: AtomicBool::new(false),
        });
        let outbox = Outbox::new(8, 2, Arc::new(Backlog::default()));
        natter_runtime::block_on(async {
            // Park the writer with the probe as its waker.
            let mut writer = outbox.writer();
            let waker = Waker::from(probe.clone());
            let mut cx = std::task::Context::from_waker(&waker);
            let mut next = std::pin::pin!(writer.next_batch());
            assert!(next.as_mut().poll(&mut cx).is_pending());
            {
                let mut locked = Locked::lock(&lock).await;
                let (_, mut post) = locked.parts();
                post.send(2, &outbox, &Frame::from("hi"), Cause::Other);
                assert!(!probe.free_when_woken.load(Ordering::SeqCst));
            }
        });
        assert!(probe.free_when_woken.load(Ordering::SeqCst));
    }
}
