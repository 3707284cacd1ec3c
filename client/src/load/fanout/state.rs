//! A fanout run's raw numbers ([`FanoutState`]) and the tally made from
//! them. One process hands its state straight to [`FanoutState::tally`];
//! the parent of a `--workers` run first merges its workers' states
//! ([`FanoutState::merge`]). The tally is the same code either way, so a
//! merged run is judged exactly as one process would judge it: a
//! subscriber's loss of publisher P's messages is what P's worker knows
//! was acknowledged, less what the subscriber's worker saw arrive from P.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::params::{Params, due_at};
use super::results::{FanoutResults, Tally};
use crate::load::net::{CloseState, ConnectState, merge_url_counts};
use crate::load::report::UrlCount;
use crate::load::series::SeriesState;
use crate::load::stats::{Hist, HistState, TrackerState};
use crate::load::sys::CpuWindow;

/// One subscriber that joined its room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubState {
    /// Its global index (its room is `i mod rooms`).
    pub i: usize,
    pub room_seq: TrackerState,
    /// Per publisher of its room, indexed by publisher / rooms.
    pub per_pub: Vec<TrackerState>,
    pub measured: u64,
    pub foreign: u64,
}

/// One publisher, joined or not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PubState {
    /// Its global index (its room is `j mod rooms`).
    pub j: usize,
    pub joined: bool,
    pub sent: u64,
    pub sent_measured: u64,
    pub oks: u64,
    pub rejected: u64,
    pub highest_replied: u64,
    pub max_lag_us: u64,
}

/// One room, as far as one process's connections tell.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomState {
    pub subs_joined: u64,
    pub pubs_joined: u64,
    pub acked: u64,
    pub acked_measured: u64,
    pub last_seq: u64,
}

/// Everything a fanout process measured, raw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutState {
    pub subs: Vec<SubState>,
    pub pubs: Vec<PubState>,
    pub rooms: Vec<RoomState>,
    pub connects: ConnectState,
    pub closes: CloseState,
    /// Delivery latency of the measured window.
    pub latency: HistState,
    pub ok_latency: HistState,
    pub reply_errors: BTreeMap<String, u64>,
    pub urls: Vec<UrlCount>,
    /// When the publishers' schedule started (unix µs), for the offered
    /// rate of the series.
    pub schedule_start_us: Option<u64>,
    pub series: SeriesState,
    /// A worker's setup warnings (its own open-files limit and the like).
    pub warnings: Vec<String>,
}

impl FanoutState {
    /// The states of several processes as one: per subscriber and per
    /// publisher as each process has them (each belongs to one process),
    /// room counts summed (the highest seq the highest), histograms
    /// merged, counters summed.
    pub fn merge(parts: Vec<FanoutState>) -> FanoutState {
        let mut out = FanoutState::default();
        let mut series = Vec::new();
        for part in parts {
            out.subs.extend(part.subs);
            out.pubs.extend(part.pubs);
            if out.rooms.len() < part.rooms.len() {
                out.rooms.resize_with(part.rooms.len(), RoomState::default);
            }
            for (a, b) in out.rooms.iter_mut().zip(&part.rooms) {
                a.subs_joined += b.subs_joined;
                a.pubs_joined += b.pubs_joined;
                a.acked += b.acked;
                a.acked_measured += b.acked_measured;
                a.last_seq = a.last_seq.max(b.last_seq);
            }
            out.connects.merge(&part.connects);
            out.closes.merge(&part.closes);
            out.latency = merged(&out.latency, &part.latency);
            out.ok_latency = merged(&out.ok_latency, &part.ok_latency);
            for (e, n) in part.reply_errors {
                *out.reply_errors.entry(e).or_default() += n;
            }
            merge_url_counts(&mut out.urls, &part.urls);
            out.schedule_start_us = out.schedule_start_us.or(part.schedule_start_us);
            series.push(part.series);
            for w in part.warnings {
                if !out.warnings.contains(&w) {
                    out.warnings.push(w);
                }
            }
        }
        out.subs.sort_by_key(|s| s.i);
        out.pubs.sort_by_key(|p| p.j);
        out.series = SeriesState::merge(&series);
        out
    }

    /// Publisher `j`'s numbers (all zero for one no process reported).
    fn publisher(&self, j: usize) -> PubState {
        self.pubs
            .binary_search_by_key(&j, |p| p.j)
            .map_or_else(|_| PubState::default(), |at| self.pubs[at].clone())
    }

