//! Measurement helpers: latency histograms (HdrHistogram) and sequence
//! trackers that tell loss, duplicates and reordering apart.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest value a histogram records exactly: one hour, in microseconds.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    pub fn new() -> Hist {
        // The bounds are constants that HdrHistogram accepts.
        Hist(Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds"))
    }

    /// A histogram with 2 significant digits (1 % resolution), a tenth of
    /// the memory of [`Hist::new`]: for the per-second histograms of
    /// `series`, one per second of the run, where 3 digits cost ~200 KB
    /// each.
    pub fn coarse() -> Hist {
        // The bounds are constants that HdrHistogram accepts.
        Hist(Histogram::new_with_bounds(1, HIGHEST_MICROS, 2).expect("valid histogram bounds"))
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value (µs) at `quantile` (0 … 1), or `None` when empty.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(quantile))
    }

    /// The largest value recorded (µs, to the histogram's precision).
    pub fn max(&self) -> Option<u64> {
        (!self.0.is_empty()).then(|| self.0.max())
    }

    /// The recorded buckets, for another process to merge ([`Hist::merge`]).
    pub fn state(&self) -> HistState {
        HistState(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds the values of `state` (from [`Hist::state`] of a histogram
    /// with the same or finer precision): the same counts in the same
    /// buckets as if this histogram had recorded them itself.
    pub fn merge(&mut self, state: &HistState) {
        for &(value, count) in &state.0 {
            let _ = self.0.record_n(value.clamp(1, HIGHEST_MICROS), count);
        }
    }

    /// Log-spaced buckets of the whole histogram (see [`Bucket`]): from the
    /// first non-empty bucket to the last, each bound √2 times the one
    /// before, starting at 10 µs.
    pub fn buckets(&self) -> Vec<Bucket> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Bucket> = self
            .0
            .iter_log(10, std::f64::consts::SQRT_2)
            .map(|v| Bucket {
                le_ms: v.value_iterated_to() as f64 / 1000.0,
                count: v.count_since_last_iteration(),
            })
            .collect();
        while out.last().is_some_and(|b| b.count == 0) {
            out.pop();
        }
        let first = out.iter().position(|b| b.count > 0).unwrap_or(0);
        out.drain(..first);
        out
    }

    /// Records one value in microseconds (clamped to 1 µs … 1 h).
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, HIGHEST_MICROS));
    }

    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// The percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        let q = |quantile: f64| ms(self.0.value_at_quantile(quantile));
        Some(Percentiles {
            count: self.0.len(),
            min_ms: ms(self.0.min()),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(self.0.max()),
        })
    }
}

/// A histogram as its recorded buckets, `(value µs, count)` pairs, each
/// value the highest equivalent value of its bucket: what a worker process
/// hands its parent. Recording the pairs back into a histogram of the same
/// (or coarser) precision puts every count into the bucket it came from,
/// so merged histograms are exactly the one histogram all values would
/// have made, not an average of percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistState(pub Vec<(u64, u64)>);

/// One bucket of a latency histogram in the report: `count` values (not
/// cumulative) above the previous bucket's `le_ms` and at most this
/// `le_ms` milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// A histogram shared by many tasks. Hot paths buffer values locally
/// ([`SharedHist::flush`]) so the lock is taken once per batch.
#[derive(Default)]
pub struct SharedHist(Mutex<Hist>);

/// Values a task collects before flushing them into a [`SharedHist`].
pub const LOCAL_BATCH: usize = 256;

impl SharedHist {
    pub fn record_duration(&self, d: Duration) {
        lock(&self.0).record_duration(d);
    }

    /// Moves a task's buffered values into the histogram.
    pub fn flush(&self, local: &mut Vec<u64>) {
        if local.is_empty() {
            return;
        }
        let mut hist = lock(&self.0);
        for &v in local.iter() {
            hist.record(v);
        }
        local.clear();
    }

