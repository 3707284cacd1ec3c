//! `natter load conns --workers N`: the worker's side and the parent's.
//!
//! Worker I opens connections I, I+N, I+2N … (so each worker spreads over
//! every URL) and says `connected`. Once every worker has, all the run's
//! connections are held at once: the parent reads the servers' memory and
//! the connect phase's CPU, says `go`, and each worker sends the probes of
//! its share and reports when their replies are in. At the end of the
//! hold the parent reads the servers' memory again, says `finish`, and
//! merges the workers' states: connect-time histograms merged, counts
//! summed, probes summed with their round-trip histograms merged.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::probe;
use super::test::{Conns, ConnsState, results};
use crate::load::common::{CommonArgs, emit as emit_report, header};
use crate::load::net;
use crate::load::report::{Findings, Report, count};
use crate::load::series::SeriesState;
use crate::load::stats::lock;
use crate::load::sys::{self, CpuSnapshot};
use crate::load::workers::{
    Failure, Link, ParentLine, WORKER_MARGIN, WorkerLine, Workers, decode, emit, report_state,
};

/// How often a worker reports while it holds.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A worker's `progress` line.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Held {
    /// Its probes are answered (or timed out).
    probed: bool,
    open: u64,
}

/// Runs this process as a worker of a conns run.
pub async fn worker(c: Arc<Conns>, deadline: Duration, findings: Findings) -> ExitCode {
    let link = Link::start();
    lock(&c.marks).tester_rss_before = sys::rss_bytes(std::process::id());
    let end = c
        .ctx
        .run_bounded(deadline + WORKER_MARGIN, work(c.clone(), &link))
        .await
        .unwrap_or_else(net::unix_micros);
    let mut state = c.state(end);
    state.warnings = findings.warnings;
    report_state(&state);
    c.close().await;
    ExitCode::SUCCESS
}

async fn work(c: Arc<Conns>, link: &Link) -> u64 {
    c.connect_all().await;
    emit(&WorkerLine::Connected(json!({})));
    if let ParentLine::Finish(end) = link.next().await {
        return end;
    }
    c.probes.run().await;
    loop {
        let held = Held {
            probed: true,
            open: c.alive.count() as u64,
        };
        if let Ok(v) = serde_json::to_value(held) {
            emit(&WorkerLine::Progress(v));
        }
        match natter_runtime::timeout(PROGRESS_EVERY, link.next()).await {
            Some(ParentLine::Finish(end)) => {
                lock(&c.marks).tester_rss_held = sys::rss_bytes(std::process::id());
                return end;
            }
            Some(ParentLine::Go(_)) | None => {}
        }
    }
}

/// Runs the parent of a conns run: `rss_before` is the servers' memory
/// read before the workers started.
pub async fn parent(
    c: Arc<Conns>,
    mut workers: Workers,
    common: &CommonArgs,
    deadline: Duration,
    rss_before: Option<u64>,
    mut findings: Findings,
) -> ExitCode {
    let ctx = c.ctx.clone();
    lock(&c.marks).rss_before = rss_before;
    let coordinated = ctx
        .run_bounded(deadline, coordinate(&c, &mut workers))
        .await;
    let finished = match coordinated {
        None => false,
        Some(Ok(())) => true,
        Some(Err(failure)) => return failure.exit(),
    };
    let end_us = net::unix_micros();
    let mut state = match collect(&mut workers, end_us).await {
        Ok(parts) => ConnsState::merge(parts),
        Err(failure) => return failure.exit(),
    };
    state.series = SeriesState::merge(&[state.series, c.series.finish(end_us)]);
    for w in &state.warnings {
        if !findings.warnings.contains(w) {
            findings.warn(w.clone());
        }
    }
    let marks = std::mem::take(&mut *lock(&c.marks));
    let mut results = results(&state, &marks, c.count, c.hold, &mut findings);
    let cpu = marks.cpu.as_ref().map(|(a, b)| a.window(b));
    // They close their connections, then exit.
    workers.reap(Duration::from_secs_f64(30.0 + c.count as f64 / 1000.0));
    if !ctx.server_pids.is_empty() {
        natter_runtime::sleep(Duration::from_millis(500)).await;
        results.server_rss_after_close = sys::servers_rss(&ctx.server_pids);
    }
    let mut head = header(&ctx, "conns", deadline);
    head.urls = state.urls.clone();
    let report = Report::new(head, findings, cpu, !finished, results)
        .with_series(Some(state.series.report(None, None)));
    emit_report(&report, common)
}

/// Connect (all workers), hold with the probes, read the servers.
async fn coordinate(c: &Conns, workers: &mut Workers) -> Result<(), Failure> {
    let ctx = &c.ctx;
    let pids = workers.pids();
    let n = workers.len();
    let cpu_start = CpuSnapshot::take_with(&ctx.server_pids, &pids);
    let started = Instant::now();
    ctx.progress.spin(
        "connecting",
        format!("{} connections, {n} workers", count(c.count as u64)),
    );
    let limit = Duration::from_secs(3600);
    workers
        .gather(
            "connected",
            limit,
            |line| match line {
                WorkerLine::Connected(v) => Ok(v),
                other => Err(other),
            },
            |_, _| {},
        )
        .await?;
    {
        let mut marks = lock(&c.marks);
        marks.connect_s = Some(started.elapsed().as_secs_f64());
        marks.rss_established = sys::servers_rss(&ctx.server_pids);
        marks.cpu = Some((cpu_start, CpuSnapshot::take_with(&ctx.server_pids, &pids)));
    }
    workers.tell_all(&ParentLine::Go(json!({})))?;
    let until = Instant::now() + c.hold;
    ctx.progress.spin("holding", "probing");
    let mut held = vec![Held::default(); n];
    let probe_until = Instant::now() + probe::limit();
    while !held.iter().all(|h| h.probed) && Instant::now() < probe_until {
        listen(workers, &mut held, Instant::now() + PROGRESS_EVERY, c).await?;
    }
    listen(workers, &mut held, until, c).await?;
    lock(&c.marks).rss_held = sys::servers_rss(&ctx.server_pids);
    Ok(())
}

/// Reads the workers' progress lines until `until`, showing how many are
/// open.
async fn listen(
    workers: &mut Workers,
    held: &mut [Held],
    until: Instant,
    c: &Conns,
) -> Result<(), Failure> {
    workers
        .listen(held, until, |held| {
            let open: u64 = held.iter().map(|h| h.open).sum();
            c.ctx.progress.set_message(format!("{} open", count(open)));
        })
        .await
}

/// Says `finish` and collects every worker's state.
async fn collect(workers: &mut Workers, end_us: u64) -> Result<Vec<ConnsState>, Failure> {
    workers.tell_all(&ParentLine::Finish(end_us))?;
    let states = workers
        .gather(
            "its state",
            Duration::from_secs(60),
            |line| match line {
                WorkerLine::State(v) => Ok(v),
                other => Err(other),
            },
            |_, _| {},
        )
        .await?;
    let mut parts = Vec::new();
    for (i, v) in states.into_iter().enumerate() {
        parts.push(decode::<ConnsState>(workers, i, v)?);
    }
    Ok(parts)
}
