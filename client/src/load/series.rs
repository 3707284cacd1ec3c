//! Time series of a run, one point a second: delivery latency percentiles
//! and deliveries per second, the schedule's offered rate, open
//! connections, and tester and server CPU. They show what one summary
//! number hides (a stall in second 12, latency creeping up as a room
//! grows), in `--json` under `"series"` and in the HTML report.
//!
//! Everything is kept as raw data ([`SeriesState`]: per-second histograms,
//! counts and CPU ticks) until the report is made, so that the series of
//! several worker processes merge exactly ([`SeriesState::merge`]): the
//! per-second percentiles of a merged run are those of the merged
//! histograms. Seconds are counted from one origin (unix time), which the
//! parent of a `--workers` run hands every worker, and the last interval
//! ends at the run's end, which the parent also decides; so every process
//! cuts the same intervals.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::stats::{Bucket, Hist, HistState, lock};
use crate::load::sys;
use crate::load::sys::unix_micros;

/// One interval: a second.
const INTERVAL_US: u64 = 1_000_000;

/// Most intervals a run records: a run is bounded by its deadline, this
/// only guards against a clock jump making one absurd index.
const MAX_INTERVALS: usize = 1_000_000;

/// What one process samples at an interval's end.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    connections: u64,
    tester_ticks: Option<u64>,
    server_ticks: Option<u64>,
}

/// Who to read CPU of: the server processes (`--server-pid`) and the
/// tester processes besides this one (a `--workers` run's workers, read
/// by their parent). A worker reads none: its parent reads it.
#[derive(Debug, Clone, Default)]
pub struct CpuSources {
    /// Whether to read CPU at all (the parent or a lone process does).
    pub enabled: bool,
    pub server_pids: Vec<u32>,
    pub other_testers: Vec<u32>,
}

impl CpuSources {
    fn sample(&self, connections: u64) -> Sample {
        if !self.enabled {
            return Sample {
                connections,
                ..Sample::default()
            };
        }
        let own = sys::process_ticks(None);
        let others: Option<u64> = self
            .other_testers
            .iter()
            .map(|&pid| sys::process_ticks(Some(pid)))
            .sum();
        Sample {
            connections,
            tester_ticks: own.zip(others).map(|(a, b)| a + b),
            server_ticks: sys::servers_ticks(&self.server_pids),
        }
    }
}

/// The recorder of one process: a sampler task (every second) and the
/// per-second latency histograms its readers flush into.
pub struct Series {
    origin_us: u64,
    latency: Mutex<Vec<Hist>>,
    samples: Mutex<Samples>,
    done: AtomicBool,
    connections: Box<dyn Fn() -> u64 + Send + Sync>,
    cpu: CpuSources,
}

struct Samples {
    /// At the recorder's start (intervals before it read as this).
    baseline: Sample,
    started_us: u64,
    /// (interval number from 1, sample at that interval's end).
    live: Vec<(usize, Sample)>,
}

impl Series {
    /// Starts recording from `origin_us` (unix µs; now, or the parent's
    /// origin in a worker), sampling `connections()` and `cpu` at every
    /// whole second after it until [`Series::finish`].
    pub fn start(
        origin_us: u64,
        connections: impl Fn() -> u64 + Send + Sync + 'static,
        cpu: CpuSources,
    ) -> Arc<Series> {
        let baseline = cpu.sample(connections());
        let series = Arc::new(Series {
            origin_us,
            latency: Mutex::default(),
            samples: Mutex::new(Samples {
                baseline,
                started_us: unix_micros(),
                live: Vec::new(),
            }),
            done: AtomicBool::new(false),
            connections: Box::new(connections),
            cpu,
        });
        natter_runtime::spawn(series.clone().sample_every_second());
        series
    }

    async fn sample_every_second(self: Arc<Self>) {
        let mut k = self.interval_of(unix_micros()) + 1;
        while !self.done.load(Ordering::Relaxed) && k < MAX_INTERVALS {
            let due = self.origin_us + k as u64 * INTERVAL_US;
            let now = unix_micros();
            if due > now {
                natter_runtime::sleep(Duration::from_micros(due - now)).await;
            }
            let sample = self.cpu.sample((self.connections)());
            let mut samples = lock(&self.samples);
            if self.done.load(Ordering::Relaxed) {
                return;
            }
            samples.live.push((k, sample));
            drop(samples);
            k = self.interval_of(unix_micros()) + 1;
        }
    }

