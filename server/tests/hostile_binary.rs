//! The real `natter-server` binary under two loads that need a process of
//! its own (its defaults, such as one executor thread, differ from the
//! in-process servers of the other tests). The burst of joins, on one and
//! on two executor threads, is in `threads.rs`.
//! - connection churn: thousands of connect / join / disconnect cycles must
//!   leave no registry entry (checked through the protocol: `rooms`, `who`),
//!   no socket (/proc/PID/fd) and no memory growth proportional to the
//!   cycles (/proc/PID/status VmRSS);
//! - running out of file descriptors (`ulimit -n 64`): `accept` fails and is
//!   logged, connections already open keep working, and once descriptors
//!   are free again new clients get in.
//!
//! In both, a witness pair (a speaker and a listener in one room) chats the
//! whole time and must receive every message, in order, gap-free.
//! `NATTER_HOSTILE_SCALE` (default 1) multiplies the cycle counts.

// `x % n == 0` rather than `is_multiple_of` (Rust 1.87): the workspace
// declares rust-version 1.85.
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use futures::channel::{mpsc as mpsc_async, oneshot};
use futures::future::{Either, select};
use natter_runtime::{JoinHandle, spawn, timeout};
use serde_json::{Value, json};

use common::wait::wait_until;
use common::{BOUND, MAX_FRAMES, ServerProcess, Ws};

/// How long the witness may take to reach a message count it is waited
/// for: it says one every 10 ms or so; 30 s covers a loaded 2-core machine.
const WITNESS_WAIT: Duration = Duration::from_secs(30);

fn scale() -> usize {
    match std::env::var("NATTER_HOSTILE_SCALE") {
        Err(_) => 1,
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("NATTER_HOSTILE_SCALE must be a positive integer, got {s:?}"),
        },
    }
}

// ---------------------------------------------------------------------------
// The witness pair
// ---------------------------------------------------------------------------

/// What the listener's task hands back: its connection, the speaker's
/// messages as (seq, text), and every other event of the room.
type Heard = (Ws, Vec<(u64, String)>, Vec<Value>);

/// A speaker and a listener in `room`, chatting in spawned tasks; `finish`
/// asserts both got every message of the speaker, in order, with no gap in
/// the room's seq.
struct Witness {
    stop: Arc<AtomicBool>,
    /// The speaker's running count of acknowledged messages.
    progress: mpsc_async::UnboundedReceiver<usize>,
    said: usize,
    speaker: JoinHandle<(Ws, Vec<(u64, String)>)>,
    listener: JoinHandle<Heard>,
}

/// Checks one event of the room: seq gap-free; returns the speaker's
/// messages in `own` and the rest in `others`.
fn track(
    who: &str,
    v: Value,
    room: &str,
    speaker: &str,
    last: &mut u64,
    own: &mut Vec<(u64, String)>,
    others: &mut Vec<Value>,
) {
    match v["type"].as_str() {
        Some("message") => {
            assert_eq!(v["room"], room, "{who}: {v}");
            let seq = v["seq"].as_u64().unwrap();
            assert_eq!(seq, *last + 1, "{who}: seq skipped or repeated: {v}");
            *last = seq;
            if v["from"] == speaker {
                let text = v["text"].as_str().unwrap().to_owned();
                assert_eq!(
                    text,
                    format!("{speaker} #{}", own.len()),
                    "{who}: out of order"
                );
                own.push((seq, text));
            } else {
                others.push(v);
            }
        }
        Some("presence") => others.push(v),
        _ => panic!("{who}: unexpected frame {v}"),
    }
}

