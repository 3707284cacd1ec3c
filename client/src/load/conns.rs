//! `natter load conns`: how many connections, how fast, at what memory cost.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use natter::LeanSender;
use serde::Serialize;

use super::common::{CommonArgs, header, seconds, setup, usage};
use super::net::{self, Alive, CloseCount, CloseLog, ConnectStats, ConnectSummary, Ctx};
use super::report::{Findings, Lines, Report, Summary, bytes, count};
use super::stats::lock;
use super::sys::{self, CpuSnapshot};

#[derive(Args, Debug)]
pub struct ConnsArgs {
    /// Connections to open (each completes the upgrade and gets `welcome`).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 1000)]
    count: usize,

    /// Seconds to hold all connections open once established (the server's
    /// memory is read at the end of the hold).
    #[arg(long = "hold", value_name = "SECS", default_value_t = 10.0)]
    hold: f64,

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
}

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

pub async fn run(args: ConnsArgs) -> ExitCode {
    if args.count == 0 {
        return usage("--count must be at least 1");
    }
    let hold = match seconds("--hold", args.hold, true) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let mut findings = Findings::default();
    let ctx = match setup(&args.common, args.count, &mut findings).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let deadline = args.common.deadline.map_or_else(
        || {
            Duration::from_secs_f64(60.0 + args.count as f64 / 100.0)
                + hold
                + Duration::from_secs(20)
        },
        Duration::from_secs_f64,
    );
    let c = Arc::new(Conns {
        ctx: ctx.clone(),
        count: args.count,
        hold,
        connects: ConnectStats::default(),
        closes: CloseLog::default(),
        senders: Mutex::default(),
        alive: Arc::default(),
        marks: Mutex::default(),
    });
    let finished = ctx
        .run_bounded(deadline, scenario(c.clone()))
        .await
        .is_some();
    let results = c.results(&mut findings);
    // The connect phase is the tester's busy window.
    let cpu = lock(&c.marks).cpu.as_ref().map(|(a, b)| a.window(b));
    c.close().await;
    let mut results = results;
    if !ctx.server_pids.is_empty() {
        // Memory after the server dropped the connections, for comparison.
        natter_runtime::sleep(Duration::from_millis(500)).await;
        results.server_rss_after_close = sys::servers_rss(&ctx.server_pids);
    }
    Report::new(
        header(&ctx, "conns", deadline),
        findings,
        cpu,
        !finished,
        results,
    )
    .emit(args.common.json)
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
    ctx.progress.count("connecting", c.count as u64);
    let opener = c.clone();
    net::pool(&ctx, 0..c.count, move |i| {
        let c = opener.clone();
        async move {
            let conn = c.ctx.connect(i, c.ctx.target(i), None, &c.connects).await;
            c.ctx.progress.inc();
            let Some(conn) = conn else { return };
            lock(&c.senders).push(conn.sender);
            let guard = c.alive.enter();
            let mut receiver = conn.receiver;
            let closes = c.clone();
            natter_runtime::spawn(async move {
                // Reading answers the server's pings and notices closes.
                while receiver.next_text().await.is_some() {}
                closes.closes.ended(receiver.close_info());
                drop(guard);
            });
        }
    })
    .await;
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
    let ticker = {
        let c = c.clone();
        let until = Instant::now() + c.hold;
        ctx.progress.ticker(move || {
            format!(
                "{} open, {} s left",
                count(c.alive.count() as u64),
                until.saturating_duration_since(Instant::now()).as_secs()
            )
        })
    };
    natter_runtime::sleep(c.hold).await;
    drop(ticker);
    let mut marks = lock(&c.marks);
    marks.rss_held = sys::servers_rss(pids);
    marks.tester_rss_held = sys::rss_bytes(std::process::id());
}

#[derive(Debug, Serialize)]
pub struct ConnsResults {
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

impl Conns {
    fn results(&self, findings: &mut Findings) -> ConnsResults {
        let marks = lock(&self.marks);
        let connections = self.connects.summary();
        let established = connections.connected;
        let rate = marks
            .connect_s
            .filter(|&s| s > 0.0)
            .map(|s| established as f64 / s);
        let held = marks.rss_held.or(marks.rss_established);
        let per_conn = match (marks.rss_before, held) {
            (Some(a), Some(b)) if established > 0 => {
                Some((b as f64 - a as f64) / established as f64)
            }
            _ => None,
        };
        let tester_per = match (marks.tester_rss_before, marks.tester_rss_held) {
            (Some(a), Some(b)) if established > 0 => {
                Some((b as f64 - a as f64) / established as f64)
            }
            _ => None,
        };
        let cpu_per = marks
            .cpu
            .as_ref()
            .and_then(|(a, b)| a.window(b).server_cpu_s)
            .filter(|_| established > 0)
            .map(|s| s * 1e6 / established as f64);
        connections.judge(findings, true);
        self.closes.judge(findings);
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
            requested: self.count,
            hold_s: self.hold.as_secs_f64(),
            connections,
            connect_phase_s: marks.connect_s,
            connect_rate_per_s: rate,
            open_after_hold: self.alive.count(),
            close_codes_seen: self.closes.summary(),
            server_rss_before: marks.rss_before,
            server_rss_established: marks.rss_established,
            server_rss_held: marks.rss_held,
            server_rss_after_close: None,
            server_bytes_per_connection: per_conn,
            server_cpu_us_per_connect: cpu_per,
            tester_bytes_per_connection: tester_per,
        }
    }

    async fn close(&self) {
        self.closes.closing.store(true, Ordering::Relaxed);
        let senders = std::mem::take(&mut *lock(&self.senders));
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
