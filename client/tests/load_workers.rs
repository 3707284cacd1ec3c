//! `natter load --workers N`, `conns --probe` and the per-second series,
//! checked end to end with the real `natter` binary.
//!
//! - A fake server (written here, speaking just enough of PROTOCOL.md for
//!   `fanout`) injects one loss, one duplicate and one reordering, each on
//!   a subscriber of a different worker: worker I binds 127.0.0.(I + 1)
//!   (`--source-ips 1`), so the server tells the workers apart by the
//!   peer address. The merged report must count each exactly and exit 1:
//!   loss is only visible by combining what the publisher's worker knows
//!   was acknowledged with what the subscriber's worker received.
//! - `conns --workers 3` against the real server in process: every
//!   connection made, every probe answered, the merged connect-time
//!   histogram holding every connection, the per-URL split summed.
//! - A small fanout's `series`: arrays as long as `t_s`, deliveries per
//!   second adding up to the deliveries.
//!
//! Every child is bounded by [`CHILD_LIMIT`] (killed past it) and gets a
//! `--deadline` below it, so a hang shows up as a report, not a kill.

mod common;

use common::fake::{FakeServer, Fault};

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use natter_server::Config;
use serde_json::Value;

/// Longest one `natter load` child may run before it is killed (workers
/// included: the parent kills them when it is killed or exits).
const CHILD_LIMIT: Duration = Duration::from_secs(90);

/// The tester's own hard deadline, below [`CHILD_LIMIT`].
const TESTER_DEADLINE_S: &str = "45";

// ---------------------------------------------------------------------------
// Running the tester
// ---------------------------------------------------------------------------

/// What one `natter load` run produced.
struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}; report: {}; stderr: {}",
            self.code, self.report, self.stderr
        )
    }
}

impl Run {
    fn n(&self, field: &str) -> u64 {
        self.report["results"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("results.{field} is not a count; {self}"))
    }
}

/// Runs `natter load ARGS --deadline … --quiet` and returns its exit code,
/// stdout and stderr, killing it past [`CHILD_LIMIT`].
fn natter_load(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
    command
        .arg("load")
        .args(args)
        .args(["--deadline", TESTER_DEADLINE_S, "--quiet"]);
    common::run_bounded(command, CHILD_LIMIT, &format!("natter load {args:?}"))
}

/// Runs `natter load ARGS --json` and parses the one report on stdout.
fn load_json(args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = natter_load(&all);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON report ({e}); exit {code}; stdout: {stdout}; stderr: {stderr}"
        )
    });
    let run = Run {
        code,
        report,
        stderr,
    };
    assert_eq!(run.report["exit_code"], run.code, "{run}");
    assert_eq!(run.report["stopped_by_deadline"], false, "{run}");
    run
}

// ---------------------------------------------------------------------------
// The fake server: one fault of each kind, each on another worker
// ---------------------------------------------------------------------------

/// Publishers and subscribers of the fake-server run: each worker gets one
/// publisher and two subscribers, so messages cross workers both ways.
const PUBS: u64 = 2;
const SUBS: u64 = 4;
const RATE: u64 = 20;
const DURATION: u64 = 1;

/// Where each fault goes: the subscriber (the `nth` from 0 of those from
/// `addr`), and the room seq from which it may strike. Every seq is well
/// inside the run's 40 messages, so no fault hits a publisher's last.
const PLAN: [(Fault, Ipv4Addr, usize, u64); 3] = [
    // A subscriber of worker 0 loses a message (of either worker's
    // publisher): only the publisher's worker knows it was acknowledged.
    (Fault::Drop, Ipv4Addr::new(127, 0, 0, 1), 0, 10),
    // A subscriber of worker 1 gets one twice.
    (Fault::Duplicate, Ipv4Addr::new(127, 0, 0, 2), 0, 14),
    // The other subscriber of worker 0 gets two of a publisher's swapped.
    (Fault::Swap, Ipv4Addr::new(127, 0, 0, 1), 1, 18),
];

