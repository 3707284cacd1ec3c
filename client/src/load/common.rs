//! The frame every load test shares: the common options, checking them,
//! probing the server, and the report header. Apart from `load/mod.rs` so
//! that the tests depend on it while `mod.rs` depends only on the tests
//! (no import circle between the module root and its tests).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use natter::Client;
use natter_protocol::Welcome;

use super::net::Share;
use super::net::{self, Ctx, Target};
use super::progress::Progress;
use super::report::{self, EXIT_CLEAN, EXIT_ERROR, Findings, Report, Summary};
use super::sys;
use super::workers::WorkerSpec;

/// Where the tests connect when no URL is given: a natter-server started
/// with its defaults on this machine.
const DEFAULT_URL: &str = "ws://127.0.0.1:7878/ws";

/// Options every load test takes.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Common options")]
pub struct CommonArgs {
    /// Server URL: the server's WebSocket endpoint (ws:// or wss://). May
    /// be repeated: connections are then spread round-robin over the URLs
    /// (see --url, the same as an option).
    #[arg(value_name = "URL", default_value = DEFAULT_URL, conflicts_with = "url")]
    pub urls: Vec<String>,

    /// Server URL, as an option instead of the URL argument. May be
    /// repeated, one per node of a cluster serving one chat: connections
    /// are then spread round-robin over the URLs (fanout: subscribers and
    /// publishers each take them in turn, so 2 URLs and 2 publishers put
    /// one publisher on each; conns, ramp, churn: each new connection takes
    /// the next URL), and the report says how many went to each.
    #[arg(long = "url", value_name = "URL")]
    pub url: Vec<String>,

    /// For wss://: trust only the CA certificates in this PEM file (a
    /// server with a private certificate) instead of the public web roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// Bind client sockets round-robin to 127.0.0.1 … 127.0.0.N (1–254), so
    /// more connections fit than one source address has ephemeral ports
    /// (about 28 000). Only for servers on loopback. 0 lets the system pick.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=254))]
    pub source_ips: u8,

    /// PID of the server process (on this machine): adds its CPU time used
    /// in the measured window (CPU per delivery) and its resident memory
    /// (VmRSS) to the report, read from /proc. May be repeated, one per
    /// node of a cluster: CPU and memory are then summed over the processes
    /// (CPU per delivery and memory per connection are the cluster's).
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,

    /// Most connection handshakes (connect + upgrade + welcome + join) in
    /// progress at once. More than the server needs to reach its connect
    /// rate only adds waiting to every connect time (on a 2-core box natter
    /// reached the same rate with 64 as with 256, at a quarter of the
    /// latency).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub in_flight: u64,

    /// Hard limit on the whole run, in seconds; the run then stops and
    /// reports what it has (and exits 1). Default: derived from the other
    /// options with a generous margin.
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<f64>,

    /// Print one JSON object (the full report) on stdout instead of the
    /// readable summary.
    #[arg(long)]
    pub json: bool,

    /// No progress bar on stderr (it is also hidden when stderr is not a
    /// terminal).
    #[arg(long, short)]
    pub quiet: bool,

    /// Run the test in N worker processes (copies of this program), each
    /// holding its share of the connections, so a run can hold more
    /// sockets than one process may open (about 19 000). Worker I takes
    /// connections I, I+N, I+2N … (so each spreads over every URL) and,
    /// with --source-ips S, binds its own addresses 127.0.0.(I·S+1) …
    /// 127.0.0.(I·S+S) (N·S at most 254). The results are merged exactly:
    /// one summary, one --json. conns and fanout only.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// After the run, also write an HTML report (charts of the time series,
    /// the latency histogram and the summary) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Internal: this process is worker I of N of a --workers run started
    /// at ORIGIN_US (unix µs) with run id RUN_ID; it talks to its parent
    /// in JSON lines instead of reporting.
    #[arg(long, value_name = "I,N,ORIGIN_US,RUN_ID", hide = true)]
    pub worker: Option<WorkerSpec>,
}

impl CommonArgs {
    /// The URLs to spread connections over, in the order given: --url's,
    /// or else the URL arguments (the default when there are none).
    pub fn urls(&self) -> Vec<String> {
        let given = if self.url.is_empty() {
            &self.urls
        } else {
            &self.url
        };
        if given.is_empty() {
            vec![DEFAULT_URL.to_owned()]
        } else {
            given.clone()
        }
    }

    /// Whether this process is the parent of a `--workers` run.
    pub fn is_parent(&self) -> bool {
        self.workers > 1 && self.worker.is_none()
    }

    /// This process's part of the run: its share as a worker, all of it
    /// otherwise.
    pub fn share(&self) -> Share {
        self.worker.as_ref().map_or(Share::ALL, |w| w.share)
    }

