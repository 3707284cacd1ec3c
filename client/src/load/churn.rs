//! `natter load churn`: clients come and go at a steady rate; an observer
//! in the room checks that every one of them was announced joining, was
//! heard, and was announced leaving.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_lock::{Semaphore, SemaphoreGuardArc};
use clap::Args;
use natter::{LeanConnection, LeanReceiver, LeanSender};
use natter_protocol::{PresenceKind, Reply, Request, ServerMessage};
use serde::Serialize;

use super::common::{CommonArgs, check_rate, emit, header, no_workers, seconds, setup, usage};
use super::net::{self, CloseCount, CloseLog, ConnectStats, ConnectSummary, Ctx};
use super::report::{Findings, Lines, Report, Summary, count};
use super::stats::{Percentiles, SeqTracker, SharedHist, lock, ms};
use super::sys::CpuSnapshot;

#[derive(Args, Debug)]
pub struct ChurnArgs {
    /// Cycles started per second (connect, join, say, disconnect).
    #[arg(long, short = 'r', value_name = "CYCLES/S", default_value_t = 20.0)]
    rate: f64,

    /// Seconds during which cycles are started.
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 10.0)]
    duration: f64,

    /// Most cycles in progress at once; when all are busy the next cycle
    /// waits (the report then shows the achieved rate below the target).
    #[arg(long, value_name = "N", default_value_t = 64)]
    concurrency: usize,

    /// Every Nth cycle drops its TCP connection without a close frame
    /// instead of closing with 1000 (0: every cycle closes cleanly).
    #[arg(long, value_name = "N", default_value_t = 0)]
    abrupt_every: u64,

    /// Seconds to wait after the last cycle for the observer to receive
    /// the outstanding presence events.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    grace: f64,

    #[command(flatten)]
    common: CommonArgs,
}

struct Params {
    rate: f64,
    duration: Duration,
    concurrency: usize,
    abrupt_every: u64,
    grace: Duration,
}

#[derive(Default)]
struct Seen {
    joins: HashSet<u64>,
    leaves: HashSet<u64>,
    messages: HashSet<u64>,
}

struct Churn {
    ctx: Arc<Ctx>,
    p: Params,
    room: String,
    prefix: String,
    connects: ConnectStats,
    /// The observer's connection only: churned clients end on purpose.
    observer_closes: CloseLog,
    started: AtomicU64,
    completed: AtomicU64,
    graceful: AtomicU64,
    abrupt: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    /// Cycles whose join got its ok: each owes a leave.
    joined: Mutex<HashSet<u64>>,
    /// Cycles whose say got its ok: the observer owes a message.
    said: Mutex<HashSet<u64>>,
    seen: Mutex<Seen>,
    observer_seq: Mutex<SeqTracker>,
    last_seq: AtomicU64,
    cycle_time: SharedHist,
    max_start_lag_us: AtomicU64,
    dispatch_s: Mutex<Option<f64>>,
    cpu: Mutex<Option<(CpuSnapshot, CpuSnapshot)>>,
    observer_sender: Mutex<Option<LeanSender>>,
}

