//! `natter load fanout`: publishers say, subscribers receive; throughput,
//! delivery latency, the round trip of each say to its `ok`, and the
//! room-order guarantees checked on every delivery.
//!
//! `test` holds one process's connections and their scenario; `state` the
//! raw numbers and their tally; `params` the schedule; `results` the
//! verdict; `workers` the sides of a `--workers` run. This file reads the
//! options and chooses: one process, a parent, or a worker.

mod params;
mod results;
mod state;
mod test;
mod workers;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;

use super::common::{CommonArgs, check_rate, emit, header, seconds, setup, usage};
use super::net;
use super::report::{Findings, Report};

use params::Params;
use results::judge;
use test::{Fanout, rooms_urls_warning, scenario};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Subscribers: connections that join a room and only listen.
    #[arg(long, short = 's', value_name = "S", default_value_t = 100)]
    subs: usize,

    /// Publishers: connections that join a room and say messages at --rate.
    #[arg(long, short = 'p', value_name = "P", default_value_t = 10)]
    pubs: usize,

    /// Rooms; subscriber i and publisher j go to room i mod K and j mod K.
    #[arg(long, short = 'k', value_name = "K", default_value_t = 1)]
    rooms: usize,

    /// Messages per second each publisher says (evenly paced, to a fixed
    /// schedule; a publisher that falls behind catches up).
    #[arg(long, short = 'r', value_name = "MSG/S", default_value_t = 10.0)]
    rate: f64,

    /// Length of the measured window, in seconds (after the warm-up).
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 10.0)]
    duration: f64,

    /// Warm-up in seconds: publishers already send, deliveries are checked
    /// for loss and order but not counted in throughput or latency.
    #[arg(long, short = 'w', value_name = "SECS", default_value_t = 2.0)]
    warmup: f64,

    /// Pad each message text to at least this many bytes (0: no padding,
    /// about 30 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    size: usize,

    /// Seconds to wait after the last send for outstanding deliveries and
    /// replies before counting what is missing.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    drain: f64,

    #[command(flatten)]
    common: CommonArgs,
}

pub async fn run(args: FanoutArgs) -> ExitCode {
    let p = match params(&args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut findings = Findings::default();
    let ctx = match setup(&args.common, p.subs + p.pubs, &mut findings).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let max_text = ctx.welcome.limits.max_text_bytes;
    if p.size > max_text {
        return usage(&format!(
            "--size {} exceeds the server's max_text_bytes {max_text}",
            p.size
        ));
    }
    let over_rate = check_rate(&ctx, p.rate, &mut findings);
    if let Some(w) = rooms_urls_warning(p.rooms, ctx.targets.len()) {
        findings.warn(w);
    }
    if p.rooms > p.pubs {
        findings.warn(format!(
            "{} rooms but only {} publishers: some rooms get no messages",
            p.rooms, p.pubs
        ));
    }
    let deadline = args.common.deadline.map_or_else(
        || {
            let n = (p.subs + p.pubs) as f64;
            Duration::from_secs_f64(60.0 + n / 100.0)
                + p.warmup
                + p.duration
                + p.drain
                + Duration::from_secs(15)
        },
        Duration::from_secs_f64,
    );
    if let Some(spec) = &args.common.worker {
        return workers::worker(ctx, p, spec, deadline, findings).await;
    }
    if args.common.is_parent() {
        let run = workers::Parent {
            ctx,
            p,
            common: &args.common,
            deadline,
            over_rate,
        };
        return run.run(findings).await;
    }
    let f = Fanout::new(ctx.clone(), p, net::unix_micros(), true);
    let finished = ctx
        .run_bounded(deadline, scenario(f.clone()))
        .await
        .is_some();
    let state = f.state(net::unix_micros());
    let cpu = f.cpu_window();
    let tally = state.tally(&f.p, cpu, f.stalled.load(Ordering::Relaxed));
    judge(&tally, over_rate, finished, &mut findings);
    let series = state
        .series
        .report(state.offered(&f.p), Some(&state.latency_hist()));
    let report = Report::new(
        header(&ctx, "fanout", deadline),
        findings,
        tally.cpu,
        !finished,
        tally.results,
    )
    .with_series(Some(series));
    f.close().await;
    emit(&report, &args.common)
}

fn params(a: &FanoutArgs) -> Result<Params, ExitCode> {
    if a.subs == 0 || a.pubs == 0 {
        return Err(usage(
            "fanout needs at least one subscriber and one publisher",
        ));
    }
    if a.rooms == 0 || a.rooms > 100_000 {
        return Err(usage("--rooms must be between 1 and 100000"));
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 1_000_000.0) {
        return Err(usage("--rate must be a number of messages per second > 0"));
    }
    Ok(Params {
        subs: a.subs,
        pubs: a.pubs,
        rooms: a.rooms,
        rate: a.rate,
        warmup: seconds("--warmup", a.warmup, true)?,
        duration: seconds("--duration", a.duration, false)?,
        drain: seconds("--drain", a.drain, true)?,
        size: a.size,
    })
}
