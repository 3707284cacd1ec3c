//! The load tester's own accounting, checked end to end.
//!
//! `natter load fanout` is only worth running if its loss, duplicate and
//! reorder counters are right: a tester that misses a dropped message
//! vouches for a broken server, and one that miscounts accuses a correct
//! one. So these tests run the real `natter` binary against:
//!
//! - a deliberately misbehaving WebSocket server (`common/fake.rs`,
//!   [`FakeServer`]), which speaks just enough of PROTOCOL.md for
//!   `fanout` and then, once, drops, duplicates or swaps a room message on
//!   its way to one subscriber. Each test checks that the tester exits 1
//!   and that the matching counter in its `--json` report is exactly what
//!   the server injected, and that the other counters stay at zero. A
//!   control run against the same server with no fault must come out
//!   clean, which shows the fake server itself is correct: when a fault
//!   test fails, the tester's detection is what broke.
//! - the real server, in process, for a small bounded fanout that must be
//!   clean with every expected delivery made, and for one spread over two
//!   URLs of that server, whose per-URL connection counts must be the
//!   round-robin split.
//!
//! The `natter` child is bounded by [`CHILD_LIMIT`] (killed past it), and
//! each run passes the tester a `--deadline` below that, so a hang shows up
//! as a report rather than a kill.

mod common;

use common::fake::{self, FakeServer};

use std::process::Command;
use std::time::Duration;

use natter_server::Config;
use serde_json::{Value, json};

/// Longest one `natter load fanout` child may run before it is killed.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// The tester's own hard deadline, passed as `--deadline` (below
/// [`CHILD_LIMIT`], so the tester reports before the test kills it).
const TESTER_DEADLINE_S: &str = "30";

/// Subscribers and publishers of the runs against the fake server.
const SUBS: u64 = 3;
const PUBS: u64 = 2;
/// Messages per second per publisher, and the measured window in seconds:
/// each publisher says exactly `RATE * DURATION` messages (its schedule is
/// fixed; see `publish` in fanout.rs), all of them measured with no warm-up.
const RATE: u64 = 20;
const DURATION: u64 = 1;

/// The room seq from which the fake server may inject its fault. Every
/// publisher has spoken by then (they are staggered by 25 ms and say
/// every 50 ms) and each still has most of its 20 messages to send, so the
/// faulty message is never a publisher's last one (a dropped last message
/// would be "undelivered at end", not a gap).
const FAULT_FROM_SEQ: u64 = 10;

// ---------------------------------------------------------------------------
// The misbehaving server
// ---------------------------------------------------------------------------

/// What the fake server does wrong, once, on one subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: a correct server (the control).
    None,
    /// One message never reaches the subscriber.
    Drop,
    /// The room's last message never reaches the subscriber: no later
    /// message exposes the hole, only the drain ending without it.
    DropLast,
    /// The room's last but one message never reaches the subscriber:
    /// usually its publisher's last, a hole only the room's seq exposes.
    DropSecondLast,
    /// One message reaches the subscriber twice in a row.
    Duplicate,
    /// One message reaches the subscriber after the same publisher's next
    /// one (two consecutive messages of one publisher, swapped).
    Swap,
}

/// The fake server doing `fault` (once) on the first subscriber's copy of
/// a message, once all `publishers` have spoken (see [`FAULT_FROM_SEQ`]).
fn fake_server(fault: Fault, publishers: usize) -> FakeServer {
    let last = PUBS * RATE * DURATION;
    let mut done = false;
    FakeServer::start("load_accounting", move |room, target, seq| {
        let (kind, at) = match fault {
            Fault::None => return None,
            Fault::Drop => (fake::Fault::Drop, seq >= FAULT_FROM_SEQ),
            Fault::DropLast => (fake::Fault::Drop, seq == last),
            Fault::DropSecondLast => (fake::Fault::Drop, seq == last - 1),
            Fault::Duplicate => (fake::Fault::Duplicate, seq >= FAULT_FROM_SEQ),
            Fault::Swap => (fake::Fault::Swap, seq >= FAULT_FROM_SEQ),
        };
        if done || !at || room.sayers.len() < publishers {
            return None;
        }
        // The first member that never said anything: a subscriber.
        let first = room
            .members
            .iter()
            .map(|m| m.conn)
            .find(|c| !room.sayers.contains(c));
        done = first == Some(target);
        done.then_some(kind)
    })
}

