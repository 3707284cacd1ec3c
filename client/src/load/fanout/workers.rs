//! `natter load fanout --workers N`: the worker's side and the parent's.
//!
//! Worker I opens subscribers and publishers whose index is ≡ I (mod N);
//! rooms, publisher numbers and payloads stay those of the whole run, so a
//! subscriber in worker 0 checks the messages of publishers in every
//! worker. Each worker says `connected` with its subscribers per room; the
//! parent sums them and says `go` with the schedule's start (unix µs, a
//! moment ahead so every worker gets it in time) and the run's subscribers
//! per room, which each worker needs to know what its publishers' acked
//! says are owed. Workers then report progress four times a second; the
//! parent reads the measured window's CPU (its workers' and the servers'),
//! waits for the drain the way one process would (every say answered,
//! every owed delivery made, or the drain time up, then the stall check),
//! says `finish`, and merges the workers' states
//! ([`FanoutState::merge`]) into one tally.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::params::Params;
use super::params::STALL_WINDOW;
use super::results::judge;
use super::state::FanoutState;
use super::test::{Fanout, Publishing, connect_all};
use crate::load::common::{CommonArgs, emit as emit_report, header};
use crate::load::net::{self, Ctx};
use crate::load::report::{Findings, Report, count};
use crate::load::series::{CpuSources, Series};
use crate::load::sys::CpuSnapshot;
use crate::load::workers::{
    Failure, Link, ParentLine, WORKER_MARGIN, WorkerLine, WorkerSpec, Workers, decode, emit,
    report_state,
};

/// How often a worker reports its counters.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How long the parent waits for the workers' states once it said
/// `finish`: each builds its state from memory, so seconds at most.
const STATE_WAIT: Duration = Duration::from_secs(60);

/// How far ahead of `go` the schedule starts, so that it reaches every
/// worker before the first say is due.
const GO_AHEAD: Duration = Duration::from_millis(300);

/// A worker's `connected` line.
#[derive(Debug, Deserialize)]
struct Connected {
    subs: Vec<u64>,
    pubs: u64,
}

/// A worker's `progress` line (see `Fanout::progress_counts`).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Counts {
    sent: u64,
    oks: u64,
    rejected: u64,
    delivered: u64,
    owed: u64,
    publishing: u64,
}

/// Runs this process as worker `spec` of a fanout: its share, then its
/// state on stdout. The worker stops at the run's deadline (and a short
/// margin) by itself, as one process would, and reports what it has.
pub async fn worker(
    ctx: Arc<Ctx>,
    p: Params,
    spec: &WorkerSpec,
    deadline: Duration,
    findings: Findings,
) -> ExitCode {
    let link = Link::start();
    let f = Fanout::new(ctx.clone(), p, spec.origin_us, false);
    let limit = deadline + WORKER_MARGIN;
    let end = ctx
        .run_bounded(limit, work(f.clone(), &link))
        .await
        .unwrap_or_else(net::unix_micros);
    let mut state = f.state(end);
    state.warnings = findings.warnings;
    report_state(&state);
    f.close().await;
    ExitCode::SUCCESS
}

