//! `natter load conns`: how many connections, how fast, at what memory cost.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use natter::LeanSender;
use serde::{Deserialize, Serialize};

use super::common::{CommonArgs, emit, header, seconds, setup, usage};
use super::net::{
    self, Alive, CloseCount, CloseLog, CloseState, ConnectState, ConnectStats, ConnectSummary, Ctx,
    merge_url_counts,
};
use super::report::{Findings, Lines, Report, Summary, UrlCount, bytes, count};
use super::series::{CpuSources, Series, SeriesState};
use super::stats::{Percentiles, lock};
use super::sys::{self, CpuSnapshot};
use super::workers::Workers;

// The probe and the --workers sides of the test.
mod probe;
mod workers;

use probe::{ProbeState, Probes};

#[derive(Args, Debug)]
pub struct ConnsArgs {
    /// Connections to open (each completes the upgrade and gets `welcome`).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 1000)]
    count: usize,

    /// Seconds to hold all connections open once established (the server's
    /// memory is read at the end of the hold).
    #[arg(long = "hold", value_name = "SECS", default_value_t = 10.0)]
    hold: f64,

    /// Once all are established, this many connections spread over the
    /// whole run (every URL, every worker) each send one request (`who`)
    /// and must get its reply while all are held; the report gives the
    /// round-trip percentiles, and any unanswered is a problem. The hold
    /// lasts at least until the replies are in (30 s at most). Default:
    /// the smaller of --count and 1000; 0 probes none.
    #[arg(long, value_name = "N")]
    probe: Option<usize>,

    #[command(flatten)]
    common: CommonArgs,
}

struct Conns {
    ctx: Arc<Ctx>,
    count: usize,
    hold: Duration,
    connects: ConnectStats,
    closes: CloseLog,
    senders: Mutex<Vec<LeanSender>>,
    alive: Arc<Alive>,
    marks: Mutex<Marks>,
    probes: Probes,
    series: Arc<Series>,
}

/// What the run read of the servers and the tester at its milestones.
#[derive(Default)]
struct Marks {
    rss_before: Option<u64>,
    rss_established: Option<u64>,
    rss_held: Option<u64>,
    tester_rss_before: Option<u64>,
    tester_rss_held: Option<u64>,
    connect_s: Option<f64>,
    cpu: Option<(CpuSnapshot, CpuSnapshot)>,
}

/// What one process (or the workers together) counted: the connections,
/// how they ended, the probes, the tester's memory, the series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ConnsState {
    connects: ConnectState,
    closes: CloseState,
    open_after_hold: u64,
    probes: ProbeState,
    urls: Vec<UrlCount>,
    tester_rss_before: Option<u64>,
    tester_rss_held: Option<u64>,
    series: SeriesState,
    warnings: Vec<String>,
}

impl ConnsState {
    /// Sums the states of several processes (the tester's memory only when
    /// every process read its own).
    fn merge(parts: Vec<ConnsState>) -> ConnsState {
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

pub async fn run(args: ConnsArgs) -> ExitCode {
    if args.count == 0 {
        return usage("--count must be at least 1");
    }
    let hold = match seconds("--hold", args.hold, true) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let probes = args.probe.unwrap_or(args.count.min(1000));
    let mut findings = Findings::default();
    let ctx = match setup(&args.common, args.count, &mut findings).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let deadline = args.common.deadline.map_or_else(
        || {
            Duration::from_secs_f64(60.0 + args.count as f64 / 100.0)
                + hold
                + probe::limit()
                + Duration::from_secs(20)
        },
        Duration::from_secs_f64,
    );
    let origin_us = args
        .common
        .worker
        .as_ref()
        .map_or_else(net::unix_micros, |w| w.origin_us);
    // A parent reads the servers before its workers connect, and counts
    // its workers' CPU as the tester's.
    let rss_before = sys::servers_rss(&ctx.server_pids);
    let spawned = if args.common.is_parent() {
        let n = usize::from(args.common.workers);
        match Workers::spawn(n, origin_us, &ctx.run_id) {
            Ok(w) => Some(w),
            Err(failure) => return failure.exit(),
        }
    } else {
        None
    };
    let cpu = CpuSources {
        enabled: args.common.worker.is_none(),
        server_pids: ctx.server_pids.clone(),
        other_testers: spawned.as_ref().map_or_else(Vec::new, Workers::pids),
    };
    let c = Conns::new(ctx.clone(), args.count, hold, probes, origin_us, cpu);
    if args.common.worker.is_some() {
        return workers::worker(c, deadline, findings).await;
    }
    if let Some(spawned) = spawned {
        return workers::parent(c, spawned, &args.common, deadline, rss_before, findings).await;
    }
    let finished = ctx
        .run_bounded(deadline, scenario(c.clone()))
        .await
        .is_some();
    let state = c.state(net::unix_micros());
    let marks = std::mem::take(&mut *lock(&c.marks));
    let mut results = results(&state, &marks, c.count, c.hold, &mut findings);
    // The connect phase is the tester's busy window.
    let cpu = marks.cpu.as_ref().map(|(a, b)| a.window(b));
    c.close().await;
    if !ctx.server_pids.is_empty() {
        // Memory after the server dropped the connections, for comparison.
        natter_runtime::sleep(Duration::from_millis(500)).await;
        results.server_rss_after_close = sys::servers_rss(&ctx.server_pids);
    }
    let report = Report::new(
        header(&ctx, "conns", deadline),
        findings,
        cpu,
        !finished,
        results,
    )
    .with_series(Some(state.series.report(None, None)));
    emit(&report, &args.common)
}

impl Conns {
    /// The run's state; its series records from `origin_us`, reading the
    /// CPU of `cpu` (none in a worker: its parent reads it).
    fn new(
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
    async fn connect_all(self: &Arc<Self>) {
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
    fn state(&self, end_us: u64) -> ConnsState {
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

async fn scenario(c: Arc<Conns>) {
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
fn results(
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
    async fn close(&self) {
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