    /// How many processes hold the run's connections.
    fn processes(&self) -> usize {
        self.worker
            .as_ref()
            .map_or(usize::from(self.workers), |w| w.share.of)
    }
}

/// The usage error of a test that cannot run in several processes.
pub fn no_workers(common: &CommonArgs, test: &str, why: &str) -> Result<(), ExitCode> {
    if common.workers > 1 {
        return Err(usage(&format!(
            "{test} does not support --workers: {why}; run it in one process"
        )));
    }
    Ok(())
}

/// Reports a usage error (exit 2).
pub fn usage(why: &str) -> ExitCode {
    eprintln!("natter load: {why}");
    ExitCode::from(EXIT_ERROR)
}

/// Checks a number of seconds given on the command line.
pub fn seconds(name: &str, v: f64, allow_zero: bool) -> Result<Duration, ExitCode> {
    let ok = v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0)) && v < 1e7;
    if ok {
        Ok(Duration::from_secs_f64(v))
    } else if allow_zero {
        Err(usage(&format!("{name} must be a number of seconds >= 0")))
    } else {
        Err(usage(&format!("{name} must be a number of seconds > 0")))
    }
}

/// The common start of every test: check the options, raise the
/// open-files limit, probe the servers. `connections` is how many
/// connections the run may hold at once. Setup notes go into `findings`.
///
/// With `--workers`, `connections` is the whole run's; each process checks
/// its open-files limit against its own share (the parent, which holds
/// none, not at all), and the ephemeral ports against the source
/// addresses of all processes together. A worker names its rooms by the
/// parent's run id, binds its own source addresses and leaves reading the
/// servers to the parent.
pub async fn setup(
    common: &CommonArgs,
    connections: usize,
    findings: &mut Findings,
) -> Result<Arc<Ctx>, ExitCode> {
    check_pids(&common.server_pid)?;
    if let Some(d) = common.deadline {
        seconds("--deadline", d, false)?;
    }
    let processes = common.processes();
    let source_ips = usize::from(common.source_ips);
    if processes * source_ips > 254 {
        return Err(usage(&format!(
            "--workers {processes} × --source-ips {source_ips} needs more than the 254 \
             addresses 127.0.0.1 … 127.0.0.254: each worker binds its own"
        )));
    }
    let mine = connections.div_ceil(processes);
    match sys::raise_nofile_limit() {
        Some(soft) if !common.is_parent() && (soft as usize) < mine + 64 => findings.warn(format!(
            "the open-files limit is {soft}, below the {mine} connections this \
                 process may open (run as root, raise the hard limit with ulimit -Hn, or \
                 use --workers)"
        )),
        _ => {}
    }
    if connections / (processes * source_ips).max(1) > 28_000 {
        findings.warn(
            "more than ~28 000 connections from one source address can exhaust the \
             ephemeral ports: use --source-ips",
        );
    }
    let share = common.share();
    let source_base = u8::try_from(share.index * source_ips).unwrap_or(0);
    let tls = match natter::tls::client_config(common.ca.as_deref()) {
        Ok(config) => Some(config),
        Err(e) => return Err(usage(&e.to_string())),
    };
    let run_id = common
        .worker
        .as_ref()
        .map_or_else(net::run_id, |w| w.run_id.clone());
    // Probe from the last source address: it checks the servers answer
    // and that the source addresses can be bound.
    let probe_ip =
        net::source_ip_from(source_base, common.source_ips, source_ips.saturating_sub(1));
    let options = natter::ConnectOptions {
        source_ip: probe_ip,
        tls: tls.clone(),
    };
    let urls = common.urls();
    let welcome = probe_all(&urls, &options, findings).await?;
    let progress = Progress::new(common.quiet || common.worker.is_some());
    let server_pids = if common.worker.is_some() {
        Vec::new()
    } else {
        common.server_pid.clone()
    };
    Ok(Arc::new(Ctx {
        targets: urls.into_iter().map(Target::new).collect(),
        source_ips: common.source_ips,
        source_base,
        share,
        in_flight: common.in_flight as usize,
        server_pids,
        tls,
        run_id,
        welcome,
        progress,
        stop: AtomicBool::new(false),
    }))
}

/// Every --server-pid must name a readable process, once: a PID given
/// twice would count its CPU and memory twice.
fn check_pids(pids: &[u32]) -> Result<(), ExitCode> {
    for (n, &pid) in pids.iter().enumerate() {
        if !sys::process_exists(pid) {
            return Err(usage(&format!(
                "--server-pid {pid}: no such process readable in /proc"
            )));
        }
        if pids[..n].contains(&pid) {
            return Err(usage(&format!("--server-pid {pid} is given twice")));
        }
    }
    Ok(())
}