/// The worker's run: connect, wait for `go`, publish and report progress
/// until `finish`; gives the series' end the parent chose.
async fn work(f: Arc<Fanout>, link: &Link) -> u64 {
    connect_all(&f).await;
    emit(&WorkerLine::Connected(json!({
        "subs": f.subs_per_room(),
        "pubs": f.joined_pubs().len(),
    })));
    let go = match link.next().await {
        ParentLine::Go(go) => go,
        ParentLine::Finish(end) => return end,
    };
    let subs: Vec<u64> = serde_json::from_value(go["subs"].clone()).unwrap_or_default();
    let _ = f.global_subs.set(subs);
    let mut publishers: Vec<Publishing> = Vec::new();
    if let Some(t0_us) = go["t0_us"].as_u64() {
        let ahead = Duration::from_micros(t0_us.saturating_sub(net::unix_micros()));
        publishers = f.start_publishers(Instant::now() + ahead, t0_us);
    }
    let end = loop {
        match natter_runtime::timeout(PROGRESS_EVERY, link.next()).await {
            None => emit(&WorkerLine::Progress(f.progress_counts())),
            Some(ParentLine::Finish(end)) => break end,
            Some(ParentLine::Go(_)) => {}
        }
    };
    f.ctx.stop.store(true, Ordering::Relaxed);
    // A publisher blocked on a stalled server must not hold the report
    // back: its numbers so far are in the state either way.
    let _ = natter_runtime::timeout(WORKER_MARGIN, f.await_publishers(publishers)).await;
    end
}

/// The parent of a `fanout --workers N` run.
pub struct Parent<'a> {
    pub ctx: Arc<Ctx>,
    pub p: Params,
    pub common: &'a CommonArgs,
    pub deadline: Duration,
    pub over_rate: bool,
}

impl Parent<'_> {
    pub async fn run(self, mut findings: Findings) -> ExitCode {
        let ctx = self.ctx.clone();
        let origin_us = net::unix_micros();
        let n = usize::from(self.common.workers);
        let mut workers = match Workers::spawn(n, origin_us, &ctx.run_id) {
            Ok(w) => w,
            Err(failure) => return failure.exit(),
        };
        let series = Series::start(
            origin_us,
            || 0,
            CpuSources {
                enabled: true,
                server_pids: ctx.server_pids.clone(),
                other_testers: workers.pids(),
            },
        );
        let mut window = (None, None);
        let coordinated = ctx
            .run_bounded(self.deadline, self.coordinate(&mut workers, &mut window))
            .await;
        let (finished, stalled) = match coordinated {
            None => (false, false),
            Some(Ok(stalled)) => (true, stalled),
            Some(Err(failure)) => return failure.exit(),
        };
        let end_us = net::unix_micros();
        let state = match collect(&mut workers, end_us).await {
            Ok(mut parts) => {
                parts.push(FanoutState {
                    series: series.finish(end_us),
                    ..FanoutState::default()
                });
                FanoutState::merge(parts)
            }
            Err(failure) => return failure.exit(),
        };
        for w in &state.warnings {
            if !findings.warnings.contains(w) {
                findings.warn(w.clone());
            }
        }
        let cpu = match &window {
            (Some(a), Some(b)) => Some(CpuSnapshot::window(a, b)),
            _ => None,
        };
        let tally = state.tally(&self.p, cpu, stalled);
        judge(&tally, self.over_rate, finished, &mut findings);
        let mut head = header(&ctx, "fanout", self.deadline);
        head.urls = state.urls.clone();
        let series = state
            .series
            .report(state.offered(&self.p), Some(&state.latency_hist()));
        let report = Report::new(head, findings, tally.cpu, !finished, tally.results)
            .with_series(Some(series));
        // They close their connections and exit once they sent their state.
        workers.reap(Duration::from_secs(30));
        emit_report(&report, self.common)
    }

    /// Connect, start, measure and drain, through the workers; returns
    /// whether deliveries had stalled when the drain ended.
    async fn coordinate(
        &self,
        workers: &mut Workers,
        window: &mut (Option<CpuSnapshot>, Option<CpuSnapshot>),
    ) -> Result<bool, Failure> {
        let ctx = &self.ctx;
        let pids = workers.pids();
        let n = workers.len();
        ctx.progress.spin("connecting", format!("{n} workers"));
        let connected = workers
            .gather("connected", self.deadline, connected_line, |_, _| {})
            .await?;
        let mut subs = vec![0u64; self.p.rooms];
        let mut pubs = 0;
        for (i, v) in connected.into_iter().enumerate() {
            let part: Connected = decode(workers, i, v)?;
            for (a, b) in subs.iter_mut().zip(&part.subs) {
                *a += b;
            }
            pubs += part.pubs;
        }
        if pubs == 0 || subs.iter().sum::<u64>() == 0 {
            return Ok(false);
        }
        let t0_us = net::unix_micros() + GO_AHEAD.as_micros() as u64;
        let t0 = Instant::now() + GO_AHEAD;
        workers.tell_all(&ParentLine::Go(json!({"t0_us": t0_us, "subs": subs})))?;
        let warm_end = t0 + self.p.warmup;
        let end = warm_end + self.p.duration;
        let mut counts = vec![Counts::default(); n];
        ctx.progress.spin("warm-up", "");
        listen(workers, &mut counts, warm_end, ctx).await?;
        window.0 = Some(CpuSnapshot::take_with(&ctx.server_pids, &pids));
        ctx.progress.spin("measuring", "");
        listen(workers, &mut counts, end, ctx).await?;
        window.1 = Some(CpuSnapshot::take_with(&ctx.server_pids, &pids));
        // Publishers that fell behind their schedule still send.
        while total(&counts).publishing > 0 {
            listen(workers, &mut counts, Instant::now() + PROGRESS_EVERY, ctx).await?;
        }
        ctx.progress.spin("draining", "");
        let drain_end = Instant::now() + self.p.drain;
        loop {
            // The counts are a quarter second old: a fresh round first.
            listen(
                workers,
                &mut counts,
                Instant::now() + PROGRESS_EVERY * 2,
                ctx,
            )
            .await?;
            let t = total(&counts);
            if t.oks + t.rejected >= t.sent && t.delivered >= t.owed {
                return Ok(false);
            }
            if Instant::now() >= drain_end {
                break;
            }
        }
        ctx.progress.spin("checking for a stall", "");
        let before = total(&counts).delivered;
        listen(workers, &mut counts, Instant::now() + STALL_WINDOW, ctx).await?;
        listen(
            workers,
            &mut counts,
            Instant::now() + PROGRESS_EVERY * 2,
            ctx,
        )
        .await?;
        Ok(total(&counts).delivered == before)
    }
}