    pub fn summary(&self) -> Option<Percentiles> {
        lock(&self.0).summary()
    }

    pub fn state(&self) -> HistState {
        lock(&self.0).state()
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// One line for the readable summary.
    pub fn line(&self) -> String {
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n={})",
            ms(self.p50_ms),
            ms(self.p90_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms),
            self.count
        )
    }
}

/// Formats milliseconds with a precision that suits the magnitude.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{:.2} s", v / 1000.0)
    }
}

/// What one observation did to a [`SeqTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next number in order.
    InOrder,
    /// Ahead of the next expected: the numbers skipped are missing (for now).
    Gap,
    /// A number that was missing arrives late: reordered, but not lost.
    Late,
    /// A number already seen (or one from before the tracker's start).
    Duplicate,
}

impl Seen {
    /// Whether this was the first delivery of its number.
    pub fn is_new(self) -> bool {
        !matches!(self, Seen::Duplicate)
    }
}

/// Tracks one numbered stream (a room's `seq` as one member sees it, or one
/// publisher's sequence as one subscriber sees it) in O(1) memory while the
/// stream is in order; only numbers skipped over are remembered.
#[derive(Debug)]
pub struct SeqTracker {
    start: u64,
    next: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub late: u64,
    pub gaps: u64,
    missing: HashSet<u64>,
    /// Skipped numbers beyond what `missing` keeps (then a late arrival may
    /// be counted as a duplicate).
    pub overflow: bool,
}

/// Most skipped numbers one tracker remembers.
const MAX_MISSING: usize = 65_536;

impl SeqTracker {
    /// A stream whose next expected number is `after + 1`.
    pub fn new(after: u64) -> SeqTracker {
        SeqTracker {
            start: after,
            next: after + 1,
            distinct: 0,
            duplicates: 0,
            late: 0,
            gaps: 0,
            missing: HashSet::new(),
            overflow: false,
        }
    }

    pub fn observe(&mut self, n: u64) -> Seen {
        if n == self.next {
            self.next += 1;
            self.distinct += 1;
            Seen::InOrder
        } else if n > self.next {
            self.gaps += 1;
            for skipped in self.next..n {
                if self.missing.len() >= MAX_MISSING {
                    self.overflow = true;
                    break;
                }
                self.missing.insert(skipped);
            }
            self.next = n + 1;
            self.distinct += 1;
            Seen::Gap
        } else if self.missing.remove(&n) {
            self.late += 1;
            self.distinct += 1;
            Seen::Late
        } else {
            self.duplicates += 1;
            Seen::Duplicate
        }
    }

    /// Highest number seen so far (the start if none).
    pub fn highest(&self) -> u64 {
        self.next - 1
    }

    /// Numbers in `start+1 ..= last` never seen.
    pub fn lost(&self, last: u64) -> u64 {
        last.saturating_sub(self.start)
            .saturating_sub(self.distinct)
    }
}

/// What a [`SeqTracker`] knows, as plain data: what a worker process hands
/// its parent so that the parent judges every stream exactly as the
/// tracker itself would (the same formulas, in [`TrackerState`]'s methods).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackerState {
    pub start: u64,
    pub highest: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Numbers skipped over and not seen since (usually none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<u64>,
}

impl SeqTracker {
    pub fn state(&self) -> TrackerState {
        let mut missing: Vec<u64> = self.missing.iter().copied().collect();
        missing.sort_unstable();
        TrackerState {
            start: self.start,
            highest: self.highest(),
            distinct: self.distinct,
            duplicates: self.duplicates,
            late: self.late,
            missing,
        }
    }
}

impl TrackerState {
    /// How many distinct numbers in `start+1 ..= upto` were seen.
    pub fn received_upto(&self, upto: u64) -> u64 {
        let top = self.highest.min(upto);
        let skipped = self.missing.iter().filter(|&&m| m <= top).count() as u64;
        top.saturating_sub(self.start).saturating_sub(skipped)
    }