// ---------------------------------------------------------------------------
// Running the tester
// ---------------------------------------------------------------------------

/// What one `natter load fanout` run produced.
struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

impl Run {
    /// A counter of the report's `results`.
    fn n(&self, field: &str) -> u64 {
        self.report["results"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("results.{field} is not a count: {}", self.report))
    }

    /// Asserts the named counters; every other loss/dup/reorder counter
    /// (by publisher sequence and by room seq) must be zero.
    fn assert_counters(&self, expected: &[(&str, u64)]) {
        const ALL: [&str; 8] = [
            "lost",
            "duplicates",
            "reordered",
            "seq_gaps",
            "seq_duplicates",
            "seq_reordered",
            "undelivered_at_end",
            "foreign_messages",
        ];
        for field in ALL {
            let want = expected
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(0, |(_, n)| *n);
            assert_eq!(self.n(field), want, "results.{field}; {self}");
        }
    }
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

/// Runs `natter load fanout ARGS --json --quiet TARGET`, killing it past
/// [`CHILD_LIMIT`], and parses the report on stdout. `target` says where
/// to connect: a URL, or `--url` options.
fn fanout(target: &[&str], args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
    command
        .args(["load", "fanout"])
        .args(args)
        .args(["--deadline", TESTER_DEADLINE_S, "--json", "--quiet"])
        .args(target);
    let (code, stdout, stderr) = common::run_bounded(command, CHILD_LIMIT, "natter load fanout");
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
    assert_eq!(run.report["test"], "fanout", "{run}");
    assert_eq!(
        run.report["exit_code"], run.code,
        "report and exit code agree; {run}"
    );
    assert_eq!(run.report["stopped_by_deadline"], false, "{run}");
    run
}

/// Runs the fanout the fault tests use against a fake server: 3
/// subscribers, 2 publishers at 20 msg/s for 1 s, no warm-up. The drain
/// of 2 s only matters with a lost message (the tester waits for it until
/// the drain ends); otherwise the drain ends as soon as all arrived.
fn fanout_against(fault: Fault) -> (FakeServer, Run) {
    let server = fake_server(fault, PUBS as usize);
    let (subs, pubs, rate, duration) = (
        SUBS.to_string(),
        PUBS.to_string(),
        RATE.to_string(),
        DURATION.to_string(),
    );
    let run = fanout(
        &[&server.url],
        &[
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
        ],
    );
    // Every message was said, acknowledged and measured (no warm-up).
    let said = PUBS * RATE * DURATION;
    assert_eq!(run.n("sent_total"), said, "{run}");
    assert_eq!(run.n("sent"), said, "{run}");
    assert_eq!(run.n("replies_ok"), said, "{run}");
    assert_eq!(run.n("missing_replies"), 0, "{run}");
    assert_eq!(run.n("expected_deliveries"), said * SUBS, "{run}");
    assert_ok_round_trip(&run, said, DURATION);
    (server, run)
}

/// Asserts the says/s and ok round trip of a run in which `said` says of
/// the measured window (of `secs` seconds) were all acknowledged: one
/// round trip per ok, percentiles in order, none negative or absurd.
fn assert_ok_round_trip(run: &Run, said: u64, secs: u64) {
    assert_eq!(run.n("says_acked"), said, "{run}");
    let per_s = run.report["results"]["says_per_s"].as_f64();
    assert_eq!(per_s, Some(said as f64 / secs as f64), "{run}");
    let ok = &run.report["results"]["ok_latency"];
    assert_eq!(ok["count"].as_u64(), Some(said), "ok_latency.count; {run}");
    let ms = |field: &str| {
        ok[field]
            .as_f64()
            .unwrap_or_else(|| panic!("ok_latency.{field} is not a number; {run}"))
    };
    let (min, p50, p99, max) = (ms("min_ms"), ms("p50_ms"), ms("p99_ms"), ms("max_ms"));
    assert!(
        0.0 <= min && min <= p50 && p50 <= p99 && p99 <= max,
        "{run}"
    );
    // Far below the tester's deadline: a round trip on loopback.
    assert!(max < 10_000.0, "ok_latency.max_ms; {run}");
}

/// Asserts the tester judged the run as misbehaviour (exit 1) and listed
/// problems, not tester-side errors.
fn assert_misbehaviour(run: &Run) {
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.report["outcome"], "misbehaviour", "{run}");
    let problems = run.report["problems"].as_array().expect("problems list");
    assert!(!problems.is_empty(), "{run}");
    assert_eq!(run.report["errors"], Value::Array(Vec::new()), "{run}");
}