pub async fn run(args: ChurnArgs) -> ExitCode {
    if let Err(code) = no_workers(
        &args.common,
        "churn",
        "its observer, which checks that every cycle's leave arrives, must see every cycle, and it lives in one process",
    ) {
        return code;
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
        return usage("--rate must be a number of cycles per second > 0");
    }
    if args.concurrency == 0 {
        return usage("--concurrency must be at least 1");
    }
    let (duration, grace) = match (
        seconds("--duration", args.duration, false),
        seconds("--grace", args.grace, true),
    ) {
        (Ok(d), Ok(g)) => (d, g),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let p = Params {
        rate: args.rate,
        duration,
        concurrency: args.concurrency,
        abrupt_every: args.abrupt_every,
        grace,
    };
    let mut findings = Findings::default();
    let ctx = match setup(&args.common, p.concurrency + 1, &mut findings).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let _ = check_rate(&ctx, 2.0, &mut findings);
    let deadline = args.common.deadline.map_or_else(
        || {
            duration
                + grace
                + net::CONNECT_TIMEOUT
                + net::REPLY_TIMEOUT * 2
                + Duration::from_secs(30)
        },
        Duration::from_secs_f64,
    );
    let c = Arc::new(Churn {
        room: format!("churn-{}", ctx.run_id),
        prefix: format!("churn-{}-", ctx.run_id),
        ctx: ctx.clone(),
        p,
        connects: ConnectStats::default(),
        observer_closes: CloseLog::default(),
        started: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        graceful: AtomicU64::new(0),
        abrupt: AtomicU64::new(0),
        failures: Mutex::default(),
        joined: Mutex::default(),
        said: Mutex::default(),
        seen: Mutex::default(),
        observer_seq: Mutex::new(SeqTracker::new(0)),
        last_seq: AtomicU64::new(0),
        cycle_time: SharedHist::default(),
        max_start_lag_us: AtomicU64::new(0),
        dispatch_s: Mutex::default(),
        cpu: Mutex::default(),
        observer_sender: Mutex::default(),
    });
    let outcome = ctx.run_bounded(deadline, scenario(c.clone())).await;
    let finished = outcome.is_some();
    if let Some(Err(why)) = outcome {
        eprintln!("natter load: {why}");
        return ExitCode::from(super::report::EXIT_ERROR);
    }
    let cpu = lock(&c.cpu).as_ref().map(|(a, b)| a.window(b));
    let mut results = c.results(&mut findings);
    results.server_cpu_us_per_cycle = cpu
        .as_ref()
        .and_then(|w| w.server_cpu_s)
        .filter(|_| results.cycles_completed > 0)
        .map(|s| s * 1e6 / results.cycles_completed as f64);
    c.observer_closes.closing.store(true, Ordering::Relaxed);
    let observer = lock(&c.observer_sender).take();
    if let Some(sender) = observer {
        net::close_all(vec![sender], 1, Duration::from_secs(3)).await;
    }
    let report = Report::new(
        header(&ctx, "churn", deadline),
        findings,
        cpu,
        !finished,
        results,
    );
    emit(&report, &args.common)
}

/// Observer in, cycles at the rate, wait for stragglers. An `Err` is a
/// set-up failure (the observer could not get in).
async fn scenario(c: Arc<Churn>) -> Result<(), String> {
    let ctx = c.ctx.clone();
    let nick = format!("{}obs", c.prefix);
    let stats = ConnectStats::default();
    // The observer is the run's first connection: the first URL. Cycles
    // take the URLs in turn after it ([`Churn::cycle`]).
    let to = ctx.target(0);
    let Some(mut conn) = ctx.connect(usize::MAX, to, Some(&nick), &stats).await else {
        return Err(format!(
            "the observer could not connect: {}",
            stats.summary().failure_reasons.join("; ")
        ));
    };
    let join = net::join(&mut conn, &c.room)
        .await
        .map_err(|why| format!("the observer could not join {}: {why}", c.room))?;
    *lock(&c.observer_seq) = SeqTracker::new(join.seq);
    let LeanConnection {
        sender, receiver, ..
    } = conn;
    *lock(&c.observer_sender) = Some(sender);
    natter_runtime::spawn(c.clone().observe(receiver));

    let cpu_start = CpuSnapshot::take(&ctx.server_pids);
    let total = (c.p.duration.as_secs_f64() * c.p.rate).ceil() as u64;
    ctx.progress.count("cycles", total);
    let permits = Arc::new(Semaphore::new(c.p.concurrency));
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while !ctx.stopped() {
        let at = n as f64 / c.p.rate;
        if at >= c.p.duration.as_secs_f64() {
            break;
        }
        let due = t0 + Duration::from_secs_f64(at);
        net::sleep_until(due).await;
        let permit = permits.acquire_arc().await;
        let lag = Instant::now().saturating_duration_since(due);
        c.max_start_lag_us
            .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
        c.started.fetch_add(1, Ordering::Relaxed);
        natter_runtime::spawn(c.clone().cycle(n, permit));
        n += 1;
    }
    *lock(&c.dispatch_s) = Some(t0.elapsed().as_secs_f64());
    // Every cycle holds a permit until it is done.
    ctx.progress.spin("finishing", "cycles in progress");
    for _ in 0..c.p.concurrency {
        std::mem::forget(permits.acquire().await);
    }
    *lock(&c.cpu) = Some((cpu_start, CpuSnapshot::take(&ctx.server_pids)));
    ctx.progress
        .spin("waiting", "for the observer's presence events");
    let g = c.clone();
    net::wait_until(c.p.grace, move || {
        let joined = lock(&g.joined);
        let said = lock(&g.said);
        let seen = lock(&g.seen);
        joined
            .iter()
            .all(|n| seen.leaves.contains(n) && seen.joins.contains(n))
            && said.iter().all(|n| seen.messages.contains(n))
    })
    .await;
    Ok(())
}

impl Churn {
    fn fail(&self, why: String) {
        *lock(&self.failures).entry(why).or_default() += 1;
    }

    /// One cycle: connect as churn-<run>-<n>, join, say, disconnect.
    /// Cycle n is the run's connection n + 1 (the observer is the first),
    /// and takes the URL that follows from it.
    async fn cycle(self: Arc<Self>, n: u64, _permit: SemaphoreGuardArc) {
        let ctx = &self.ctx;
        let started = Instant::now();
        let nick = format!("{}{n}", self.prefix);
        let to = ctx.target(n as usize + 1);
        let conn = ctx
            .connect(n as usize, to, Some(&nick), &self.connects)
            .await;
        ctx.progress.inc();
        let Some(mut conn) = conn else {
            return; // counted in the connect stats
        };
        if conn.welcome.nick != nick {
            let why = conn
                .welcome
                .nick_error
                .map_or_else(|| "no nick_error".to_owned(), |e| e.to_string());
            self.fail(format!("nick refused ({why})"));
            return;
        }
        if let Err(why) = net::join(&mut conn, &self.room).await {
            self.fail(why);
            return;
        }
        lock(&self.joined).insert(n);
        let say = Request::Say {
            room: self.room.clone(),
            text: format!("{} c {n}", ctx.run_id),
        };
        match net::request_reply(&mut conn, say).await {
            Ok(Reply::Say { seq, .. }) => {
                self.last_seq.fetch_max(seq, Ordering::Relaxed);
                lock(&self.said).insert(n);
            }
            Ok(other) => {
                self.fail(format!("say: unexpected reply {other:?}"));
                return;
            }
            Err(why) => {
                self.fail(why);
                return;
            }
        }
        let abrupt = self.p.abrupt_every > 0 && n % self.p.abrupt_every == self.p.abrupt_every - 1;
        if abrupt {
            drop(conn); // the socket closes without a close frame
            self.abrupt.fetch_add(1, Ordering::Relaxed);
        } else {
            let LeanConnection {
                mut sender,
                mut receiver,
                ..
            } = conn;
            if let Err(e) = sender.close().await {
                self.fail(format!("close: {e}"));
                return;
            }
            let drained = natter_runtime::timeout(Duration::from_secs(5), async {
                while receiver.next_text().await.is_some() {}
            })
            .await;
            if drained.is_none() {
                self.fail(
                    "close: the server did not finish the closing handshake within 5 s".into(),
                );
                return;
            }
            match receiver.close_info() {
                Some(info) if info.code == 1000 => {}
                other => {
                    self.fail(format!(
                        "close: the server answered our 1000 with {}",
                        net::close_text(other)
                    ));
                    return;
                }
            }
            self.graceful.fetch_add(1, Ordering::Relaxed);
        }
        self.cycle_time.record_duration(started.elapsed());
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// The observer: notes every churned client's join, message and leave.
    async fn observe(self: Arc<Self>, mut receiver: LeanReceiver) {
        let run = self.ctx.run_id.as_str();
        while let Some(message) = receiver.next().await {
            match message {
                ServerMessage::Presence(p) => {
                    let Some(n) = p
                        .nick
                        .strip_prefix(&self.prefix)
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let mut seen = lock(&self.seen);
                    match p.event {
                        PresenceKind::Join => seen.joins.insert(n),
                        PresenceKind::Leave => seen.leaves.insert(n),
                        PresenceKind::Rename => false,
                    };
                }
                ServerMessage::Message(m) => {
                    lock(&self.observer_seq).observe(m.seq);
                    let mut parts = m.text.split(' ');
                    let cycle = match (parts.next(), parts.next(), parts.next()) {
                        (Some(r), Some("c"), Some(n)) if r == run => n.parse::<u64>().ok(),
                        _ => None,
                    };
                    if let Some(n) = cycle {
                        lock(&self.seen).messages.insert(n);
                    }
                }
                ServerMessage::Shutdown { .. } => self.observer_closes.shutdown(),
                _ => {}
            }
        }
        self.observer_closes.ended(receiver.close_info());
    }

    fn results(&self, findings: &mut Findings) -> ChurnResults {
        let joined = lock(&self.joined).clone();
        let said = lock(&self.said).clone();
        let seen = lock(&self.seen);
        let missing = |owed: &HashSet<u64>, got: &HashSet<u64>| -> Vec<u64> {
            let mut v: Vec<u64> = owed.difference(got).copied().collect();
            v.sort_unstable();
            v
        };
        let missing_leaves = missing(&joined, &seen.leaves);
        let missing_joins = missing(&joined, &seen.joins);
        let missing_messages = missing(&said, &seen.messages);
        let unexpected_leaves = seen.leaves.difference(&joined).count() as u64;
        drop(seen);
        let nicks = |v: &[u64]| -> Vec<String> {
            v.iter()
                .take(10)
                .map(|n| format!("{}{n}", self.prefix))
                .collect()
        };
        let seq = lock(&self.observer_seq);
        let last = self.last_seq.load(Ordering::Relaxed).max(seq.highest());
        let (gaps, dups, late) = (seq.lost(last), seq.duplicates, seq.late);
        drop(seq);
        let failures = lock(&self.failures).clone();
        let started = self.started.load(Ordering::Relaxed);
        let connections = self.connects.summary();
        let connect_failed =
            connections.failed + connections.refused_503 + connections.failed_tester_side;
        let dispatch_s = *lock(&self.dispatch_s);
        let results = ChurnResults {
            rate: self.p.rate,
            duration_s: self.p.duration.as_secs_f64(),
            concurrency: self.p.concurrency,
            cycles_started: started,
            cycles_completed: self.completed.load(Ordering::Relaxed),
            cycles_failed: failures.values().sum::<u64>() + connect_failed,
            achieved_rate: dispatch_s
                .map(|s| s.max(self.p.duration.as_secs_f64()))
                .filter(|&s| s > 0.0)
                .map(|s| started as f64 / s),
            max_start_lag_ms: self.max_start_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
            graceful_closes: self.graceful.load(Ordering::Relaxed),
            abrupt_drops: self.abrupt.load(Ordering::Relaxed),
            connections,
            failures,
            cycle_time: self.cycle_time.summary(),
            joined: joined.len() as u64,
            missing_leaves: missing_leaves.len() as u64,
            missing_leave_nicks: nicks(&missing_leaves),
            missing_joins: missing_joins.len() as u64,
            missing_join_nicks: nicks(&missing_joins),
            missing_messages: missing_messages.len() as u64,
            unexpected_leaves,
            seq_gaps: gaps,
            seq_duplicates: dups,
            seq_reordered: late,
            observer_closes: self.observer_closes.summary(),
            server_cpu_us_per_cycle: None,
        };
        let r = &results;
        r.connections.judge(findings, false);
        self.observer_closes.judge(findings);
        let failed: u64 = r.failures.values().sum();
        findings.problem_if(failed, |n| {
            let list: Vec<String> = r
                .failures
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect();
            format!("{n} cycles failed after connecting: {}", list.join("; "))
        });
        findings.problem_if(r.missing_leaves, |n| {
            format!(
                "{n} churned clients left without a leave presence reaching the observer: {}",
                r.missing_leave_nicks.join(", ")
            )
        });
        findings.problem_if(r.missing_joins, |n| {
            format!(
                "{n} churned clients joined without a join presence reaching the observer: {}",
                r.missing_join_nicks.join(", ")
            )
        });
        findings.problem_if(r.missing_messages, |n| {
            format!("{n} messages acknowledged with ok never reached the observer")
        });
        findings.problem_if(r.unexpected_leaves, |n| {
            format!("{n} leave presences for clients the observer never saw join")
        });
        findings.seq_numbering("the observer", gaps, dups, late);
        if let Some(rate) = r.achieved_rate.filter(|&rate| rate < 0.95 * r.rate) {
            findings.warn(format!(
                "achieved {rate:.1} cycles/s of the {} asked for: --concurrency {} bounded it \
                 (cycles took longer than concurrency/rate)",
                r.rate, r.concurrency
            ));
        }
        results
    }
}

#[derive(Debug, Serialize)]
pub struct ChurnResults {
    pub rate: f64,
    pub duration_s: f64,
    pub concurrency: usize,
    pub cycles_started: u64,
    pub cycles_completed: u64,
    pub cycles_failed: u64,
    pub achieved_rate: Option<f64>,
    pub max_start_lag_ms: f64,
    pub graceful_closes: u64,
    pub abrupt_drops: u64,
    pub connections: ConnectSummary,
    pub failures: BTreeMap<String, u64>,
    /// Connect to disconnect, completed cycles.
    pub cycle_time: Option<Percentiles>,
    /// Cycles whose join succeeded (each owes a leave).
    pub joined: u64,
    pub missing_leaves: u64,
    pub missing_leave_nicks: Vec<String>,
    pub missing_joins: u64,
    pub missing_join_nicks: Vec<String>,
    pub missing_messages: u64,
    pub unexpected_leaves: u64,
    pub seq_gaps: u64,
    pub seq_duplicates: u64,
    pub seq_reordered: u64,
    pub observer_closes: Vec<CloseCount>,
    /// Server CPU while cycles ran, per completed cycle (with --server-pid).
    pub server_cpu_us_per_cycle: Option<f64>,
}

impl Summary for ChurnResults {
    fn human(&self, out: &mut Lines) {
        out.kv(
            "setup",
            format!(
                "{} cycles/s for {} s, at most {} at once",
                self.rate, self.duration_s, self.concurrency
            ),
        );
        out.kv(
            "cycles",
            format!(
                "{} started, {} completed, {} failed ({} closed cleanly, {} dropped)",
                count(self.cycles_started),
                count(self.cycles_completed),
                self.cycles_failed,
                self.graceful_closes,
                self.abrupt_drops
            ),
        );
        if let Some(rate) = self.achieved_rate {
            out.kv(
                "achieved rate",
                format!(
                    "{rate:.1} cycles/s (max start lag {})",
                    ms(self.max_start_lag_ms)
                ),
            );
        }
        out.kv("connections", self.connections.line());
        if let Some(t) = &self.connections.connect_time {
            out.kv("connect time", t.line());
        }
        if let Some(t) = &self.cycle_time {
            out.kv("cycle time", t.line());
        }
        out.kv(
            "observer saw",
            format!(
                "{} joined: {} leaves missing, {} joins missing, {} messages missing",
                self.joined, self.missing_leaves, self.missing_joins, self.missing_messages
            ),
        );
        out.kv(
            "room seq gap / dup / reord",
            format!(
                "{} / {} / {}",
                self.seq_gaps, self.seq_duplicates, self.seq_reordered
            ),
        );
        if let Some(us) = self.server_cpu_us_per_cycle {
            out.kv("server CPU / cycle", format!("{us:.0} µs"));
        }
    }
}
