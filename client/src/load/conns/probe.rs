//! `conns --probe N`: a request/reply round trip on a sample of the held
//! connections, while all are held. An open socket proves little: a
//! server can accept and then never read it again (a stuck node of a
//! cluster, an event loop that stopped serving old connections). So N
//! connections spread over the whole run each send one `who` and must get
//! the reply; every one unanswered is a problem.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use natter::LeanSender;
use natter_protocol::Request;
use serde::{Deserialize, Serialize};

use crate::load::net::Share;
use crate::load::net::{self, REPLY_TIMEOUT};
use crate::load::report::Findings;
use crate::load::stats::{Hist, HistState, Percentiles, SharedHist, lock};

/// The room the probes ask about (any room will do: `who` needs no
/// membership, and in a cluster it is answered through the shared broker).
pub const PROBE_ROOM: &str = "natter-probe";

/// Which of `count` connections (by global index) are probed: `n` of
/// them, one in each of `n` equal blocks of the index range, at an offset
/// that turns with the block (block m probes its (m mod length)-th
/// index). Equal steps alone could land every probe on one worker or URL
/// (300 connections, 100 probes and 3 workers: every 3rd index is worker
/// 0's); turning the offset covers every residue of a block's length.
pub fn sample(count: usize, n: usize) -> Vec<usize> {
    let n = n.min(count);
    (0..n)
        .map(|m| {
            let start = m * count / n;
            let len = ((m + 1) * count / n - start).max(1);
            start + m % len
        })
        .collect()
}

/// The probes of one process: which connections, when each asked, and the
/// answers.
#[derive(Default)]
pub struct Probes {
    /// Global index → sender, for the sampled connections of this process
    /// (kept apart from the others until the probe is sent).
    senders: Mutex<BTreeMap<usize, LeanSender>>,
    asked: Mutex<BTreeMap<usize, Instant>>,
    probed: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    round_trip: SharedHist,
    /// Which connections this process probes (global indices).
    chosen: Vec<usize>,
}

impl Probes {
    /// The probes of `share` of a run of `count` connections probing `n`.
    pub fn new(count: usize, n: usize, share: Share) -> Probes {
        Probes {
            chosen: sample(count, n)
                .into_iter()
                .filter(|&i| share.owns(i))
                .collect(),
            ..Probes::default()
        }
    }

    pub fn is_probed(&self, i: usize) -> bool {
        self.chosen.binary_search(&i).is_ok()
    }

    /// Keeps a sampled connection's sender for the probe.
    pub fn keep(&self, i: usize, sender: LeanSender) {
        lock(&self.senders).insert(i, sender);
    }

    /// A frame that came in on probed connection `i`: a reply to its probe
    /// (the only request it sends) is timed.
    pub fn frame(&self, i: usize, frame: &str) {
        let kind = net::frame_type(frame);
        let ok = match kind.as_deref() {
            Some("ok") => true,
            Some("error") => false,
            _ => return,
        };
        let Some(asked) = lock(&self.asked).remove(&i) else {
            return;
        };
        if ok {
            self.round_trip.record_duration(asked.elapsed());
            self.answered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends every probe, then waits (at most [`REPLY_TIMEOUT`]) for the
    /// replies.
    pub async fn run(&self) {
        let mut senders = std::mem::take(&mut *lock(&self.senders));
        for (&i, sender) in &mut senders {
            lock(&self.asked).insert(i, Instant::now());
            let request = Request::Who {
                room: PROBE_ROOM.to_owned(),
            };
            self.probed.fetch_add(1, Ordering::Relaxed);
            if sender.send(request).await.is_err() {
                // Counted as unanswered: the connection is gone.
                lock(&self.asked).remove(&i);
            }
        }
        *lock(&self.senders) = senders;
        net::wait_until(REPLY_TIMEOUT, || lock(&self.asked).is_empty()).await;
    }

    /// The senders kept for probing, to close with the others.
    pub fn take_senders(&self) -> Vec<LeanSender> {
        std::mem::take(&mut *lock(&self.senders))
            .into_values()
            .collect()
    }

    pub fn state(&self) -> ProbeState {
        ProbeState {
            probed: self.probed.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            round_trip: self.round_trip.state(),
        }
    }
}

/// The probes' counts, as plain data (summed over workers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeState {
    pub probed: u64,
    pub answered: u64,
    /// Probes answered with an `error`.
    pub refused: u64,
    pub round_trip: HistState,
}

impl ProbeState {
    pub fn merge(&mut self, other: &ProbeState) {
        self.probed += other.probed;
        self.answered += other.answered;
        self.refused += other.refused;
        let mut h = Hist::new();
        h.merge(&self.round_trip);
        h.merge(&other.round_trip);
        self.round_trip = h.state();
    }

    pub fn round_trip(&self) -> Option<Percentiles> {
        let mut h = Hist::new();
        h.merge(&self.round_trip);
        h.summary()
    }

    /// Every probe must have been answered with `ok`.
    pub fn judge(&self, findings: &mut Findings) {
        let unanswered = self.probed.saturating_sub(self.answered + self.refused);
        findings.problem_if(unanswered, |n| {
            format!(
                "{n} of {} probed connections got no reply to a request within {} s while \
                 all were held",
                self.probed,
                REPLY_TIMEOUT.as_secs()
            )
        });
        findings.problem_if(self.refused, |n| {
            format!("{n} probed connections got an error reply to `who`")
        });
    }
}

/// How long the probe may take at most (sending, then the replies).
pub fn limit() -> Duration {
    REPLY_TIMEOUT + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_workers_and_urls() {
        let s = sample(300, 100);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        for r in 0..3 {
            assert!(s.iter().filter(|&&i| i % 3 == r).count() >= 33, "{s:?}");
        }
        assert_eq!(sample(300, 30)[..4], [0, 11, 22, 33]);
        assert_eq!(sample(5, 10), [0, 1, 2, 3, 4]);
        assert!(sample(10, 0).is_empty());
        assert!(sample(100_000, 1000).iter().all(|&i| i < 100_000));
    }
}
