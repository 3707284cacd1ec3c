//! The connections of one `natter load conns` process (the whole run, or
//! one worker's share), their scenario, their raw numbers and the results
//! made from them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natter::LeanSender;
use serde::{Deserialize, Serialize};

use crate::load::net::{
    self, Alive, CloseCount, CloseLog, CloseState, ConnectState, ConnectStats, ConnectSummary, Ctx,
    merge_url_counts,
};
use crate::load::report::{Findings, Lines, Summary, UrlCount, bytes, count};
use crate::load::series::{CpuSources, Series, SeriesState};
use crate::load::stats::{Percentiles, lock};
use crate::load::sys::{self, CpuSnapshot};

use super::probe::{ProbeState, Probes};

pub(super) struct Conns {
    pub(super) ctx: Arc<Ctx>,
    pub(super) count: usize,
    pub(super) hold: Duration,
    pub(super) connects: ConnectStats,
    pub(super) closes: CloseLog,
    pub(super) senders: Mutex<Vec<LeanSender>>,
    pub(super) alive: Arc<Alive>,
    pub(super) marks: Mutex<Marks>,
    pub(super) probes: Probes,
    pub(super) series: Arc<Series>,
}

/// What the run read of the servers and the tester at its milestones.
#[derive(Default)]
pub(super) struct Marks {
    pub(super) rss_before: Option<u64>,
    pub(super) rss_established: Option<u64>,
    pub(super) rss_held: Option<u64>,
    pub(super) tester_rss_before: Option<u64>,
    pub(super) tester_rss_held: Option<u64>,
    pub(super) connect_s: Option<f64>,
    pub(super) cpu: Option<(CpuSnapshot, CpuSnapshot)>,
}

/// What one process (or the workers together) counted: the connections,
/// how they ended, the probes, the tester's memory, the series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ConnsState {
    pub(super) connects: ConnectState,
    pub(super) closes: CloseState,
    pub(super) open_after_hold: u64,
    pub(super) probes: ProbeState,
    pub(super) urls: Vec<UrlCount>,
    pub(super) tester_rss_before: Option<u64>,
    pub(super) tester_rss_held: Option<u64>,
    pub(super) series: SeriesState,
    pub(super) warnings: Vec<String>,
}

impl ConnsState {
    /// Sums the states of several processes (the tester's memory only when
    /// every process read its own).
    pub(super) fn merge(parts: Vec<ConnsState>) -> ConnsState {
        let mut out = ConnsState::default();
        let mut series = Vec::new();
        let sum = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        for (n, part) in parts.into_iter().enumerate() {
            out.connects.merge(&part.connects);
            out.closes.merge(&part.closes);
            out.open_after_hold += part.open_after_hold;
            out.probes.merge(&part.probes);
            merge_url_counts(&mut out.urls, &part.urls);
            if n == 0 {
                out.tester_rss_before = part.tester_rss_before;
                out.tester_rss_held = part.tester_rss_held;
            } else {
                out.tester_rss_before = sum(out.tester_rss_before, part.tester_rss_before);
                out.tester_rss_held = sum(out.tester_rss_held, part.tester_rss_held);
            }
            series.push(part.series);
            for w in part.warnings {
                if !out.warnings.contains(&w) {
                    out.warnings.push(w);
                }
            }
        }
        out.series = SeriesState::merge(&series);
        out
    }
}

impl Conns {
    /// The run's state; its series records from `origin_us`, reading the
    /// CPU of `cpu` (none in a worker: its parent reads it).
    pub(super) fn new(
        ctx: Arc<Ctx>,
        count: usize,
        hold: Duration,
        probes: usize,
        origin_us: u64,
        cpu: CpuSources,
    ) -> Arc<Conns> {
        let alive: Arc<Alive> = Arc::default();
        let open = alive.clone();
        let series = Series::start(origin_us, move || open.count() as u64, cpu);
        Arc::new(Conns {
            probes: Probes::new(count, probes, ctx.share),
            ctx,
            count,
            hold,
            connects: ConnectStats::default(),
            closes: CloseLog::default(),
            senders: Mutex::default(),
            alive,
            marks: Mutex::default(),
            series,
        })
    }