/// The fake server doing the [`PLAN`]: each fault once, on the planned
/// subscriber, once every publisher has spoken, at most one at a time held.
fn fake_server() -> FakeServer {
    let mut done = HashSet::new();
    FakeServer::start("load_workers", move |r, target, seq| {
        if r.sayers.len() < PUBS as usize || r.holding() {
            return None;
        }
        let (at, fault) = PLAN
            .iter()
            .enumerate()
            .find(|(at, (_, addr, nth, from))| {
                !done.contains(at)
                    && seq >= *from
                    && r.members
                        .iter()
                        .filter(|m| m.peer == IpAddr::V4(*addr) && !r.sayers.contains(&m.conn))
                        .nth(*nth)
                        .is_some_and(|m| m.conn == target)
            })
            .map(|(at, (fault, ..))| (at, *fault))?;
        done.insert(at);
        Some(fault)
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Two workers against the fake server: one loss, one duplicate and one
/// reordering, each on a subscriber of a worker, each from publishers of
/// both workers. The merged report counts each exactly once (by publisher
/// sequence and by room seq), nothing else, and exits 1; every say was
/// made and acknowledged once over both workers.
#[test]
fn workers_merge_loss_duplicates_and_reordering_exactly() {
    let server = fake_server();
    let (subs, pubs, rate, duration) = (
        SUBS.to_string(),
        PUBS.to_string(),
        RATE.to_string(),
        DURATION.to_string(),
    );
    let run = load_json(&[
        "fanout",
        "--workers",
        "2",
        "--source-ips",
        "1",
        "--subs",
        &subs,
        "--pubs",
        &pubs,
        "--rate",
        &rate,
        "--duration",
        &duration,
        "--warmup",
        "0",
        "--drain",
        "2",
        "--url",
        &server.url,
    ]);
    assert_eq!(server.injected(), 3, "every planned fault struck; {run}");
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.report["outcome"], "misbehaviour", "{run}");
    assert_eq!(run.report["errors"], Value::Array(Vec::new()), "{run}");
    let said = PUBS * RATE * DURATION;
    assert_eq!(run.n("sent"), said, "{run}");
    assert_eq!(run.n("replies_ok"), said, "{run}");
    assert_eq!(run.n("expected_deliveries"), said * SUBS, "{run}");
    // One delivery short: the lost one (the duplicate is not a delivery).
    assert_eq!(run.n("deliveries"), said * SUBS - 1, "{run}");
    for (field, want) in [
        ("lost", 1),
        ("duplicates", 1),
        ("reordered", 1),
        ("seq_gaps", 1),
        ("seq_duplicates", 1),
        ("seq_reordered", 1),
        ("undelivered_at_end", 0),
        ("foreign_messages", 0),
    ] {
        assert_eq!(run.n(field), want, "results.{field}; {run}");
    }
    // Both workers' connections are in the one report.
    assert_eq!(
        run.report["results"]["connections"]["connected"],
        SUBS + PUBS,
        "{run}"
    );
    assert_eq!(
        run.report["results"]["latency"]["count"],
        said * SUBS - 1,
        "{run}"
    );
}

/// `conns --workers 3` over two URLs of the real server: all 300
/// connected and held at once, all 30 probes answered, the merged
/// connect-time histogram holding all 300, and the per-URL counts the
/// round-robin split summed over the workers.
#[test]
fn conns_workers_connect_probe_and_merge() {
    let server = common::start_server_with(Config {
        rate: 0,
        ..Config::local()
    });
    let first = server.handle.url();
    let second = format!("{first}?x=1");
    let run = load_json(&[
        "conns",
        "--workers",
        "3",
        "--count",
        "300",
        "--probe",
        "30",
        "--hold",
        "0.5",
        "--url",
        &first,
        "--url",
        &second,
    ]);
    server.stop();
    assert_eq!(run.code, 0, "{run}");
    let r = &run.report["results"];
    assert_eq!(r["connections"]["connected"], 300, "{run}");
    assert_eq!(r["connections"]["connect_time"]["count"], 300, "{run}");
    assert_eq!(r["open_after_hold"], 300, "{run}");
    assert_eq!(run.n("probed"), 30, "{run}");
    assert_eq!(run.n("answered"), 30, "{run}");
    assert_eq!(r["probe_round_trip"]["count"], 30, "{run}");
    let urls = run.report["urls"].as_array().expect("urls");
    let counts: Vec<u64> = urls
        .iter()
        .map(|u| u["connections"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(counts, [150, 150], "{run}");
    // The series counts every worker's connections.
    let series = &run.report["series"];
    let held = series["connections"]
        .as_array()
        .expect("connections series");
    assert!(held.iter().any(|c| c == 300), "{run}");
    assert!(series.get("latency_p50_ms").is_none(), "{run}");
}

/// A small fanout against the real server: `series` is well-formed (every
/// array as long as `t_s`, which rises to the end of the run), deliveries
/// per second times each interval add up to the deliveries, the offered
/// rate to the expected deliveries, and the latency histogram holds every
/// measured delivery. The report also names its command and machine.
#[test]
fn fanout_series_are_well_formed() {
    let server = common::start_server_with(Config {
        rate: 0,
        ..Config::local()
    });
    let url = server.handle.url();
    let run = load_json(&[
        "fanout",
        "--subs",
        "5",
        "--pubs",
        "2",
        "--rate",
        "20",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--drain",
        "10",
        &url,
    ]);
    server.stop();
    assert_eq!(run.code, 0, "{run}");
    let s = &run.report["series"];
    assert_eq!(s["interval_s"], 1.0, "{run}");
    let t: Vec<f64> = s["t_s"]
        .as_array()
        .expect("t_s")
        .iter()
        .map(|v| v.as_f64().expect("t_s numbers"))
        .collect();
    assert!(t.len() >= 2, "{run}");
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{run}");
    for name in [
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "deliveries_per_s",
        "offered_per_s",
        "connections",
        "tester_cpu_cores",
    ] {
        let len = s[name].as_array().map(Vec::len);
        assert_eq!(len, Some(t.len()), "series.{name}; {run}");
    }
    // No --server-pid: no server CPU series.
    assert!(s.get("server_cpu_cores").is_none(), "{run}");
    let lengths: Vec<f64> = t
        .iter()
        .scan(0.0, |prev, &x| {
            let len = x - *prev;
            *prev = x;
            Some(len)
        })
        .collect();
    let total = |name: &str| -> f64 {
        s[name]
            .as_array()
            .expect("array")
            .iter()
            .zip(&lengths)
            .map(|(v, len)| v.as_f64().unwrap_or(0.0) * len)
            .sum()
    };
    // No warm-up: every first delivery is a measured one.
    let deliveries = run.n("deliveries") as f64;
    assert!(
        (total("deliveries_per_s") - deliveries).abs() < 0.5,
        "{run}"
    );
    let expected = run.n("expected_deliveries") as f64;
    assert!((total("offered_per_s") - expected).abs() < 0.5, "{run}");
    let buckets = s["latency_histogram"].as_array().expect("histogram");
    let counted: u64 = buckets
        .iter()
        .map(|b| b["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, run.n("deliveries"), "{run}");
    assert!(
        run.report["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("natter load fanout --subs 5")),
        "{run}"
    );
    assert!(run.report["machine"]["cpus"].as_u64() >= Some(1), "{run}");
}

/// ramp and churn refuse --workers with a usage error (exit 2) that says
/// why, before connecting anywhere.
#[test]
fn ramp_and_churn_refuse_workers() {
    for test in ["ramp", "churn"] {
        let (code, _, stderr) = natter_load(&[test, "--workers", "2", "ws://127.0.0.1:9/ws"]);
        assert_eq!(code, 2, "{test}: {stderr}");
        assert!(
            stderr.contains("does not support --workers"),
            "{test}: {stderr}"
        );
    }
}