impl Witness {
    async fn start(url: &str, room: &'static str) -> Witness {
        let (mut listener, welcome) = Ws::connect(&format!("{url}?nick=wit-l"), None, BOUND)
            .await
            .unwrap();
        assert_eq!(welcome["nick"], "wit-l", "{welcome}");
        let l_from = listener
            .ok(json!({"type": "join", "room": room, "id": 0}))
            .await["seq"]
            .as_u64()
            .unwrap();
        let (mut speaker, welcome) = Ws::connect(&format!("{url}?nick=wit-s"), None, BOUND)
            .await
            .unwrap();
        assert_eq!(welcome["nick"], "wit-s", "{welcome}");
        let s_from = speaker
            .ok(json!({"type": "join", "room": room, "id": 0}))
            .await["seq"]
            .as_u64()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (progress_tx, progress) = mpsc_async::unbounded();
        let (total_tx, total_rx) = oneshot::channel::<usize>();
        let speaker = {
            let stop = stop.clone();
            spawn(async move {
                let (mut last, mut own, mut others) = (s_from, Vec::new(), Vec::new());
                let mut acked = Vec::new();
                let mut stopped_at = None;
                let started = Instant::now();
                for i in 1..=100_000usize {
                    if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
                        stopped_at = Some(i);
                    }
                    // At least 20 messages, and 3 more once told to stop.
                    if i > 20 && stopped_at.is_some_and(|s| i >= s + 3) {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(300),
                        "witness never stopped"
                    );
                    let text = format!("wit-s #{}", i - 1);
                    speaker
                        .send(&json!({"type": "say", "room": room, "text": text, "id": i}))
                        .await;
                    let reply = loop {
                        let v = speaker.next().await;
                        if v["type"] == "ok" || v["type"] == "error" {
                            break v;
                        }
                        track("wit-s", v, room, "wit-s", &mut last, &mut own, &mut others);
                    };
                    assert_eq!(
                        (&reply["type"], &reply["id"]),
                        (&json!("ok"), &json!(i)),
                        "{reply}"
                    );
                    acked.push((reply["seq"].as_u64().unwrap(), text));
                    let _ = progress_tx.unbounded_send(acked.len());
                    // Pace (10 ms), reading meanwhile.
                    let until = Instant::now() + Duration::from_millis(10);
                    while let Some(v) = speaker
                        .next_within(until.saturating_duration_since(Instant::now()))
                        .await
                    {
                        track("wit-s", v, room, "wit-s", &mut last, &mut own, &mut others);
                    }
                }
                let _ = total_tx.send(acked.len());
                for _ in 0..MAX_FRAMES {
                    if own.len() >= acked.len() {
                        break;
                    }
                    let v = speaker.next().await;
                    track("wit-s", v, room, "wit-s", &mut last, &mut own, &mut others);
                }
                assert_eq!(own, acked, "wit-s: echoes do not match acknowledgements");
                (speaker, acked)
            })
        };
        let listener = spawn(async move {
            let (mut last, mut own, mut others) = (l_from, Vec::new(), Vec::new());
            let mut total_rx = total_rx;
            let mut expected: Option<usize> = None;
            for _ in 0..10 * MAX_FRAMES {
                if expected.is_some_and(|n| own.len() >= n) {
                    return (listener, own, others);
                }
                // A frame (each read bounded; the speaker says something
                // every few ms), or the news that the speaker has finished.
                let v = if expected.is_none() {
                    match select(pin!(listener.next()), &mut total_rx).await {
                        Either::Left((v, _)) => v,
                        Either::Right((n, _)) => {
                            expected = Some(n.expect("the witness speaker ended without a total"));
                            continue;
                        }
                    }
                } else {
                    listener.next().await
                };
                track("wit-l", v, room, "wit-s", &mut last, &mut own, &mut others);
            }
            panic!("wit-l: too many frames")
        });
        Witness {
            stop,
            progress,
            said: 0,
            speaker,
            listener,
        }
    }

    /// Messages said as of the last [`Witness::wait_said`].
    fn said(&self) -> usize {
        self.said
    }

    /// Waits (bounded, [`WITNESS_WAIT`]) until the speaker has said `n`
    /// messages in all; each check awaits the speaker's next report.
    async fn wait_said(&mut self, n: usize) {
        let (progress, said) = (&mut self.progress, &mut self.said);
        wait_until(
            &format!("the witness to say {n} messages"),
            WITNESS_WAIT,
            async move || {
                if *said >= n {
                    return Ok(());
                }
                match progress.next().await {
                    Some(now) => *said = now,
                    None => panic!("the witness stopped after {said} messages, before {n}"),
                }
                // Catch up on reports already queued.
                while let Ok(now) = progress.try_recv() {
                    *said = now;
                }
                if *said >= n {
                    Ok(())
                } else {
                    Err(format!("{said} said"))
                }
            },
        )
        .await
    }

    /// Stops the pair and checks it; returns the connections, how many
    /// messages were said, and everything else the listener saw.
    async fn finish(self) -> (Ws, Ws, usize, Vec<Value>) {
        self.stop.store(true, Ordering::SeqCst);
        let (speaker, acked) = timeout(Duration::from_secs(60), self.speaker)
            .await
            .expect("witness speaker finishes");
        let (listener, own, others) = timeout(Duration::from_secs(60), self.listener)
            .await
            .expect("witness listener finishes");
        assert_eq!(
            own, acked,
            "wit-l did not get the speaker's messages as acknowledged"
        );
        (speaker, listener, acked.len(), others)
    }
}

