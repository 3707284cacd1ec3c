//! `natter load ramp`: the websocket-shootout broadcast benchmark. A room
//! grows step by step; after each step, broadcasts measure the time until
//! the last member has the message.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::channel::oneshot;
use natter::{LeanReceiver, LeanSender};
use natter_protocol::{Reply, ServerMessage};
use serde::Serialize;

use super::common::{CommonArgs, check_rate, emit, header, no_workers, seconds, setup, usage};
use super::net::{
    self, Alive, AliveGuard, CloseCount, CloseLog, ConnectStats, ConnectSummary, Ctx,
};
use super::report::{Findings, Lines, Report, Summary};
use super::series::{CpuSources, Series};
use super::stats::{SeqTracker, lock, ms, percentile};
use super::sys::CpuSnapshot;

#[derive(Args, Debug)]
pub struct RampArgs {
    /// Clients added to the room per step.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    step: usize,

    /// Stop once the room has this many clients.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_clients: usize,

    /// Broadcasts in flight at once (each from a different member).
    #[arg(long, value_name = "N", default_value_t = 5)]
    concurrent: usize,

    /// Broadcasts measured per step, sent --concurrent at a time; the step's
    /// 95th percentile is taken over them.
    #[arg(long, value_name = "N", default_value_t = 20)]
    samples: usize,

    /// Stop when a step's 95th-percentile broadcast round trip exceeds
    /// this, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500.0)]
    limit_ms: f64,

    /// Seconds a broadcast may take to reach every member; past it the
    /// message counts as lost (a failure) and the ramp stops.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    broadcast_timeout: f64,

    #[command(flatten)]
    common: CommonArgs,
}

struct Params {
    step: usize,
    max_clients: usize,
    concurrent: usize,
    samples: usize,
    limit: Duration,
    timeout: Duration,
}

/// One broadcast in flight: members count down; the last one reports.
struct Bcast {
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Instant>>>,
}

struct Ramp {
    ctx: Arc<Ctx>,
    p: Params,
    room: String,
    connects: ConnectStats,
    closes: CloseLog,
    /// Senders of joined members, by join order (taken while in use).
    members: Mutex<Vec<Option<LeanSender>>>,
    trackers: Mutex<Vec<Arc<Mutex<SeqTracker>>>>,
    bcasts: Mutex<HashMap<u64, Arc<Bcast>>>,
    next_bcast: AtomicU64,
    last_seq: AtomicU64,
    alive: Arc<Alive>,
    steps: Mutex<Vec<StepResult>>,
    stop_reason: Mutex<Option<String>>,
    lost_broadcasts: Mutex<Vec<String>>,
    cpu: Mutex<Option<CpuSnapshot>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub clients: usize,
    /// Seconds to connect and join this step's clients.
    pub join_s: f64,
    pub refused_503: u64,
    pub failed: u64,
    /// Broadcast round trips measured (send → last member received).
    pub samples: usize,
    pub rtt_min_ms: Option<f64>,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    pub under_limit: bool,
}

pub async fn run(args: RampArgs) -> ExitCode {
    if let Err(code) = no_workers(
        &args.common,
        "ramp",
        "its steps are decided from the whole run's p95, which one process measures",
    ) {
        return code;
    }
    if args.step == 0 || args.max_clients == 0 || args.concurrent == 0 || args.samples == 0 {
        return usage("--step, --max-clients, --concurrent and --samples must be at least 1");
    }
    if !(args.limit_ms.is_finite() && args.limit_ms > 0.0) {
        return usage("--limit-ms must be a number of milliseconds > 0");
    }
    let timeout = match seconds("--broadcast-timeout", args.broadcast_timeout, false) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let p = Params {
        step: args.step,
        max_clients: args.max_clients,
        concurrent: args.concurrent,
        samples: args.samples,
        limit: Duration::from_secs_f64(args.limit_ms / 1000.0),
        timeout,
    };
    let mut findings = Findings::default();
    let ctx = match setup(&args.common, p.max_clients, &mut findings).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let _ = check_rate(&ctx, 1.0, &mut findings);
    let steps = p.max_clients.div_ceil(p.step) as f64;
    let rounds = p.samples.div_ceil(p.concurrent) as f64;
    let deadline = args.common.deadline.map_or_else(
        || {
            let per_step = 60.0 + p.step as f64 / 100.0 + (3.0 + rounds) * timeout.as_secs_f64();
            // Every join is announced to every member: N²/2 presence
            // frames in all, budgeted at 20 000 a second.
            let max = p.max_clients as f64;
            let presence = max * max / 40_000.0;
            Duration::from_secs_f64(30.0 + steps * per_step + presence)
        },
        Duration::from_secs_f64,
    );
    let r = Arc::new(Ramp {
        room: format!("ramp-{}", ctx.run_id),
        ctx: ctx.clone(),
        p,
        connects: ConnectStats::default(),
        closes: CloseLog::default(),
        members: Mutex::default(),
        trackers: Mutex::default(),
        bcasts: Mutex::default(),
        next_bcast: AtomicU64::new(1),
        last_seq: AtomicU64::new(0),
        alive: Arc::default(),
        steps: Mutex::default(),
        stop_reason: Mutex::default(),
        lost_broadcasts: Mutex::default(),
        cpu: Mutex::default(),
    });
    // Connections (the room's size) and CPU, a point a second, for
    // `--json` and the report's charts.
    let alive = r.alive.clone();
    let series = Series::start(
        net::unix_micros(),
        move || alive.count() as u64,
        CpuSources {
            enabled: true,
            server_pids: ctx.server_pids.clone(),
            other_testers: Vec::new(),
        },
    );
    let finished = ctx
        .run_bounded(deadline, scenario(r.clone()))
        .await
        .is_some();
    let cpu = lock(&r.cpu)
        .as_ref()
        .map(|a| a.window(&CpuSnapshot::take(&ctx.server_pids)));
    let series = series.finish(net::unix_micros()).report(None, None);
    let results = r.results(&mut findings, finished);
    let report = Report::new(
        header(&ctx, "ramp", deadline),
        findings,
        cpu,
        !finished,
        results,
    )
    .with_series(Some(series));
    r.close().await;
    emit(&report, &args.common)
}

