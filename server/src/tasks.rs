//! Tracking spawned connection tasks so shutdown can wait for all of them:
//! the role asyncio's `TaskGroup` (or `gather` over every task) plays.
//!
//! Connection tasks are spawned one by one as sockets arrive, so a fixed
//! `join_all` does not fit; a count of live tasks plus a wake-up when it
//! reaches zero does, and costs nothing per message. Each task holds a
//! [`TaskToken`]; dropping it — on return, on cancellation, on panic
//! unwinding — is what counts the task out, so no path can leak a count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_listener::Event;

#[derive(Clone, Default)]
pub(crate) struct TaskTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    live: AtomicUsize,
    idle: Event,
}

/// Held by a tracked task for as long as it runs.
pub(crate) struct TaskToken {
    inner: Arc<Inner>,
}

impl TaskTracker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Counts a task in; keep the token inside the task.
    pub(crate) fn token(&self) -> TaskToken {
        self.inner.live.fetch_add(1, Ordering::SeqCst);
        TaskToken {
            inner: self.inner.clone(),
        }
    }

    /// Tasks still running.
    pub(crate) fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Resolves when no tracked task is left.
    pub(crate) async fn wait_idle(&self) {
        loop {
            if self.live() == 0 {
                return;
            }
            let listener = self.inner.idle.listen();
            if self.live() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify(usize::MAX);
        }
    }
}