// ---------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------

const CHURN_ROOMS: usize = 8;
const CONCURRENCY: usize = 32;

/// One connect / join / disconnect cycle; `i` picks nick, rooms and ending.
async fn cycle(url: &str, i: usize) {
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8));
    let nick = format!("ch{i}");
    let (mut c, welcome) =
        match Ws::connect(&format!("{url}?nick={nick}"), Some(local), BOUND).await {
            Ok(pair) => pair,
            Err(e) => panic!("cycle {i}: {e}"),
        };
    assert_eq!(welcome["nick"], nick.as_str(), "cycle {i}: {welcome}");
    let room = format!("churn{}", i % CHURN_ROOMS);
    c.ok(json!({"type": "join", "room": room, "id": 1})).await;
    if i % 4 == 0 {
        c.ok(json!({"type": "join", "room": "lobby", "id": 2}))
            .await;
    }
    if i % 3 == 0 {
        c.ok(json!({"type": "say", "room": room, "text": format!("hello from {nick}"), "id": 3}))
            .await;
    }
    match i % 5 {
        0 => c.close().await,
        1 => drop(c),
        2 => c.reset(),
        3 => {
            c.ok(json!({"type": "leave", "room": room, "id": 4})).await;
            c.close().await;
        }
        _ => {
            let _ = timeout(BOUND, c.ws.send(Message::Close(None))).await;
            drop(c);
        }
    }
}

/// Runs cycles `from..to`, `CONCURRENCY` at a time.
async fn churn(url: &str, from: usize, to: usize) {
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let url = url.to_owned();
            spawn(async move {
                for i in (from + w..to).step_by(CONCURRENCY) {
                    cycle(&url, i).await;
                }
            })
        })
        .collect();
    for w in workers {
        timeout(Duration::from_secs(300), w)
            .await
            .expect("a churn worker finishes");
    }
}

/// Waits until the server is back to the witnesses alone: as many
/// descriptors as before the churn, and, through the protocol, only the
/// witness room with its two members.
async fn quiesce(server: &ServerProcess, fds: usize) {
    server.wait_fds(fds, "after churn").await;
    let (mut probe, _) = Ws::connect(&server.url, None, BOUND).await.unwrap();
    let rooms = probe.ok(json!({"type": "rooms", "id": 1})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "lobby", "members": 2}]),
        "{rooms}"
    );
    let who = probe
        .ok(json!({"type": "who", "room": "lobby", "id": 2}))
        .await;
    assert_eq!(who["members"], json!(["wit-l", "wit-s"]), "{who}");
    for r in 0..CHURN_ROOMS {
        let who = probe
            .ok(json!({"type": "who", "room": format!("churn{r}"), "id": 3}))
            .await;
        assert_eq!(who["members"], json!([]), "{who}");
    }
    probe.close().await;
    server.wait_fds(fds, "after the probe").await;
}