async fn scenario(r: Arc<Ramp>) {
    let ctx = r.ctx.clone();
    *lock(&r.cpu) = Some(CpuSnapshot::take(&ctx.server_pids));
    let mut clients = 0;
    loop {
        let target = (clients + r.p.step).min(r.p.max_clients);
        let before = r.connects.summary();
        let started = Instant::now();
        ctx.progress.count("joining", (target - clients) as u64);
        ctx.progress
            .set_message(format!("step to {target} clients"));
        let opener = r.clone();
        net::pool(&ctx, clients..target, move |i| opener.clone().open(i)).await;
        let join_s = started.elapsed().as_secs_f64();
        let after = r.connects.summary();
        clients = lock(&r.members).len();
        let mut step = StepResult {
            clients,
            join_s,
            refused_503: after.refused_503 - before.refused_503,
            failed: (after.failed + after.join_failed + after.failed_tester_side)
                - (before.failed + before.join_failed + before.failed_tester_side),
            samples: 0,
            rtt_min_ms: None,
            rtt_p50_ms: None,
            rtt_p95_ms: None,
            rtt_max_ms: None,
            under_limit: false,
        };
        if ctx.stopped() {
            return;
        }
        if step.refused_503 > 0 || step.failed > 0 {
            let why = if step.failed > 0 {
                format!("{} connections failed in the step to {target}", step.failed)
            } else {
                format!(
                    "the server refused {} connections (503) in the step to {target}",
                    step.refused_503
                )
            };
            lock(&r.steps).push(step);
            stop(&r, why);
            return;
        }
        // Presence of the new members floods everyone; one unmeasured
        // broadcast waits until that has drained (events keep room order).
        ctx.progress.spin("settling", format!("{clients} clients"));
        let settle = r.clone().broadcast(0, r.p.timeout * 3).await;
        if settle.is_none() {
            lock(&r.steps).push(step);
            stop(&r, "a settling broadcast did not reach every member".into());
            return;
        }
        ctx.progress.spin("measuring", format!("{clients} clients"));
        let mut rtts = Vec::with_capacity(r.p.samples);
        let mut lost = false;
        let mut sent = 0;
        while sent < r.p.samples && !lost {
            let n = r.p.concurrent.min(r.p.samples - sent);
            let round = (0..n).map(|c| r.clone().broadcast(sent + c, r.p.timeout));
            for rtt in futures::future::join_all(round).await {
                match rtt {
                    Some(d) => rtts.push(d),
                    None => lost = true,
                }
            }
            sent += n;
        }
        step.samples = rtts.len();
        let msf = |d: Duration| d.as_secs_f64() * 1000.0;
        step.rtt_p95_ms = percentile(&mut rtts, 95.0).map(msf);
        step.rtt_p50_ms = percentile(&mut rtts, 50.0).map(msf);
        step.rtt_min_ms = rtts.first().copied().map(msf);
        step.rtt_max_ms = rtts.last().copied().map(msf);
        let p95 = percentile(&mut rtts, 95.0);
        step.under_limit = !lost && p95.is_some_and(|p| p <= r.p.limit);
        lock(&r.steps).push(step);
        if lost {
            stop(&r, format!("a broadcast was lost at {clients} clients"));
            return;
        }
        if let Some(p) = p95.filter(|&p| p > r.p.limit) {
            stop(
                &r,
                format!(
                    "p95 round trip {} exceeded the limit {} at {clients} clients",
                    ms(p.as_secs_f64() * 1000.0),
                    ms(r.p.limit.as_secs_f64() * 1000.0)
                ),
            );
            return;
        }
        if r.closes.unexpected() > 0 {
            stop(&r, format!("connections were closed at {clients} clients"));
            return;
        }
        if clients >= r.p.max_clients {
            stop(&r, format!("reached --max-clients {}", r.p.max_clients));
            return;
        }
    }
}