fn connected_line(line: WorkerLine) -> Result<serde_json::Value, WorkerLine> {
    match line {
        WorkerLine::Connected(v) => Ok(v),
        other => Err(other),
    }
}

/// Says `finish` and collects every worker's state.
async fn collect(workers: &mut Workers, end_us: u64) -> Result<Vec<FanoutState>, Failure> {
    workers.tell_all(&ParentLine::Finish(end_us))?;
    let states = workers
        .gather(
            "its state",
            STATE_WAIT,
            |line| match line {
                WorkerLine::State(v) => Ok(v),
                other => Err(other),
            },
            |_, _| {},
        )
        .await?;
    let mut parts = Vec::new();
    for (i, v) in states.into_iter().enumerate() {
        parts.push(decode::<FanoutState>(workers, i, v)?);
    }
    Ok(parts)
}

/// Reads the workers' progress lines until `until`, showing the run's
/// counts so far.
async fn listen(
    workers: &mut Workers,
    counts: &mut [Counts],
    until: Instant,
    ctx: &Ctx,
) -> Result<(), Failure> {
    workers
        .listen(counts, until, |counts| {
            let t = total(counts);
            ctx.progress.set_message(format!(
                "sent {}  delivered {}  ok {}",
                count(t.sent),
                count(t.delivered),
                count(t.oks)
            ));
        })
        .await
}

fn total(counts: &[Counts]) -> Counts {
    counts.iter().fold(Counts::default(), |a, c| Counts {
        sent: a.sent + c.sent,
        oks: a.oks + c.oks,
        rejected: a.rejected + c.rejected,
        delivered: a.delivered + c.delivered,
        owed: a.owed + c.owed,
        publishing: a.publishing + c.publishing,
    })
}