    /// The interval (from 0) a moment in unix µs falls in.
    pub fn interval_of(&self, unix_us: u64) -> usize {
        let k = unix_us.saturating_sub(self.origin_us) / INTERVAL_US;
        usize::try_from(k)
            .unwrap_or(MAX_INTERVALS)
            .min(MAX_INTERVALS - 1)
    }

    /// Moves a reader's buffered `(interval, latency µs)` pairs into the
    /// per-second histograms (one lock per batch).
    pub fn flush(&self, buffered: &mut Vec<(u32, u64)>) {
        if buffered.is_empty() {
            return;
        }
        let mut hists = lock(&self.latency);
        for &(k, micros) in buffered.iter() {
            let k = k as usize;
            if hists.len() <= k {
                hists.resize_with(k + 1, Hist::coarse);
            }
            hists[k].record(micros);
        }
        buffered.clear();
    }

    /// Stops sampling and cuts the intervals: whole seconds from the origin
    /// up to `end_us`, the last one ending at `end_us`. Readers must have
    /// flushed; values after the end count in the last interval.
    pub fn finish(&self, end_us: u64) -> SeriesState {
        let last = self.cpu.sample((self.connections)());
        let mut samples = lock(&self.samples);
        self.done.store(true, Ordering::Relaxed);
        let span = end_us.saturating_sub(self.origin_us).max(1);
        let n = usize::try_from(span.div_ceil(INTERVAL_US))
            .unwrap_or(MAX_INTERVALS)
            .clamp(1, MAX_INTERVALS);
        // The sample closing interval k (from 1): the live one taken at its
        // end, the last one for the final interval, and for an interval the
        // sampler missed (it started later, or fell behind) the next one
        // taken (its CPU then shows in that later interval).
        let mut live = std::mem::take(&mut samples.live);
        live.retain(|(k, _)| *k < n);
        let closing = |k: usize| {
            if k == n {
                return last;
            }
            live.iter()
                .find(|(at, _)| *at >= k)
                .map_or(last, |(_, s)| *s)
        };
        let (baseline, started_us) = (samples.baseline, samples.started_us);
        drop(samples);
        let mut state = SeriesState {
            origin_us: self.origin_us,
            end_us,
            ..SeriesState::default()
        };
        let mut before = baseline;
        for k in 1..=n {
            // Intervals that ended before this process started read as its
            // start (a worker starts after its parent's origin).
            let at = if self.origin_us + k as u64 * INTERVAL_US <= started_us {
                baseline
            } else {
                closing(k)
            };
            state.connections.push(at.connections);
            state
                .tester_ticks
                .push(delta(before.tester_ticks, at.tester_ticks));
            state
                .server_ticks
                .push(delta(before.server_ticks, at.server_ticks));
            before = at;
        }
        let mut hists = std::mem::take(&mut *lock(&self.latency));
        if !hists.is_empty() {
            if hists.len() > n {
                let mut tail = Hist::coarse();
                for h in hists.drain(n..) {
                    tail.merge(&h.state());
                }
                hists[n - 1].merge(&tail.state());
            }
            hists.resize_with(n, Hist::coarse);
            state.latency = hists.iter().map(Hist::state).collect();
        }
        state
    }
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// The raw series of one process, or of several merged: per interval, the
/// latency histogram (empty list when the test records none), the open
/// connections at its end, and CPU ticks (1/100 s) used in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesState {
    pub origin_us: u64,
    pub end_us: u64,
    #[serde(default)]
    pub latency: Vec<HistState>,
    pub connections: Vec<u64>,
    pub tester_ticks: Vec<Option<u64>>,
    pub server_ticks: Vec<Option<u64>>,
}