    /// Collects the numbers: per subscriber, per publisher and per room.
    /// `cpu`: the measured window's CPU; `stalled`: deliveries had stopped
    /// when the drain ended.
    pub fn tally(&self, p: &Params, cpu: Option<CpuWindow>, stalled: bool) -> Tally {
        let mut lost = 0;
        let mut in_flight = 0;
        let mut dups = 0;
        let mut late = 0;
        let (mut seq_lost, mut seq_dups, mut seq_late) = (0, 0, 0);
        let mut seq_in_flight = 0;
        let mut foreign = 0;
        let mut deliveries = 0;
        let mut worst: Option<(usize, u64)> = None;
        let pubs: Vec<PubState> = (0..p.pubs).map(|j| self.publisher(j)).collect();
        let room = |k: usize| self.rooms.get(k).cloned().unwrap_or_default();
        for sub in &self.subs {
            let (i, k) = (sub.i, sub.i % p.rooms);
            deliveries += sub.measured;
            foreign += sub.foreign;
            let mut sub_lost = 0;
            let mut sub_in_flight = 0;
            for (local, t) in sub.per_pub.iter().enumerate() {
                let Some(publisher) = pubs.get(local * p.rooms + k) else {
                    continue;
                };
                // Owed: every message up to the last one answered, less
                // those the server refused.
                let answered = publisher.highest_replied;
                let rejected = publisher.rejected;
                // A number skipped over is lost (less those the server
                // refused, which are never delivered); numbers past the
                // highest seen may simply still be on their way.
                sub_lost += t.gaps_open().saturating_sub(rejected);
                let owed = answered.saturating_sub(rejected);
                let received = t.received_upto(answered);
                sub_in_flight += owed.saturating_sub(received).saturating_sub(t.gaps_open());
                dups += t.duplicates;
                late += t.late;
            }
            // The room delivers in seq order, so a seq this subscriber
            // skipped is lost even when it was the last message of its
            // publisher (which the per-publisher count can only call "not
            // arrived yet"): count whichever view proves more.
            let proven = sub.room_seq.gaps_open().saturating_sub(sub_lost);
            sub_lost += proven;
            in_flight += sub_in_flight.saturating_sub(proven);
            lost += sub_lost;
            if sub_lost > 0 && worst.is_none_or(|(_, n)| sub_lost > n) {
                worst = Some((i, sub_lost));
            }
            let last = room(k).last_seq;
            seq_lost += sub.room_seq.gaps_open();
            seq_in_flight += sub.room_seq.tail(last);
            seq_dups += sub.room_seq.duplicates;
            seq_late += sub.room_seq.late;
        }
        let sent_total: u64 = pubs.iter().map(|p| p.sent).sum();
        let sent: u64 = pubs.iter().map(|p| p.sent_measured).sum();
        let oks: u64 = pubs.iter().map(|p| p.oks).sum();
        let rejected: u64 = pubs.iter().map(|p| p.rejected).sum();
        let says_acked: u64 = self.rooms.iter().map(|r| r.acked_measured).sum();
        let expected: u64 = self
            .rooms
            .iter()
            .map(|r| r.acked_measured * r.subs_joined)
            .sum();
        let secs = p.duration.as_secs_f64();
        let pubs_joined: u64 = self.rooms.iter().map(|r| r.pubs_joined).sum();
        let server_us = cpu
            .as_ref()
            .and_then(|c| c.server_cpu_s)
            .filter(|_| deliveries > 0)
            .map(|s| s * 1e6 / deliveries as f64);
        let max_lag_ms = pubs.iter().map(|p| p.max_lag_us).max().unwrap_or(0) as f64 / 1000.0;
        let hist = |s: &HistState| {
            let mut h = Hist::new();
            h.merge(s);
            h
        };
        let results = FanoutResults {
            subscribers: p.subs,
            publishers: p.pubs,
            rooms: p.rooms,
            rate_per_publisher: p.rate,
            warmup_s: p.warmup.as_secs_f64(),
            duration_s: secs,
            connections: self.connects.summary(),
            sent_total,
            sent,
            send_rate_per_s: sent as f64 / secs,
            target_send_rate_per_s: pubs_joined as f64 * p.rate,
            max_publisher_lag_ms: max_lag_ms,
            replies_ok: oks,
            says_acked,
            says_per_s: says_acked as f64 / secs,
            missing_replies: sent_total.saturating_sub(oks + rejected),
            reply_errors: self.reply_errors.clone(),
            expected_deliveries: expected,
            deliveries,
            deliveries_per_s: deliveries as f64 / secs,
            lost,
            undelivered_at_end: in_flight.max(seq_in_flight),
            duplicates: dups,
            reordered: late,
            seq_gaps: seq_lost,
            seq_duplicates: seq_dups,
            seq_reordered: seq_late,
            foreign_messages: foreign,
            latency: hist(&self.latency).summary(),
            ok_latency: hist(&self.ok_latency).summary(),
            close_codes_seen: self.closes.summary(),
            server_cpu_us_per_delivery: server_us,
            server_cpu_s_per_million_deliveries: server_us,
        };
        Tally {
            results,
            cpu,
            worst,
            stalled,
            shutdowns: self.closes.shutdowns,
        }
    }

    /// Deliveries the schedule asked for in each interval of the series:
    /// every joined publisher's says due in it × the subscribers joined to
    /// its room. `None` before the schedule started.
    pub fn offered(&self, p: &Params) -> Option<Vec<f64>> {
        let start = self.schedule_start_us?;
        let n = self.series.connections.len();
        let t0 = start as f64 / 1e6 - self.series.origin_us as f64 / 1e6;
        let end = (p.warmup + p.duration).as_secs_f64();
        let mut out = vec![0.0; n];
        for publisher in self.pubs.iter().filter(|p| p.joined) {
            let j = publisher.j;
            let subs = self.rooms.get(j % p.rooms).map_or(0, |r| r.subs_joined);
            if subs == 0 {
                continue;
            }
            // Says n = 1 … total are due at t0 + first + (n - 1) / rate.
            let first = due_at(p.rate, p.pubs, j, 1);
            let total = ((end - first) * p.rate).ceil().max(0.0);
            let before = |x: f64| ((x - t0 - first) * p.rate).ceil().clamp(0.0, total);
            for (k, slot) in out.iter_mut().enumerate() {
                let hi = if k + 1 == n {
                    f64::INFINITY
                } else {
                    (k + 1) as f64
                };
                *slot += (before(hi) - before(k as f64)) * subs as f64;
            }
        }
        Some(out)
    }

    /// The measured window's delivery latency histogram.
    pub fn latency_hist(&self) -> Hist {
        let mut h = Hist::new();
        h.merge(&self.latency);
        h
    }
}

/// Two histogram states as one.
fn merged(a: &HistState, b: &HistState) -> HistState {
    let mut h = Hist::new();
    h.merge(a);
    h.merge(b);
    h.state()
}
