//! The broadcast path: one encoded frame handed to every member's queue.
//!
//! Called with the registry lock held, so every member of a room sees the
//! room's frames in one order. It never awaits: a full queue is a slow
//! consumer and is disconnected on the spot, not waited for.

use std::sync::Arc;

use crate::outbox::{Frame, Offer, Outbox};
use crate::registry::ConnId;

/// Delivers `frame` to each recipient. The connection whose request caused
/// it (`origin`) always gets its copy; others may be dropped as slow.
pub fn deliver<'a>(
    recipients: impl IntoIterator<Item = (&'a ConnId, &'a Arc<Outbox>)>,
    frame: &Frame,
    origin: ConnId,
) {
    for (&id, outbox) in recipients {
        if id == origin {
            outbox.push_own(frame.clone());
        } else {
            offer(id, outbox, frame);
        }
    }
}

/// Offers an event to one connection that did not cause it.
pub fn offer(id: ConnId, outbox: &Outbox, frame: &Frame) {
    if outbox.offer(frame.clone()) == Offer::Full {
        log::info!(
            "connection {id}: slow consumer ({} frames queued), disconnecting",
            outbox.len()
        );
        outbox.close(crate::outbox::CloseReason::SlowConsumer);
    }
}
