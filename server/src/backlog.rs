//! Ingest backpressure: readers wait while woken writers with deep queues
//! have not run yet.
//!
//! Why: a broadcast only queues frames and wakes writers; the writers run
//! later, when the executor gets to them. On one executor thread (the
//! default, for batching) every reader task already queued runs before
//! any writer woken meanwhile. When a thousand clients join a room at
//! once, each join's `presence` lands in every member's queue before any
//! member's writer has run, the queues pass `--queue`, and members that
//! read perfectly well are closed as slow consumers.
//!
//! So a member whose writer has been woken but has not run yet, and whose
//! queue has reached a quarter of `--queue`, is counted here as *deep*;
//! while any member is deep, readers yield before carrying out their next
//! request, which lets the writers (runnable, queued ahead of the yielding
//! readers) drain first. A writer parked on a full socket is not woken, so
//! it is never counted: a client that really stopped reading cannot hold
//! everyone else up, it still reaches the limit and is closed. Batching is
//! untouched below a quarter of the queue (about 8 frames per write carry
//! the big rooms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest a reader waits for writers before it goes on anyway.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The number of members that are deep (see the module docs).
#[derive(Debug, Default)]
pub struct Backlog {
    deep: AtomicUsize,
}

impl Backlog {
    pub fn is_congested(&self) -> bool {
        self.deep.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn add(&self) {
        self.deep.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove(&self) {
        self.deep.fetch_sub(1, Ordering::SeqCst);
    }

    /// Yields to the rest of the executor until no member is deep. Every
    /// deep member's writer is runnable, so this ends as soon as they have
    /// run. A reader late in a big burst waits about as long as the
    /// burst takes (3 000 simultaneous joins: about 2 s), so no short bound
    /// fits; the bound only guards against a miscount (each writer's
    /// standing is one atomic, see `Outbox::standing`, so there should be
    /// none), which must cost a logged delay, never a server that only
    /// yields.
    pub async fn wait_clear(&self) {
        if !self.is_congested() {
            return;
        }
        let started = Instant::now();
        while self.is_congested() {
            if started.elapsed() >= MAX_WAIT {
                log::warn!("writers still behind after {MAX_WAIT:?}; carrying on");
                return;
            }
            crate::writer::YieldNow::default().await;
        }
    }
}