    /// Opens this process's connections (all, or a worker's share).
    pub(super) async fn connect_all(self: &Arc<Self>) {
        let ctx = self.ctx.clone();
        let mine: Arc<Vec<usize>> = Arc::new(ctx.share.of_range(self.count).collect());
        ctx.progress.count("connecting", mine.len() as u64);
        let opener = self.clone();
        net::pool(&ctx, 0..mine.len(), move |nth| {
            let c = opener.clone();
            let i = mine[nth];
            async move {
                let conn = c.ctx.connect(nth, c.ctx.target(i), None, &c.connects).await;
                c.ctx.progress.inc();
                let Some(conn) = conn else { return };
                let probed = c.probes.is_probed(i);
                if probed {
                    c.probes.keep(i, conn.sender);
                } else {
                    lock(&c.senders).push(conn.sender);
                }
                let guard = c.alive.enter();
                let mut receiver = conn.receiver;
                let closes = c.clone();
                natter_runtime::spawn(async move {
                    // Reading answers the server's pings and notices closes.
                    while let Some(frame) = receiver.next_text().await {
                        if probed {
                            closes.probes.frame(i, &frame);
                        }
                    }
                    closes.closes.ended(receiver.close_info());
                    drop(guard);
                });
            }
        })
        .await;
    }

    /// This process's numbers, its series cut at `end_us`.
    pub(super) fn state(&self, end_us: u64) -> ConnsState {
        let marks = lock(&self.marks);
        ConnsState {
            connects: self.connects.state(),
            closes: self.closes.state(),
            open_after_hold: self.alive.count() as u64,
            probes: self.probes.state(),
            urls: self.ctx.url_counts(),
            tester_rss_before: marks.tester_rss_before,
            tester_rss_held: marks.tester_rss_held,
            series: self.series.finish(end_us),
            warnings: Vec::new(),
        }
    }
}

pub(super) async fn scenario(c: Arc<Conns>) {
    let ctx = c.ctx.clone();
    let pids = &ctx.server_pids;
    {
        let mut marks = lock(&c.marks);
        marks.rss_before = sys::servers_rss(pids);
        marks.tester_rss_before = sys::rss_bytes(std::process::id());
    }
    let cpu_start = CpuSnapshot::take(pids);
    let started = Instant::now();
    c.connect_all().await;
    {
        let mut marks = lock(&c.marks);
        marks.connect_s = Some(started.elapsed().as_secs_f64());
        marks.rss_established = sys::servers_rss(pids);
        marks.cpu = Some((cpu_start, CpuSnapshot::take(pids)));
    }
    if ctx.stopped() {
        return;
    }
    ctx.progress.spin("holding", "");
    let until = Instant::now() + c.hold;
    let ticker = {
        let c = c.clone();
        ctx.progress.ticker(move || {
            format!(
                "{} open, {} s left",
                count(c.alive.count() as u64),
                until.saturating_duration_since(Instant::now()).as_secs()
            )
        })
    };
    c.probes.run().await;
    net::sleep_until(until).await;
    drop(ticker);
    let mut marks = lock(&c.marks);
    marks.rss_held = sys::servers_rss(pids);
    marks.tester_rss_held = sys::rss_bytes(std::process::id());
}

#[derive(Debug, Serialize)]
pub struct ConnsResults {
    /// Connections that sent a request (`who`) while all were held.
    pub probed: u64,
    /// Of those, answered with `ok`.
    pub answered: u64,
    /// Request to reply, of the answered probes.
    pub probe_round_trip: Option<Percentiles>,
    pub requested: usize,
    pub hold_s: f64,
    pub connections: ConnectSummary,
    /// Seconds from the first connect until every attempt had finished.
    pub connect_phase_s: Option<f64>,
    /// Established connections per second over the connect phase.
    pub connect_rate_per_s: Option<f64>,
    /// Connections still open at the end of the hold.
    pub open_after_hold: usize,
    pub close_codes_seen: Vec<CloseCount>,
    pub server_rss_before: Option<u64>,
    pub server_rss_established: Option<u64>,
    pub server_rss_held: Option<u64>,
    pub server_rss_after_close: Option<u64>,
    /// (RSS at the end of the hold − RSS before) / connections established.
    pub server_bytes_per_connection: Option<f64>,
    /// Server CPU over the connect phase per established connection.
    pub server_cpu_us_per_connect: Option<f64>,
    /// The tester's own memory per held connection, for comparison.
    pub tester_bytes_per_connection: Option<f64>,
}

