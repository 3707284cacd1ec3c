//! `natter load`: load tests against any server that speaks PROTOCOL.md.
//!
//! Four tests share one frame: the common options ([`common::CommonArgs`]), a probe
//! connection that checks the server answers and reads its limits, a hard
//! deadline after which the run stops and reports what it has, and the
//! report with its exit code (0 clean, 1 the server misbehaved, 2 usage or
//! connection errors). Given several URLs (the nodes of one cluster), a
//! test probes each and spreads its connections over them round-robin
//! (`net::Ctx::target`); its checks are by payload and room seq, so they
//! hold the cluster to its one order per room whichever node a connection
//! is on.
//!
//! Module map: `fanout`, `conns`, `ramp` and `churn` are the tests;
//! `common` is the frame they share (options, setup, usage errors); `net`
//! opens and closes connections; `stats` holds histograms and sequence
//! trackers (and their plain, mergeable form); `sys` reads /proc;
//! `progress` draws the bar; `report` prints; `series` cuts the run into
//! per-second points for `--json` and `--report`; `workers` runs a test in
//! several processes (`--workers`) and carries their raw numbers back.
//! `fanout/` and `conns/` each keep their raw state and their worker side
//! in files of their own (`fanout/state.rs`, `fanout/workers.rs`,
//! `conns/probe.rs`, `conns/workers.rs`).
//! Two subcommands work on saved `--json` reports instead of a server:
//! `report` renders one as an HTML page (`html`), `compare` sets two side
//! by side (`compare`).

mod churn;
mod common;
mod compare;
mod conns;
mod fanout;
mod html;
mod net;
mod progress;
mod ramp;
mod report;
mod series;
mod stats;
mod sys;
mod workers;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// `natter load TEST`: one subcommand a test, so each test's options and
/// help stay its own.
#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(subcommand)]
    test: Test,
}

#[derive(Subcommand, Debug)]
enum Test {
    /// Fan-out throughput and latency: publishers say, subscribers receive.
    ///
    /// S subscribers and P publishers are spread round-robin over K rooms
    /// (load-<run>-0 …). All connect and join first; then every publisher
    /// says R messages per second, paced to a fixed schedule, for a warm-up
    /// (W s) and the measured window (D s), pipelining its `say` requests.
    /// Each text carries the publisher, its sequence number and the send
    /// time, so every subscriber measures latency and checks, per
    /// publisher and by the room's seq, that nothing is lost, duplicated or
    /// reordered. Each publisher also times the `ok` to every say, from the
    /// moment the say was due on its schedule. Reports deliveries per
    /// second and their latency percentiles, says acknowledged per second
    /// and the ok round-trip percentiles, loss, and server CPU per delivery
    /// with --server-pid.
    Fanout(fanout::FanoutArgs),
    /// Connection capacity: open C connections, hold them, count refusals.
    ///
    /// Opens C connections as fast as the server accepts them with at most
    /// --in-flight handshakes at once, holds them all for H seconds, then
    /// closes them. Reports established / refused (503) / failed, connect
    /// rate and connect-time percentiles, and with --server-pid the
    /// server's resident memory before, with and after the connections
    /// (bytes per connection). Refusals are not a failure; other failures
    /// and connections dropped while held are.
    Conns(conns::ConnsArgs),
    /// Broadcast round trip while a room grows (websocket-shootout method).
    ///
    /// Adds clients to one room in steps. After each step it lets presence
    /// settle, then runs broadcasts, several at once: a member says a
    /// message and the round trip is the time until the LAST member
    /// received it. It stops when the 95th percentile exceeds the limit,
    /// when connections fail or are refused, or at --max-clients, and
    /// reports every step and the largest one that stayed under the limit.
    Ramp(ramp::RampArgs),
    /// Connect/join/say/disconnect cycles; checks every leave is announced.
    ///
    /// Runs cycles at a fixed rate (with bounded concurrency) for D
    /// seconds: connect with nick churn-<run>-<n>, join the room, say one
    /// message (awaiting the ok), disconnect (a close frame, or with
    /// --abrupt-every an abrupt TCP drop). An observer in the room checks
    /// that every cycle's join presence, message and leave presence
    /// arrived. With several URLs the observer takes the first and the
    /// cycles the URLs in turn after it.
    Churn(churn::ChurnArgs),
    /// Render a report saved with --json as one self-contained HTML page.
    ///
    /// The page (no script, no external file or font) shows the verdict,
    /// the command and machine, a summary table and, when the report has
    /// time series, charts of latency, deliveries against the offered
    /// rate, connections, the latency histogram and CPU over time. `-`
    /// reads stdin or writes stdout. Exits 0, or 2 when the input is not a
    /// natter load report or the page cannot be written.
    Report(html::ReportArgs),
    /// Compare two reports saved with --json: each figure as A, B and B/A.
    ///
    /// Both must be runs of the same test. Every number under `results`
    /// and `cpu` present in both is printed by its dotted path, with B/A
    /// and, where the direction is known, whether B is better or worse
    /// (latencies, CPU per delivery, memory and lost/duplicate/reordered
    /// counts lower; deliveries and connects per second higher; "same"
    /// within 2%). Notes when the commands or machines differ. Exits 0
    /// when it compared, 2 on a missing file, a file that is not a report,
    /// or runs of different tests.
    Compare(compare::CompareArgs),
}

/// Runs the chosen test; the exit code is its report's, so scripts can
/// tell a clean run (0) from misbehaviour (1) and tester errors (2).
pub async fn run(args: LoadArgs) -> ExitCode {
    match args.test {
        Test::Fanout(a) => fanout::run(a).await,
        Test::Conns(a) => conns::run(a).await,
        Test::Ramp(a) => ramp::run(a).await,
        Test::Churn(a) => churn::run(a).await,
        Test::Report(a) => html::run_report(a),
        Test::Compare(a) => compare::run(a),
    }
}
