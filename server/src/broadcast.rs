//! The broadcast path: one encoded frame handed to every member's queue.
//!
//! Called with the registry lock held, so every member of a room sees the
//! room's frames in one order. It never awaits: a full queue is a slow
//! consumer and is disconnected on the spot, not waited for. It does not
//! wake the members' writers either — that is [`Wakeups`]' job, after the
//! lock is released.

use std::sync::Arc;
use std::task::Waker;

use crate::outbox::{CloseReason, Frame, Offer, Outbox};
use crate::registry::ConnId;

/// Delivers `frame` to each recipient. The connection whose request caused
/// it (`origin`) always gets its copy; others may be dropped as slow.
pub fn deliver<'a>(
    recipients: impl IntoIterator<Item = (&'a ConnId, &'a Arc<Outbox>)>,
    frame: &Frame,
    origin: ConnId,
    wakes: &mut Wakeups,
) {
    for (&id, outbox) in recipients {
        if outbox.is_closed() {
            // Leaving anyway: no frame, no wake-up (see `Outbox::closed`).
            continue;
        }
        if id == origin {
            outbox.push_own(frame.clone());
        } else {
            offer(id, outbox, frame);
        }
        wakes.defer(outbox);
        outbox.note_depth();
    }
}

/// Offers an event to one connection that did not cause it.
pub fn offer(id: ConnId, outbox: &Outbox, frame: &Frame) {
    if outbox.offer(frame.clone()) == Offer::Full {
        log::info!(
            "connection {id}: slow consumer ({} frames queued), disconnecting",
            outbox.len()
        );
        outbox.close(CloseReason::SlowConsumer);
    }
}

/// Writers to wake once the registry lock is released.
///
/// Waking a parked task can cost a syscall (the executor may have to wake a
/// sleeping thread); doing it for every member of a big room while holding
/// the registry lock made every other sender wait for all of those wakes.
/// So deliveries only collect the wakers, and dropping `Wakeups` wakes
/// them. Declare it *before* taking the lock guard: locals drop in reverse
/// order, so the guard is released first.
#[derive(Default)]
pub struct Wakeups(Vec<Waker>);

impl Wakeups {
    /// Remembers to wake `outbox`'s writer, if it is parked.
    pub fn defer(&mut self, outbox: &Outbox) {
        if let Some(waker) = outbox.take_waker() {
            self.0.push(waker);
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for waker in self.0.drain(..) {
            waker.wake();
        }
    }
}