/// Probes every URL in turn, so a node that does not answer stops the run
/// before it starts. The first URL's `welcome` is the run's (its limits
/// are what the checks go by); a node announcing other limits gets a
/// warning, since the run then asks of it what it may refuse.
async fn probe_all(
    urls: &[String],
    options: &natter::ConnectOptions,
    findings: &mut Findings,
) -> Result<Welcome, ExitCode> {
    let mut first: Option<(&str, Welcome)> = None;
    for url in urls {
        let welcome = probe(url, options).await?;
        match &first {
            None => first = Some((url, welcome)),
            Some((first_url, w)) if w.limits != welcome.limits => findings.warn(format!(
                "{url} announces other limits than {first_url} ({:?} against {:?}); the \
                 run goes by the first URL's",
                welcome.limits, w.limits
            )),
            Some(_) => {}
        }
    }
    // Set by the loop: `CommonArgs::urls` is never empty.
    first
        .map(|(_, w)| w)
        .ok_or_else(|| usage("no server URL given"))
}

/// Connects to `url` once and closes again: the server answers, and its
/// `welcome` tells its name and limits.
async fn probe(url: &str, options: &natter::ConnectOptions) -> Result<Welcome, ExitCode> {
    let probe =
        natter_runtime::timeout(Duration::from_secs(10), Client::connect_lean(url, options)).await;
    let mut probe = match probe {
        Some(Ok(conn)) => conn,
        Some(Err(e)) => {
            eprintln!(
                "natter load: cannot connect to {url}: {}",
                net::describe(&e)
            );
            return Err(ExitCode::from(EXIT_ERROR));
        }
        None => {
            eprintln!("natter load: cannot connect to {url}: no welcome within 10 s");
            return Err(ExitCode::from(EXIT_ERROR));
        }
    };
    let _ = probe.sender.close().await;
    let _ = natter_runtime::timeout(Duration::from_secs(2), async {
        while probe.receiver.next_text().await.is_some() {}
    })
    .await;
    Ok(probe.welcome)
}

/// Warns (now on stderr, and in the report) when the server rate-limits
/// below what the test will ask of one connection; returns whether it does.
pub fn check_rate(ctx: &Ctx, per_connection: f64, findings: &mut Findings) -> bool {
    let limits = &ctx.welcome.limits;
    if limits.rate_per_sec > 0 && per_connection > f64::from(limits.rate_per_sec) {
        let w = format!(
            "the server rate-limits each connection to {}/s (burst {}) but this run sends \
             {per_connection}/s per connection: expect rate_limited errors and flooding \
             closes; start the server with --rate 0 for load tests",
            limits.rate_per_sec, limits.burst
        );
        ctx.progress.note(&format!("natter load: warning: {w}"));
        findings.warn(w);
        return true;
    }
    if limits.rate_per_sec > 0 {
        findings.warn(format!(
            "the server rate-limits each connection to {}/s (burst {}); load tests expect \
             it started with --rate 0",
            limits.rate_per_sec, limits.burst
        ));
    }
    false
}

/// The report header for a test: made once the run is over, so it carries
/// how many connections went to each URL.
pub fn header(ctx: &Ctx, test: &'static str, deadline: Duration) -> report::Header {
    report::Header {
        test,
        urls: ctx.url_counts(),
        server_pids: ctx.server_pids.clone(),
        server: ctx.welcome.server.clone(),
        run_id: ctx.run_id.clone(),
        deadline_s: deadline.as_secs_f64(),
        command: command_line(),
        machine: sys::Machine::this(),
    }
}

/// This process's command line as given, `natter load …`, each argument
/// quoted for a POSIX shell when it needs it, so it can be pasted back.
pub fn command_line() -> String {
    let quote = |a: String| {
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
        if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    let args = std::env::args().skip(1).map(quote);
    std::iter::once("natter".to_owned())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the report as asked (the summary, or `--json`), writes the HTML
/// report with `--report`, and gives the exit code. A report that cannot be
/// written turns a clean run's exit code into 2: the run was asked for it.
pub fn emit<T: Summary>(report: &Report<T>, common: &CommonArgs) -> ExitCode {
    let code = report.emit(common.json);
    let Some(path) = &common.report else {
        return code;
    };
    let written = serde_json::to_value(report)
        .map_err(|e| format!("cannot encode the report: {e}"))
        .and_then(|value| write_report(path, &value));
    match written {
        Ok(()) => code,
        Err(e) => {
            eprintln!("natter load: {e}");
            if report.exit_code == EXIT_CLEAN {
                ExitCode::from(EXIT_ERROR)
            } else {
                code
            }
        }
    }
}

/// Writes the HTML report of `report` (the `--json` object) to `path`
/// (`-`: stdout), drawn by `super::html`.
pub fn write_report(path: &Path, report: &serde_json::Value) -> Result<(), String> {
    super::html::write(path, report).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