fn stop(r: &Ramp, why: String) {
    *lock(&r.stop_reason) = Some(why);
}

impl Ramp {
    async fn open(self: Arc<Self>, i: usize) {
        let ctx = &self.ctx;
        let conn = ctx.connect(i, ctx.target(i), None, &self.connects).await;
        let Some(mut conn) = conn else {
            ctx.progress.inc();
            return;
        };
        let joined = net::join(&mut conn, &self.room).await;
        ctx.progress.inc();
        match joined {
            Ok(join) => {
                let tracker = Arc::new(Mutex::new(SeqTracker::new(join.seq)));
                lock(&self.trackers).push(tracker.clone());
                lock(&self.members).push(Some(conn.sender));
                let guard = self.alive.enter();
                natter_runtime::spawn(self.clone().member(conn.receiver, tracker, guard));
            }
            Err(why) => self.connects.join_failed(why),
        }
    }

    /// A member's reader: counts down broadcasts and checks the room seq.
    async fn member(
        self: Arc<Self>,
        mut receiver: LeanReceiver,
        tracker: Arc<Mutex<SeqTracker>>,
        _alive: AliveGuard,
    ) {
        let run = self.ctx.run_id.as_str();
        while let Some(frame) = receiver.next_text().await {
            match net::frame_type(&frame).as_deref() {
                Some("message" | "ok") => {}
                Some("shutdown") => {
                    self.closes.shutdown();
                    continue;
                }
                _ => continue, // presence floods: skipped undecoded
            }
            let now = Instant::now();
            match serde_json::from_str(&frame) {
                Ok(ServerMessage::Message(m)) => {
                    lock(&tracker).observe(m.seq);
                    let mut parts = m.text.split(' ');
                    if parts.next() != Some(run) || parts.next() != Some("b") {
                        continue;
                    }
                    let Some(id) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
                        continue;
                    };
                    let bcast = lock(&self.bcasts).get(&id).cloned();
                    let last = bcast
                        .filter(|b| b.remaining.fetch_sub(1, Ordering::AcqRel) == 1)
                        .and_then(|b| lock(&b.done).take());
                    if let Some(tx) = last {
                        let _ = tx.send(now);
                    }
                }
                Ok(ServerMessage::Ok(ok)) => {
                    if let Reply::Say { seq, .. } = ok.reply {
                        self.last_seq.fetch_max(seq, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
        self.closes.ended(receiver.close_info());
    }

    /// One broadcast from member `pick` (spread over the room): the time
    /// until every member has it, or `None` if that took over `limit`.
    async fn broadcast(self: Arc<Self>, pick: usize, limit: Duration) -> Option<Duration> {
        let id = self.next_bcast.fetch_add(1, Ordering::Relaxed);
        let (idx, mut sender, members) = {
            let mut members = lock(&self.members);
            let n = members.len();
            if n == 0 {
                return None;
            }
            // A stride coprime to most sizes spreads the senders.
            let mut idx = (pick * 7919 + id as usize) % n;
            let mut tries = 0;
            while members[idx].is_none() && tries < n {
                idx = (idx + 1) % n;
                tries += 1;
            }
            (idx, members[idx].take()?, n)
        };
        let (tx, rx) = oneshot::channel();
        let bcast = Arc::new(Bcast {
            remaining: AtomicUsize::new(members),
            done: Mutex::new(Some(tx)),
        });
        lock(&self.bcasts).insert(id, bcast.clone());
        let text = format!(
            r#"{{"type":"say","id":{},"room":"{}","text":"{} b {id}"}}"#,
            sender.take_id(),
            self.room,
            self.ctx.run_id
        );
        let sent_at = Instant::now();
        let sent = sender.send_text(text).await;
        lock(&self.members)[idx] = Some(sender);
        let result = match sent {
            Ok(()) => match natter_runtime::timeout(limit, rx).await {
                Some(Ok(at)) => Some(at.saturating_duration_since(sent_at)),
                _ => None,
            },
            Err(_) => None,
        };
        lock(&self.bcasts).remove(&id);
        if result.is_none() {
            let left = bcast.remaining.load(Ordering::Relaxed);
            lock(&self.lost_broadcasts).push(format!(
                "broadcast {id} reached {} of {members} members within {} s",
                members.saturating_sub(left),
                limit.as_secs_f64()
            ));
        }
        result
    }

    fn results(&self, findings: &mut Findings, finished: bool) -> RampResults {
        let steps = lock(&self.steps).clone();
        let largest = steps
            .iter()
            .filter(|s| s.under_limit)
            .map(|s| s.clients)
            .max();
        let connections = self.connects.summary();
        connections.judge(findings, true);
        self.closes.judge(findings);
        let lost = lock(&self.lost_broadcasts).clone();
        if !lost.is_empty() {
            findings.problem(format!(
                "{} broadcasts did not reach every member: {}",
                lost.len(),
                lost.join("; ")
            ));
        }
        let trackers = lock(&self.trackers).clone();
        let last = trackers
            .iter()
            .map(|t| lock(t).highest())
            .max()
            .unwrap_or(0)
            .max(self.last_seq.load(Ordering::Relaxed));
        let (mut gaps, mut dups, mut late) = (0, 0, 0);
        for t in &trackers {
            let t = lock(t);
            gaps += t.lost(last);
            dups += t.duplicates;
            late += t.late;
        }
        findings.seq_numbering("members", gaps, dups, late);
        let stop_reason = lock(&self.stop_reason).clone().unwrap_or_else(|| {
            if finished {
                "unknown".into()
            } else {
                "hard deadline".into()
            }
        });
        RampResults {
            step: self.p.step,
            max_clients: self.p.max_clients,
            concurrent: self.p.concurrent,
            samples_per_step: self.p.samples,
            limit_ms: self.p.limit.as_secs_f64() * 1000.0,
            connections,
            steps,
            largest_step_under_limit: largest,
            stop_reason,
            seq_gaps: gaps,
            seq_duplicates: dups,
            seq_reordered: late,
            close_codes_seen: self.closes.summary(),
        }
    }

    async fn close(&self) {
        self.closes.closing.store(true, Ordering::Relaxed);
        let senders: Vec<LeanSender> = lock(&self.members).drain(..).flatten().collect();
        let limit = Duration::from_secs_f64(10.0 + senders.len() as f64 / 1000.0);
        net::close_all(senders, self.ctx.in_flight, limit).await;
        let alive = self.alive.clone();
        net::wait_until(Duration::from_secs(5), || alive.count() == 0).await;
    }
}

#[derive(Debug, Serialize)]
pub struct RampResults {
    pub step: usize,
    pub max_clients: usize,
    pub concurrent: usize,
    pub samples_per_step: usize,
    pub limit_ms: f64,
    pub connections: ConnectSummary,
    pub steps: Vec<StepResult>,
    /// Most clients at which the p95 round trip stayed under the limit.
    pub largest_step_under_limit: Option<usize>,
    pub stop_reason: String,
    pub seq_gaps: u64,
    pub seq_duplicates: u64,
    pub seq_reordered: u64,
    pub close_codes_seen: Vec<CloseCount>,
}

impl Summary for RampResults {
    fn human(&self, out: &mut Lines) {
        out.kv(
            "setup",
            format!(
                "steps of {} up to {} clients; {} broadcasts per step, {} at once; limit p95 {}",
                self.step,
                self.max_clients,
                self.samples_per_step,
                self.concurrent,
                ms(self.limit_ms)
            ),
        );
        out.kv("connections", self.connections.line());
        if let Some(t) = &self.connections.connect_time {
            out.kv("connect time", t.line());
        }
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), ms);
        for s in &self.steps {
            out.kv(
                &format!("{} clients", s.clients),
                format!(
                    "rtt min {} · p50 {} · p95 {} · max {} (n={}); joined in {:.2} s{}{}",
                    opt(s.rtt_min_ms),
                    opt(s.rtt_p50_ms),
                    opt(s.rtt_p95_ms),
                    opt(s.rtt_max_ms),
                    s.samples,
                    s.join_s,
                    if s.refused_503 + s.failed > 0 {
                        format!("; {} refused, {} failed", s.refused_503, s.failed)
                    } else {
                        String::new()
                    },
                    if s.under_limit { "" } else { "  ← over" }
                ),
            );
        }
        out.kv(
            "largest under limit",
            self.largest_step_under_limit
                .map_or("none".to_owned(), |n| format!("{n} clients")),
        );
        out.kv("stopped because", &self.stop_reason);
        out.kv(
            "room seq gap / dup / reord",
            format!(
                "{} / {} / {}",
                self.seq_gaps, self.seq_duplicates, self.seq_reordered
            ),
        );
        out.kv(
            "close codes seen",
            super::net::describe_closes(&self.close_codes_seen),
        );
    }
}