impl SeriesState {
    /// Merges the series of several processes cut at the same origin and
    /// end: histograms merged, connections and CPU summed (CPU unknown
    /// only where no process read it).
    pub fn merge(states: &[SeriesState]) -> SeriesState {
        let n = states
            .iter()
            .map(|s| s.connections.len())
            .max()
            .unwrap_or(0);
        let mut out = SeriesState {
            origin_us: states.first().map_or(0, |s| s.origin_us),
            end_us: states.iter().map(|s| s.end_us).max().unwrap_or(0),
            latency: Vec::new(),
            connections: vec![0; n],
            tester_ticks: vec![None; n],
            server_ticks: vec![None; n],
        };
        let add = |sum: &mut Option<u64>, v: Option<u64>| {
            if let Some(v) = v {
                *sum = Some(sum.unwrap_or(0) + v);
            }
        };
        let mut hists: Vec<Hist> = Vec::new();
        for s in states {
            for k in 0..n {
                out.connections[k] += s.connections.get(k).copied().unwrap_or(0);
                add(
                    &mut out.tester_ticks[k],
                    s.tester_ticks.get(k).copied().flatten(),
                );
                add(
                    &mut out.server_ticks[k],
                    s.server_ticks.get(k).copied().flatten(),
                );
            }
            if !s.latency.is_empty() {
                if hists.is_empty() {
                    hists = (0..n).map(|_| Hist::coarse()).collect();
                }
                for (h, part) in hists.iter_mut().zip(&s.latency) {
                    h.merge(part);
                }
            }
        }
        out.latency = hists.iter().map(Hist::state).collect();
        out
    }

    /// Seconds from the origin to the end of each interval.
    fn ends_s(&self) -> Vec<f64> {
        let n = self.connections.len();
        let end_s = self.end_us.saturating_sub(self.origin_us) as f64 / 1e6;
        (1..=n)
            .map(|k| if k == n { end_s } else { k as f64 })
            .collect()
    }

    /// The report's series. `offered`: what the schedule asked for in each
    /// interval (deliveries), when the test has a schedule; `whole`: the
    /// measured window's latency histogram, when the test measures one.
    pub fn report(&self, offered: Option<Vec<f64>>, whole: Option<&Hist>) -> SeriesReport {
        let t_s = self.ends_s();
        let lengths: Vec<f64> = t_s
            .iter()
            .scan(0.0, |prev, &t| {
                let len = (t - *prev).max(1e-6);
                *prev = t;
                Some(len)
            })
            .collect();
        let per_s =
            |v: &[f64]| -> Vec<f64> { v.iter().zip(&lengths).map(|(x, len)| x / len).collect() };
        let cores = |ticks: &[Option<u64>]| -> Vec<Option<f64>> {
            ticks
                .iter()
                .zip(&lengths)
                .map(|(t, len)| t.map(|t| t as f64 / sys::CLK_TCK as f64 / len))
                .collect()
        };
        let has_latency = !self.latency.is_empty();
        let hists: Vec<Hist> = self
            .latency
            .iter()
            .map(|s| {
                let mut h = Hist::coarse();
                h.merge(s);
                h
            })
            .collect();
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        let pick = |f: &dyn Fn(&Hist) -> Option<f64>| -> Option<Vec<Option<f64>>> {
            has_latency.then(|| hists.iter().map(f).collect())
        };
        let counts: Vec<f64> = hists.iter().map(|h| h.len() as f64).collect();
        SeriesReport {
            interval_s: INTERVAL_US as f64 / 1e6,
            latency_p50_ms: pick(&|h| ms(h.quantile(0.50))),
            latency_p99_ms: pick(&|h| ms(h.quantile(0.99))),
            latency_max_ms: pick(&|h| ms(h.max())),
            deliveries_per_s: has_latency.then(|| per_s(&counts)),
            offered_per_s: offered.map(|o| per_s(&o)),
            connections: self.connections.clone(),
            server_cpu_cores: self
                .server_ticks
                .iter()
                .any(Option::is_some)
                .then(|| cores(&self.server_ticks)),
            tester_cpu_cores: cores(&self.tester_ticks),
            latency_histogram: whole.map(Hist::buckets),
            t_s,
        }
    }
}