/// How far resident memory may move. The allocator keeps freed memory for
/// reuse (per-thread arenas, fragmentation), so RSS after churn is not
/// byte-exact; 4 MiB covers that, while anything a cycle leaks shows up
/// far above it: one connection's outbound queue, socket buffers and
/// tungstenite buffers take tens of KiB, so leaking them over 2000 cycles
/// would add tens of MiB. The second phase checks the same thing another
/// way: twice the cycles must not mean more memory.
const RSS_MARGIN_KIB: u64 = 4 * 1024;

#[test]
fn churn_against_the_binary_leaves_no_registry_entry_socket_or_memory_growth() {
    let cycles = 2000 * scale();
    let server = ServerProcess::spawn({
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--rate", "0"]);
        cmd
    });
    let url = server.url.clone();
    let (rss0, rss1, rss2) = natter_runtime::block_on(async {
        let mut witness = Witness::start(&url, "lobby").await;
        witness.wait_said(3).await;
        let fds = server.open_fds();

        // Warm-up, so that the allocator's pools and the executor's threads
        // exist before the first measurement.
        churn(&url, 0, 300).await;
        quiesce(&server, fds).await;
        let rss0 = server.rss_kib();
        churn(&url, 300, 300 + cycles).await;
        quiesce(&server, fds).await;
        let rss1 = server.rss_kib();
        churn(&url, 300 + cycles, 300 + 2 * cycles).await;
        quiesce(&server, fds).await;
        let rss2 = server.rss_kib();

        // Nicks of churners are free again.
        for i in [0, 1, 2, 3, 4, 300 + 2 * cycles - 1] {
            let (c, welcome) = Ws::connect(&format!("{url}?nick=ch{i}"), None, BOUND)
                .await
                .unwrap();
            assert_eq!(welcome["nick"], format!("ch{i}"), "{welcome}");
            assert!(welcome.get("nick_error").is_none(), "{welcome}");
            c.close().await;
        }

        let (speaker, listener, said, others) = witness.finish().await;
        assert!(said >= 20, "{said}");
        // Every churner that passed through the lobby joined, then left.
        let lobby: Vec<usize> = (0..300 + 2 * cycles).filter(|i| i % 4 == 0).collect();
        for i in &lobby {
            let nick = format!("ch{i}");
            let seen: Vec<&str> = others
                .iter()
                .filter(|v| v["type"] == "presence" && v["nick"] == nick.as_str())
                .map(|v| v["event"].as_str().unwrap())
                .collect();
            assert_eq!(seen, ["join", "leave"], "{nick}");
        }
        speaker.close().await;
        listener.close().await;
        (rss0, rss1, rss2)
    });
    eprintln!(
        "natter-server VmRSS: {rss0} KiB after warm-up, {rss1} KiB after {cycles} more cycles, \
         {rss2} KiB after {} in all (margin {RSS_MARGIN_KIB} KiB)",
        2 * cycles
    );
    assert!(
        rss1 <= rss0 + RSS_MARGIN_KIB,
        "RSS grew from {rss0} to {rss1} KiB over {cycles} cycles"
    );
    assert!(
        rss2 <= rss0 + RSS_MARGIN_KIB,
        "RSS grew from {rss0} to {rss2} KiB over {} cycles",
        2 * cycles
    );
    assert!(
        rss2 <= rss1 + RSS_MARGIN_KIB,
        "RSS grew from {rss1} to {rss2} KiB in the second {cycles} cycles"
    );
    let status = server.stop();
    assert!(status.success(), "natter-server exited with {status}");
}

// ---------------------------------------------------------------------------
// Out of file descriptors
// ---------------------------------------------------------------------------

/// The descriptor limit the server runs under (soft and hard).
const FD_LIMIT: usize = 64;

