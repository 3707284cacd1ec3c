//! `natter load conns`: how many connections, how fast, at what memory cost.
//!
//! `test` holds the connections and their numbers; `probe` the round trips
//! made while all are held; `workers` the sides of a `--workers` run. This
//! file only reads the options and chooses: one process, a parent, or a
//! worker.

mod probe;
mod test;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::common::{CommonArgs, emit, header, seconds, setup, usage};
use super::net;
use super::report::{Findings, Report};
use super::series::CpuSources;
use super::stats::lock;
use super::sys;
use super::workers::Workers;

use test::{Conns, results, scenario};

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