/// `"series"` in the JSON report: arrays of one value per interval, all as
/// long as `t_s`; a series that does not apply to the test is left out.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// The interval length, 1 s (the last interval may be shorter: it
    /// ends with the run, at its `t_s`).
    pub interval_s: f64,
    /// Seconds from the start of the test to the end of each interval.
    pub t_s: Vec<f64>,
    /// Delivery latency percentiles of the deliveries received in each
    /// interval (warm-up included; null when none arrived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<Vec<Option<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<Vec<Option<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<Vec<Option<f64>>>,
    /// First deliveries received in each interval, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<Vec<f64>>,
    /// Deliveries the schedule asked for in each interval, per second:
    /// says due × subscribers of their room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_per_s: Option<Vec<f64>>,
    /// Connections open at the end of each interval.
    pub connections: Vec<u64>,
    /// Server CPU in cores (1.0 = one core busy), summed over the
    /// --server-pid processes; only with --server-pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_cores: Option<Vec<Option<f64>>>,
    /// The tester's CPU in cores, all its processes together.
    pub tester_cpu_cores: Vec<Option<f64>>,
    /// The measured window's delivery latency histogram (see
    /// [`Bucket`]: log-spaced, counts per bucket, not cumulative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<Vec<Bucket>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(latency: &[&[u64]], connections: &[u64], ticks: &[u64]) -> SeriesState {
        SeriesState {
            origin_us: 1_000_000,
            end_us: 1_000_000 + (connections.len() as u64 - 1) * INTERVAL_US + 500_000,
            latency: latency
                .iter()
                .map(|vs| {
                    let mut h = Hist::coarse();
                    vs.iter().for_each(|&v| h.record(v));
                    h.state()
                })
                .collect(),
            connections: connections.to_vec(),
            tester_ticks: ticks.iter().map(|&t| Some(t)).collect(),
            server_ticks: vec![None; connections.len()],
        }
    }

    /// Two processes' series merge interval by interval: histograms
    /// merged (the percentiles of all values), counts and CPU summed.
    #[test]
    fn series_merge_exactly() {
        let a = state(&[&[1000, 2000], &[]], &[3, 4], &[10, 20]);
        let b = state(&[&[3000], &[5000, 6000, 7000]], &[1, 1], &[5, 5]);
        let m = SeriesState::merge(&[a, b]);
        assert_eq!(m.connections, [4, 5]);
        assert_eq!(m.tester_ticks, [Some(15), Some(25)]);
        let r = m.report(Some(vec![3.0, 6.0]), None);
        assert_eq!(r.t_s, [1.0, 1.5]);
        assert_eq!(r.deliveries_per_s, Some(vec![3.0, 6.0]));
        assert_eq!(r.offered_per_s, Some(vec![3.0, 12.0]));
        let max = r.latency_max_ms.unwrap();
        assert!((max[0].unwrap() - 3.0).abs() < 0.05, "{max:?}");
        assert!((max[1].unwrap() - 7.0).abs() < 0.1, "{max:?}");
        assert!(r.server_cpu_cores.is_none());
        let cores = r.tester_cpu_cores;
        assert!((cores[0].unwrap() - 0.15).abs() < 1e-9, "{cores:?}");
        assert!((cores[1].unwrap() - 0.5).abs() < 1e-9, "{cores:?}");
    }

    /// A live recorder cuts exactly the intervals from origin to end.
    #[test]
    fn finish_cuts_whole_seconds_to_the_end() {
        let origin = unix_micros();
        let s = Series::start(origin, || 7, CpuSources::default());
        let mut buf = vec![(0, 1500), (2, 2500), (9, 100)];
        s.flush(&mut buf);
        let st = s.finish(origin + 2 * INTERVAL_US + 1);
        assert_eq!(st.connections, [7, 7, 7]);
        assert_eq!(st.latency.len(), 3);
        let r = st.report(None, None);
        assert_eq!(r.t_s.len(), 3);
        assert_eq!(r.deliveries_per_s.as_ref().map(Vec::len), Some(3));
        let total: f64 = r.deliveries_per_s.unwrap()[..2].iter().sum();
        assert_eq!(total, 1.0);
    }
}
