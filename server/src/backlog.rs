//! Ingest backpressure: readers wait while woken writers with deep queues
//! have not run yet.
//!
//! Why: a broadcast only queues frames and wakes writers; the writers run
//! later, when the executor gets to them. When a thousand clients join a
//! room at once, every join's `presence` can land in every member's queue
//! before any member's writer has run; the queues pass `--queue` and
//! members that read perfectly well are closed as slow consumers. On one
//! executor thread (the default, for batching) this is certain: every
//! reader already queued runs before any writer woken meanwhile.
//!
//! So a member whose writer has been woken but has not run, and whose
//! queue has reached a quarter of `--queue`, is counted here as *deep* (the
//! outbox's state machine does the counting, see [`crate::outbox`]); while
//! any member is deep, readers wait before carrying out their next
//! request. The wait ends on a signal, not on a guess about scheduling
//! order: whatever brings the count to zero (the last deep writer taking
//! its frames, or a deep member closing) wakes every waiting reader, once
//! it has released its locks. That holds on one executor thread or many, and on any runtime.
//! A writer parked on a full socket has not been woken, so it is never
//! counted: a client that really stopped reading cannot hold everyone else
//! up; it still reaches the limit and is closed. Batching is untouched
//! below a quarter of the queue (about 8 frames per write carry the big
//! rooms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use event_listener::Event;

/// The longest a reader waits for writers before it goes on anyway.
///
/// A reader late in a big burst waits about as long as the burst takes
/// (3 000 simultaneous joins: about 2 s), so no short bound fits; the bound
/// only guards against a miscount, which must cost a logged delay, never a
/// server that stops reading.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The number of members that are deep, and the signal that it fell to 0.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    deep: AtomicUsize,
    clear: Event,
}

impl Backlog {
    pub(crate) fn is_congested(&self) -> bool {
        self.deep.load(Ordering::SeqCst) > 0
    }

    /// A woken writer's queue became deep (called by the outbox).
    pub(crate) fn add(&self) {
        self.deep.fetch_add(1, Ordering::SeqCst);
    }

    /// A deep writer ran or stopped (called by the outbox, under its lock).
    /// Returns whether it was the last: the caller then calls
    /// [`Backlog::notify_clear`] once its locks are released (waking
    /// thousands of readers is no work to do under a lock).
    pub(crate) fn remove(&self) -> bool {
        self.deep.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Lets the waiting readers go (they look again: a writer may have
    /// become deep since).
    pub(crate) fn notify_clear(&self) {
        self.clear.notify(usize::MAX);
    }

    /// Waits until no member is deep (at once if none is).
    pub(crate) async fn wait_clear(&self) {
        if self.is_congested() {
            // Boxed: this future is part of every idle connection's reader;
            // the timer and the listener are only needed when congested.
            Box::pin(self.wait_congested()).await;
        }
    }

    async fn wait_congested(&self) {
        let waited = natter_runtime::timeout(MAX_WAIT, async {
            loop {
                // Listen, then look again: a `remove` between the first
                // look and `listen` would otherwise be a lost wake-up.
                let listener = self.clear.listen();
                if !self.is_congested() {
                    return;
                }
                listener.await;
            }
        })
        .await;
        if waited.is_none() {
            log::warn!("writers still behind after {MAX_WAIT:?}; carrying on");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Backlog;

    #[test]
    fn readers_wait_for_the_last_deep_writer() {
        let backlog = Arc::new(Backlog::default());
        backlog.add();
        backlog.add();
        natter_runtime::block_on(async {
            let mut wait = std::pin::pin!(backlog.wait_clear());
            assert!(futures::poll!(wait.as_mut()).is_pending());
            assert!(!backlog.remove());
            assert!(futures::poll!(wait.as_mut()).is_pending(), "one still deep");
            assert!(backlog.remove(), "the last one");
            backlog.notify_clear();
            wait.await;
        });
        assert!(!backlog.is_congested());
    }
}