#[test]
fn out_of_file_descriptors_accept_fails_the_open_connections_go_on_and_it_recovers() {
    // `ulimit -n` sets soft and hard limits: the server's own attempt to
    // raise its soft limit to the hard one then gains nothing.
    let mut server = ServerProcess::spawn({
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {FD_LIMIT} && exec \"$0\" --listen 127.0.0.1:0 --rate 0"),
            env!("CARGO_BIN_EXE_natter-server"),
        ]);
        cmd
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid)).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    assert_eq!((fields[3], fields[4]), ("64", "64"), "{open_files}");
    let url = server.url.clone();
    natter_runtime::block_on(async {
        let mut witness = Witness::start(&url, "lobby").await;
        witness.wait_said(3).await;

        // Open connections until the server cannot accept one: each
        // attempt ends with a welcome, or with the server logging that
        // accept failed (the attempt then waits in the listen backlog).
        let mut extra = Vec::new();
        let mut accept_failed = None;
        for i in 0..4 * FD_LIMIT {
            let nick_url = format!("{url}?nick=x{i}");
            let attempt = pin!(Ws::connect(&nick_url, None, BOUND));
            let failed = pin!(ServerProcess::stderr_line(
                &mut server.stderr_lines,
                "accept failed"
            ));
            match select(attempt, failed).await {
                Either::Left((Ok((c, welcome)), _)) => {
                    assert_eq!(welcome["nick"], format!("x{i}"), "{welcome}");
                    extra.push(c);
                }
                Either::Left((Err(e), _)) => panic!(
                    "connection {i} failed, and no 'accept failed' on stderr: {e}; stderr: {:?}",
                    server.stderr.lock().unwrap()
                ),
                Either::Right((line, _)) => {
                    accept_failed = Some(line);
                    break;
                }
            }
        }
        let line = accept_failed
            .unwrap_or_else(|| panic!("{} connections and accept never failed", extra.len()));
        assert!(!extra.is_empty(), "not even one connection was accepted");
        eprintln!(
            "with {FD_LIMIT} descriptors: {} connections besides the witnesses, then: {line}",
            extra.len()
        );

        // While descriptors are exhausted, the witness keeps chatting and
        // the open connections are served.
        let before = witness.said();
        witness.wait_said(before + 10).await;
        let rooms = extra[0].ok(json!({"type": "rooms", "id": 1})).await;
        assert_eq!(
            rooms["rooms"],
            json!([{"room": "lobby", "members": 2}]),
            "{rooms}"
        );
        assert!(
            !server.stderr_has("panicked"),
            "{:?}",
            server.stderr.lock().unwrap()
        );

        // Free the descriptors: a new client gets in again (the server
        // retries accept after a back-off of up to 1 s).
        let n = extra.len();
        for c in extra {
            c.close().await;
        }
        let mut newcomer = None;
        for attempt in 0..20 {
            match Ws::connect(
                &format!("{url}?nick=newcomer"),
                None,
                Duration::from_secs(3),
            )
            .await
            {
                Ok((c, welcome)) => {
                    assert_eq!(welcome["nick"], "newcomer", "attempt {attempt}: {welcome}");
                    newcomer = Some(c);
                    break;
                }
                Err(e) => eprintln!("attempt {attempt} after freeing {n} connections: {e}"),
            }
        }
        let mut newcomer =
            newcomer.expect("no client got in again after the descriptors were freed");
        newcomer
            .ok(json!({"type": "join", "room": "lobby", "id": 1}))
            .await;
        newcomer
            .ok(json!({"type": "say", "room": "lobby", "text": "back in", "id": 2}))
            .await;
        newcomer.close().await;

        let (speaker, listener, said, others) = witness.finish().await;
        assert!(said >= 20, "{said}");
        let texts: Vec<&Value> = others
            .iter()
            .filter(|v| v["type"] == "message")
            .map(|v| &v["text"])
            .collect();
        assert_eq!(texts, [&json!("back in")]);
        speaker.close().await;
        listener.close().await;
    });
    let status = server.stop();
    assert!(status.success(), "natter-server exited with {status}");
}