/// The report's numbers from the run's (merged) state and its marks.
pub(super) fn results(
    state: &ConnsState,
    marks: &Marks,
    requested: usize,
    hold: Duration,
    findings: &mut Findings,
) -> ConnsResults {
    let connections = state.connects.summary();
    let established = connections.connected;
    let rate = marks
        .connect_s
        .filter(|&s| s > 0.0)
        .map(|s| established as f64 / s);
    let held = marks.rss_held.or(marks.rss_established);
    let per_conn = match (marks.rss_before, held) {
        (Some(a), Some(b)) if established > 0 => Some((b as f64 - a as f64) / established as f64),
        _ => None,
    };
    let tester_per = match (state.tester_rss_before, state.tester_rss_held) {
        (Some(a), Some(b)) if established > 0 => Some((b as f64 - a as f64) / established as f64),
        _ => None,
    };
    let cpu_per = marks
        .cpu
        .as_ref()
        .and_then(|(a, b)| a.window(b).server_cpu_s)
        .filter(|_| established > 0)
        .map(|s| s * 1e6 / established as f64);
    connections.judge(findings, true);
    net::judge_closes(&state.closes.summary(), state.closes.shutdowns, findings);
    state.probes.judge(findings);
    if per_conn.is_some_and(|b| b < 1024.0) {
        findings.warn(
            "the server's RSS barely grew: it is reusing memory freed by earlier \
             connections; measure bytes per connection on a freshly started server",
        );
    }
    findings.warn_if(connections.refused_503, |n| {
        format!("{n} connections were refused with 503: the server's connection cap")
    });
    ConnsResults {
        probed: state.probes.probed,
        answered: state.probes.answered,
        probe_round_trip: state.probes.round_trip(),
        requested,
        hold_s: hold.as_secs_f64(),
        connections,
        connect_phase_s: marks.connect_s,
        connect_rate_per_s: rate,
        open_after_hold: state.open_after_hold as usize,
        close_codes_seen: state.closes.summary(),
        server_rss_before: marks.rss_before,
        server_rss_established: marks.rss_established,
        server_rss_held: marks.rss_held,
        server_rss_after_close: None,
        server_bytes_per_connection: per_conn,
        server_cpu_us_per_connect: cpu_per,
        tester_bytes_per_connection: tester_per,
    }
}

impl Conns {
    pub(super) async fn close(&self) {
        self.closes.closing.store(true, Ordering::Relaxed);
        let mut senders = std::mem::take(&mut *lock(&self.senders));
        senders.extend(self.probes.take_senders());
        let limit = Duration::from_secs_f64(10.0 + senders.len() as f64 / 1000.0);
        net::close_all(senders, self.ctx.in_flight, limit).await;
        let alive = self.alive.clone();
        net::wait_until(Duration::from_secs(5), || alive.count() == 0).await;
    }
}

impl Summary for ConnsResults {
    fn human(&self, out: &mut Lines) {
        out.kv(
            "setup",
            format!("{} connections, held {} s", self.requested, self.hold_s),
        );
        out.kv("connections", self.connections.line());
        for reason in &self.connections.failure_reasons {
            out.kv("  failure", reason);
        }
        if let (Some(s), Some(rate)) = (self.connect_phase_s, self.connect_rate_per_s) {
            out.kv(
                "connect rate",
                format!("{rate:.0} connections/s ({s:.2} s for all attempts)"),
            );
        }
        if let Some(t) = &self.connections.connect_time {
            out.kv("connect time", t.line());
        }
        out.kv("open after hold", count(self.open_after_hold as u64));
        if self.probed > 0 {
            let rtt = self
                .probe_round_trip
                .as_ref()
                .map_or_else(|| "no replies".to_owned(), Percentiles::line);
            out.kv(
                "probed while held",
                format!("{} of {} answered; {rtt}", self.answered, self.probed),
            );
        }
        out.kv(
            "close codes seen",
            super::net::describe_closes(&self.close_codes_seen),
        );
        let rss = |v: Option<u64>| v.map_or("-".to_owned(), |b| bytes(b as f64));
        if self.server_rss_before.is_some() {
            out.kv(
                "server RSS",
                format!(
                    "before {} · established {} · end of hold {} · after close {}",
                    rss(self.server_rss_before),
                    rss(self.server_rss_established),
                    rss(self.server_rss_held),
                    rss(self.server_rss_after_close)
                ),
            );
        }
        if let Some(b) = self.server_bytes_per_connection {
            out.kv("server memory / conn", bytes(b));
        }
        if let Some(b) = self.tester_bytes_per_connection {
            out.kv("tester memory / conn", bytes(b));
        }
        if let Some(us) = self.server_cpu_us_per_connect {
            out.kv("server CPU / connect", format!("{us:.0} µs"));
        }
    }
}