/// Runs the fanout against a fake server injecting `fault` once and checks
/// the tester reported exactly that: exit 1, the `counters` it must move
/// (all others zero), and `missing` deliveries short of the expected.
fn assert_fault_reported(fault: Fault, counters: &[(&str, u64)], missing: u64) {
    let (server, run) = fanout_against(fault);
    assert_eq!(server.injected(), 1, "the fault was injected; {run}");
    assert_misbehaviour(&run);
    run.assert_counters(counters);
    assert_eq!(
        run.n("deliveries") + missing,
        run.n("expected_deliveries"),
        "{run}"
    );
}

// ---------------------------------------------------------------------------
// Tests against the fake server
// ---------------------------------------------------------------------------

/// The control: the fake server with no fault is a correct server, so the
/// tester must find nothing. Without it, a fault test that passes could be
/// passing on a fake server that is broken in some other way.
#[test]
fn fake_server_without_fault_is_clean() {
    let (server, run) = fanout_against(Fault::None);
    assert_eq!(server.injected(), 0);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.report["outcome"], "clean", "{run}");
    run.assert_counters(&[]);
    assert_eq!(run.n("deliveries"), run.n("expected_deliveries"), "{run}");
}

/// One message dropped on its way to one subscriber: a gap in both its
/// publisher's sequence and the room's seq, counted once each (later
/// messages of that publisher arrive, so it is a hole, not a late tail),
/// and one delivery short of the expected.
#[test]
fn dropped_message_counts_as_lost() {
    assert_fault_reported(Fault::Drop, &[("lost", 1), ("seq_gaps", 1)], 1);
}

/// The room's last message dropped for one subscriber. Nothing after it
/// shows a gap, so the tester can only see it missing when the drain ends:
/// since every say was answered, the server was not behind, and the
/// missing delivery is a problem (exit 1), not a late one.
#[test]
fn dropped_last_message_is_a_problem() {
    assert_fault_reported(Fault::DropLast, &[("undelivered_at_end", 1)], 1);
}

/// The room's last but one message dropped for one subscriber. When it is
/// its publisher's last message (the usual case), that publisher's own
/// sequence shows no hole, only a tail that never came; the room's seq
/// does show the hole, since the room's last message arrived after it.
/// Either way it must count as lost, not as late.
#[test]
fn dropped_second_last_message_counts_as_lost() {
    assert_fault_reported(Fault::DropSecondLast, &[("lost", 1), ("seq_gaps", 1)], 1);
}

/// One message sent twice to one subscriber: one duplicate by publisher
/// sequence and one by room seq, and the second copy is not counted as a
/// delivery.
#[test]
fn repeated_message_counts_as_duplicate() {
    assert_fault_reported(
        Fault::Duplicate,
        &[("duplicates", 1), ("seq_duplicates", 1)],
        0,
    );
}

