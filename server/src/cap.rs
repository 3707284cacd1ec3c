//! The connection cap: an `async_lock::Semaphore` with one permit per slot.
//!
//! asyncio would use `Semaphore` the same way. The permit is taken with
//! `try_acquire` before the handshake — a full server answers 503 at once
//! instead of queueing sockets — and lives inside the connection task as an
//! owned guard, so the slot comes back however the task ends: normal close,
//! error, cancellation or panic unwinding.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_lock::{Semaphore, SemaphoreGuardArc};

#[derive(Clone)]
pub(crate) struct ConnectionCap {
    permits: Arc<Semaphore>,
    in_use: Arc<AtomicUsize>,
}

/// One connection slot; dropping it frees the slot.
pub(crate) struct Slot {
    _permit: SemaphoreGuardArc,
    in_use: Arc<AtomicUsize>,
}

impl ConnectionCap {
    pub(crate) fn new(max: usize) -> Self {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            in_use: Arc::default(),
        }
    }

    /// A free slot, or `None` when the server is full.
    pub(crate) fn try_acquire(&self) -> Option<Slot> {
        let permit = self.permits.try_acquire_arc()?;
        self.in_use.fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            _permit: permit,
            in_use: self.in_use.clone(),
        })
    }

    /// Slots held right now.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Runs before the permit field drops, so the count never lags the
        // semaphore by more than this one statement.
        self.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}
