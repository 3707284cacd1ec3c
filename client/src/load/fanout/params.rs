//! A fanout run's parameters and its publishers' schedule: what the
//! single process, each worker and the tally all compute from.

use std::time::Duration;

pub(super) struct Params {
    pub(super) subs: usize,
    pub(super) pubs: usize,
    pub(super) rooms: usize,
    pub(super) rate: f64,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    pub(super) drain: Duration,
    pub(super) size: usize,
}

/// When say number `n` (from 1) of publisher `j` of `pubs`, each saying
/// `rate` per second, is due, in seconds after the schedule start:
/// publishers are staggered over one interval so sends spread evenly, then
/// each says every `1 / rate` seconds. `publish` paces by it and the reply
/// reader times each `ok` from it.
pub(super) fn due_at(rate: f64, pubs: usize, j: usize, n: u64) -> f64 {
    let offset = j as f64 / (pubs as f64 * rate);
    offset + n.saturating_sub(1) as f64 / rate
}

/// How long deliveries must stay flat after an incomplete drain to count as
/// stopped rather than late.
pub(super) const STALL_WINDOW: Duration = Duration::from_secs(1);
