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

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{Either, select};
use natter_protocol::{
    ChatMessage, ErrorCode, JoinOk, Limits, OkReply, PROTOCOL_VERSION, Reply, Request,
    ServerMessage, Welcome, decode_request, encode_error,
};
use natter_runtime::{TcpListener, TcpStream};
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

/// What the fake server does to one subscriber's stream, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// One message never reaches it.
    Drop,
    /// One message reaches it twice.
    Duplicate,
    /// One message reaches it after the same publisher's next one.
    Swap,
}

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

struct Member {
    conn: u64,
    peer: IpAddr,
    out: UnboundedSender<String>,
}

struct Held {
    target: u64,
    from: u64,
    seq: u64,
    frame: String,
}

#[derive(Default)]
struct Room {
    seq: u64,
    members: Vec<Member>,
    sayers: HashSet<u64>,
    held: Option<Held>,
    /// Faults done (indices into [`PLAN`]).
    done: HashSet<usize>,
}

#[derive(Default)]
struct State {
    rooms: Mutex<HashMap<String, Room>>,
}

struct FakeServer {
    url: String,
    state: Arc<State>,
    _stop: futures::channel::oneshot::Sender<()>,
}

impl FakeServer {
    fn start() -> FakeServer {
        let listener = natter_runtime::bind("127.0.0.1:0", 128).expect("fake server binds");
        let addr = listener.local_addr().expect("listener has an address");
        let state = Arc::new(State::default());
        let (stop, stopped) = futures::channel::oneshot::channel();
        natter_runtime::spawn(accept_loop(listener, state.clone(), stopped));
        FakeServer {
            url: format!("ws://{addr}/ws"),
            state,
            _stop: stop,
        }
    }

    /// How many of the planned faults were injected.
    fn injected(&self) -> usize {
        let rooms = self.state.rooms.lock().unwrap();
        rooms.values().map(|r| r.done.len()).sum()
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut stopped: futures::channel::oneshot::Receiver<()>,
) {
    let mut next_conn = 0u64;
    loop {
        let accept = pin!(listener.accept());
        match select(accept, &mut stopped).await {
            Either::Left((Ok((stream, peer)), _)) => {
                next_conn += 1;
                natter_runtime::spawn(serve(stream, peer.ip(), next_conn, state.clone()));
            }
            Either::Left((Err(_), _)) | Either::Right(_) => return,
        }
    }
}

async fn serve(stream: TcpStream, peer: IpAddr, conn: u64, state: Arc<State>) {
    let Ok(ws) = async_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut frames) = ws.split();
    let (out, mut queued) = unbounded::<String>();
    let nick = format!("guest-{conn}");
    let welcome = ServerMessage::Welcome(Welcome {
        nick: nick.clone(),
        protocol: PROTOCOL_VERSION,
        server: "natter-fake (load_workers test)".into(),
        limits: Limits {
            rate_per_sec: 0,
            ..Limits::default()
        },
        nick_error: None,
    });
    let _ = out.unbounded_send(welcome.to_json());
    loop {
        match select(frames.next(), queued.next()).await {
            Either::Left((Some(Ok(Message::Text(text))), _)) => {
                let reply = handle(&state, conn, peer, &nick, &out, &text);
                let _ = out.unbounded_send(reply);
            }
            Either::Left((Some(Ok(_)), _)) => {}
            Either::Left((None | Some(Err(_)), _)) => break,
            Either::Right((Some(frame), _)) => {
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            Either::Right((None, _)) => break,
        }
    }
    let mut rooms = state.rooms.lock().unwrap();
    for room in rooms.values_mut() {
        room.members.retain(|m| m.conn != conn);
    }
}

fn handle(
    state: &State,
    conn: u64,
    peer: IpAddr,
    nick: &str,
    out: &UnboundedSender<String>,
    text: &str,
) -> String {
    let envelope = match decode_request(text) {
        Ok(envelope) => envelope,
        Err(e) => return encode_error(e.id.as_ref(), e.code, &e.message),
    };
    let id = envelope.id;
    let reply = match envelope.request {
        Request::Join { room, .. } => {
            let mut rooms = state.rooms.lock().unwrap();
            let r = rooms.entry(room.clone()).or_default();
            if !r.members.iter().any(|m| m.conn == conn) {
                r.members.push(Member {
                    conn,
                    peer,
                    out: out.clone(),
                });
            }
            Reply::Join(JoinOk {
                room,
                members: Vec::new(),
                seq: r.seq,
                epoch: "fake".into(),
                history: Vec::new(),
                complete: r.seq == 0,
            })
        }
        Request::Say { room, text } => {
            let mut rooms = state.rooms.lock().unwrap();
            let Some(r) = rooms.get_mut(&room) else {
                return encode_error(id.as_ref(), ErrorCode::NotMember, "not in that room");
            };
            let seq = say(r, conn, nick, &room, text);
            Reply::Say { room, seq }
        }
        _ => {
            return encode_error(
                id.as_ref(),
                ErrorCode::BadRequest,
                "the fake server knows only join and say",
            );
        }
    };
    ServerMessage::Ok(OkReply { id, reply }).to_json()
}

/// The fault planned for connection `conn` at room seq `seq`, if any (and
/// not yet done): its subscriber is the `nth` non-publisher from its
/// address, once every publisher has spoken.
fn fault_for(r: &Room, conn: u64, seq: u64) -> Option<(usize, Fault)> {
    if r.sayers.len() < PUBS as usize || r.held.is_some() {
        return None;
    }
    PLAN.iter()
        .enumerate()
        .find(|(at, (_, addr, nth, from))| {
            !r.done.contains(at)
                && seq >= *from
                && r.members
                    .iter()
                    .filter(|m| m.peer == IpAddr::V4(*addr) && !r.sayers.contains(&m.conn))
                    .nth(*nth)
                    .is_some_and(|m| m.conn == conn)
        })
        .map(|(at, (fault, ..))| (at, *fault))
}

/// Numbers a message and sends it to every member, doing at most one
/// planned fault per message.
fn say(r: &mut Room, conn: u64, nick: &str, room: &str, text: String) -> u64 {
    r.seq += 1;
    let seq = r.seq;
    r.sayers.insert(conn);
    let frame = ServerMessage::Message(ChatMessage {
        room: room.to_owned(),
        seq,
        from: nick.to_owned(),
        text,
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
    .to_json();
    let mut faulted = false;
    let conns: Vec<u64> = r.members.iter().map(|m| m.conn).collect();
    for target in conns {
        let fault = if faulted {
            None
        } else {
            fault_for(r, target, seq)
        };
        let Some(m) = r.members.iter().find(|m| m.conn == target) else {
            continue;
        };
        let out = m.out.clone();
        if let Some((at, fault)) = fault {
            faulted = true;
            r.done.insert(at);
            match fault {
                Fault::Drop => {}
                Fault::Duplicate => {
                    let _ = out.unbounded_send(frame.clone());
                    let _ = out.unbounded_send(frame.clone());
                }
                Fault::Swap => {
                    r.held = Some(Held {
                        target,
                        from: conn,
                        seq,
                        frame: frame.clone(),
                    });
                }
            }
            continue;
        }
        let _ = out.unbounded_send(frame.clone());
        let release = r
            .held
            .as_ref()
            .is_some_and(|h| h.target == target && h.from == conn && h.seq != seq);
        if release && let Some(h) = r.held.take() {
            let _ = out.unbounded_send(h.frame);
        }
    }
    seq
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
    let server = FakeServer::start();
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
