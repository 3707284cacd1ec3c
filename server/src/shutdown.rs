//! The shutdown signal: asyncio's `Event`, set once and awaited by every task.
//!
//! A flag alone would need polling; an `event_listener::Event` alone could
//! lose a wake-up that fires between "check" and "wait". The classic pattern
//! — check the flag, register a listener, check again, then wait — closes
//! that gap, so a task that starts waiting after the signal returns at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;

/// A cloneable handle to one shared, set-once signal.
#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    set: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the signal and wakes every waiter; later calls do nothing.
    pub(crate) fn trigger(&self) {
        if !self.inner.set.swap(true, Ordering::SeqCst) {
            self.inner.event.notify(usize::MAX);
        }
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is set (immediately if it already is).
    pub(crate) async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}