/// Two consecutive messages of one publisher swapped for one subscriber:
/// the first arrives after the second, which the tester must count as one
/// reordering (by publisher sequence and by room seq) and not as a loss,
/// since it did arrive.
///
/// The fake server swaps two messages of the *same* publisher on purpose:
/// two adjacent room messages are usually from different publishers, and
/// swapping those leaves every publisher's own order intact, so only
/// `seq_reordered` would see it.
#[test]
fn swapped_messages_count_as_reordered() {
    assert_fault_reported(Fault::Swap, &[("reordered", 1), ("seq_reordered", 1)], 0);
}

// ---------------------------------------------------------------------------
// Against the real server
// ---------------------------------------------------------------------------

/// The real server in process, rate limit off as load tests expect.
fn start_real_server() -> common::Running {
    common::start_server_with(Config {
        rate: 0,
        ..Config::local()
    })
}

/// The small fanout of the real-server tests: `subs` subscribers and
/// `pubs` publishers at [`RATE`] for [`DURATION`], no warm-up, a drain
/// long enough for a loaded machine (it ends once everything arrived).
fn small_fanout(target: &[&str], subs: u64, pubs: u64) -> Run {
    fanout(
        target,
        &[
            "--subs",
            &subs.to_string(),
            "--pubs",
            &pubs.to_string(),
            "--rate",
            &RATE.to_string(),
            "--duration",
            &DURATION.to_string(),
            "--warmup",
            "0",
            "--drain",
            "10",
        ],
    )
}

/// Asserts a small fanout of `subs` and `pubs` came out clean: nothing
/// lost, duplicated or reordered, every say acknowledged and every
/// expected delivery made over `subs + pubs` connections.
fn assert_clean_fanout(run: &Run, subs: u64, pubs: u64) {
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.report["outcome"], "clean", "{run}");
    assert_eq!(run.report["problems"], Value::Array(Vec::new()), "{run}");
    run.assert_counters(&[]);
    let said = pubs * RATE * DURATION;
    assert_eq!(run.n("sent"), said, "{run}");
    assert_eq!(run.n("replies_ok"), said, "{run}");
    assert_eq!(run.n("expected_deliveries"), said * subs, "{run}");
    assert_eq!(run.n("deliveries"), said * subs, "{run}");
    assert_ok_round_trip(run, said, DURATION);
    assert_eq!(
        run.report["results"]["connections"]["connected"],
        subs + pubs,
        "{run}"
    );
}

/// A small bounded fanout against the real server (in process, rate limit
/// off as load tests expect): clean, nothing lost, duplicated or
/// reordered, and every expected delivery made.
#[test]
fn small_fanout_against_the_real_server_is_clean() {
    let server = start_real_server();
    let url = server.handle.url();
    let (subs, pubs) = (5, 2);
    let run = small_fanout(&[&url], subs, pubs);
    server.stop();

    assert_clean_fanout(&run, subs, pubs);
    // One URL: it took every connection.
    assert_eq!(run.report["url"], url, "{run}");
    let all = json!([{"url": url, "connections": subs + pubs, "attempted": subs + pubs}]);
    assert_eq!(run.report["urls"], all, "{run}");
}

/// The same fanout given two `--url`s: two spellings of the one in-process
/// server (the second with a query parameter the server ignores), standing
/// in for two nodes of a cluster. Subscribers and publishers each take the
/// URLs in turn, so of 5 subscribers 3 go to the first URL and 2 to the
/// second, and of 2 publishers one to each: the report's per-URL counts
/// must be exactly 4 and 3, and the run clean by every check.
#[test]
fn fanout_over_two_urls_splits_connections_round_robin() {
    let server = start_real_server();
    let first = server.handle.url();
    let second = format!("{first}?x=1");
    let (subs, pubs) = (5, 2);
    let run = small_fanout(&["--url", &first, "--url", &second], subs, pubs);
    server.stop();

    assert_clean_fanout(&run, subs, pubs);
    let split = json!([
        {"url": first, "connections": 3 + 1, "attempted": 3 + 1},
        {"url": second, "connections": 2 + 1, "attempted": 2 + 1},
    ]);
    assert_eq!(run.report["urls"], split, "{run}");
    // `url` stays one string: the first URL.
    assert_eq!(run.report["url"], first, "{run}");
}