    /// Numbers skipped over and still not seen: real gaps, as opposed to
    /// a tail that has not arrived yet.
    pub fn gaps_open(&self) -> u64 {
        self.missing.len() as u64
    }

    /// Numbers after the highest seen, up to `last`: not arrived (yet).
    pub fn tail(&self, last: u64) -> u64 {
        last.saturating_sub(self.highest)
    }
}

/// The lock's data stays valid if a holder panicked; keep going.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Nearest-rank percentile of a small sample (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_clean() {
        let mut t = SeqTracker::new(0);
        for n in 1..=100 {
            assert_eq!(t.observe(n), Seen::InOrder);
        }
        assert_eq!(
            (t.distinct, t.duplicates, t.late, t.lost(100)),
            (100, 0, 0, 0)
        );
    }

    #[test]
    fn gaps_late_and_duplicates() {
        let mut t = SeqTracker::new(10);
        assert_eq!(t.observe(11), Seen::InOrder);
        assert_eq!(t.observe(14), Seen::Gap); // 12, 13 missing
        assert_eq!(t.observe(12), Seen::Late);
        assert_eq!(t.observe(12), Seen::Duplicate);
        assert_eq!(t.observe(5), Seen::Duplicate); // before the start
        assert_eq!(t.observe(15), Seen::InOrder);
        assert_eq!(t.lost(16), 2); // 13 and 16
        assert_eq!(t.state().received_upto(16), 4); // 11, 12, 14, 15
        assert_eq!(t.state().received_upto(13), 2); // 11, 12
        assert_eq!((t.distinct, t.duplicates, t.late, t.gaps), (4, 2, 1, 1));
    }

    #[test]
    fn percentile_nearest_rank() {
        let mut v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 95.0), Some(Duration::from_millis(19)));
        assert_eq!(percentile(&mut v, 100.0), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&mut [], 95.0), None);
    }

    /// A histogram rebuilt from its state, or from the states of two
    /// halves, is the same histogram: merging is exact.
    #[test]
    fn histogram_state_merges_exactly() {
        let (mut all, mut a, mut b) = (Hist::new(), Hist::new(), Hist::new());
        let mut x: u64 = 12345;
        for n in 0..5000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 1 + (x >> 40) % 2_000_000;
            all.record(v);
            if n % 3 == 0 { a.record(v) } else { b.record(v) }
        }
        let mut merged = Hist::new();
        merged.merge(&a.state());
        merged.merge(&b.state());
        assert_eq!(merged.0, all.0);
        assert_eq!(merged.state(), all.state());
        let (s, m) = (all.summary().unwrap(), merged.summary().unwrap());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms, s.min_ms),
            (m.count, m.p50_ms, m.p99_ms, m.max_ms, m.min_ms)
        );
        let buckets = all.buckets();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 5000);
        assert!(buckets.windows(2).all(|w| w[0].le_ms < w[1].le_ms));
    }

    #[test]
    fn tracker_state_judges_like_the_tracker() {
        let mut t = SeqTracker::new(10);
        for n in [11, 14, 12, 12, 5, 15, 19] {
            t.observe(n);
        }
        let s = t.state();
        // 11, 12, 14, 15, 19 seen; 13, 16, 17, 18 skipped.
        assert_eq!(s.received_upto(15), 4);
        assert_eq!(s.received_upto(30), 5);
        assert_eq!(s.tail(21), 2);
        assert_eq!(s.gaps_open(), 4);
        assert_eq!((s.distinct, s.duplicates, s.late), (t.distinct, 2, 1));
        assert_eq!(s.missing, [13, 16, 17, 18]);
    }

    #[test]
    fn histogram_summary() {
        let mut h = Hist::new();
        assert!(h.summary().is_none());
        for v in 1..=1000 {
            h.record(v * 1000);
        }
        let s = h.summary().unwrap();
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
    }
}
