//! Guarantee 7 of PROTOCOL.md ("one connection's cost is bounded") against
//! the real `natter-server` binary, with `--rate 0` (the contract says the
//! bound holds with any rate, 0 included, and 0 is the worst case: nothing
//! is refused for coming too fast). Each test repeats one attack of
//! issue #10 and asserts the contract's bound, not today's figure:
//! - a ping flood from three connections that never read;
//! - re-join amplification: one connection pipelines 40 re-joins of a room
//!   whose history holds 100 maximal, fully escaped texts, and never reads;
//! - retained buffers: 20 connections each read one such join reply and go
//!   idle; what they keep must be far below the reply's size.
//!
//! Memory is the server's VmRSS (/proc/PID/status), sampled each time the
//! witness reports a message. In every test a witness pair (a speaker and
//! a listener in `lobby`) chats the whole time and must receive every
//! message, in order, gap-free; the speaker also times a `who` round trip
//! after each message. Each test ends with the attackers gone and the
//! server back to the descriptors it held before them (/proc/PID/fd).
//!
//! The figures are printed (`--nocapture` shows them). The tests take a
//! lock so that they run one after another: each has a server of its own,
//! but on a 2-core machine three of them at once would measure each other.

mod common;

use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::channel::{mpsc as mpsc_async, oneshot};
use futures::future::{Either, select};
use futures::{AsyncWriteExt, SinkExt, StreamExt};
use natter_runtime::{JoinHandle, spawn, timeout};
use serde_json::{Value, json};

use common::wait::wait_until;
use common::{BOUND, MAX_FRAMES, ServerProcess, Ws};

/// One test at a time (see the module comment).
static SERIAL: Mutex<()> = Mutex::new(());

/// Guarantee 7 with the default options: what one connection can make the
/// server hold, at most 8 MiB.
const CONNECTION_BOUND_KIB: u64 = 8 * 1024;

/// Added to every memory bound. RSS is not the connections' bytes alone:
/// the allocator keeps freed memory for reuse (and a big freed block raises
/// glibc's mmap threshold, so later big blocks stay in the heap), the
/// witness pair's traffic and the room's history (up to 100 of its
/// messages) are allocated meanwhile, and the executor's first use of a
/// code path maps pages. 8 MiB covers those and is still far below what
/// the attacks held before the fix (27 MiB per pinging connection, 94 MiB
/// for one re-joining connection).
const SLACK_KIB: u64 = 8 * 1024;

/// The longest `who` round trip of the witness allowed during an attack.
/// Generous on purpose: the contract's "a few milliseconds of work at a
/// time" is measured in BENCHMARKS.md on a quiet machine; a pass/fail test
/// on a shared 2-core machine (the test's own clients, the attack and
/// other builds compete for the cores) can only catch a starvation, such
/// as the ~380 ms stall a ping burst caused before the reader yielded.
const WHO_BOUND: Duration = Duration::from_millis(500);

/// How long the witness may take to say one more message: it says one
/// every 10 ms or so; 30 s covers a loaded 2-core machine.
const WITNESS_WAIT: Duration = Duration::from_secs(30);

/// The witness's pause between two messages.
const WITNESS_PACE: Duration = Duration::from_millis(10);

/// Witness messages during which RSS is still sampled once an attack has
/// done all it can (its sends finished), so that the server's work on what
/// it had already read is seen: at 10 ms a message, a second or more.
const SETTLE_MESSAGES: usize = 60;

/// The room the attacks use, and the texts its history is filled with:
/// 4096 bytes (`max_text_bytes`) of U+0001, which JSON writes as `\u0001`,
/// 6 bytes each: about 24.6 KB a message, 2.4 MB a history of 100.
const BIG_ROOM: &str = "big";
const HISTORY: usize = 100;
const MAX_TEXT_BYTES: usize = 4096;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_server() -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-server"));
    cmd.args(["--listen", "127.0.0.1:0", "--rate", "0"]);
    ServerProcess::spawn(cmd)
}

// ---------------------------------------------------------------------------
// The witness pair
// ---------------------------------------------------------------------------

const WITNESS_ROOM: &str = "lobby";
const SPEAKER: &str = "wit-s";
const LISTENER: &str = "wit-l";

/// A speaker and a listener in `lobby`, chatting in spawned tasks. After
/// each acknowledged message the speaker sends `who` and records its round
/// trip. [`Witness::finish`] asserts that both got every message of the
/// speaker, in order, with no gap in the room's seq.
struct Witness {
    stop: Arc<AtomicBool>,
    /// The speaker's running count of acknowledged messages.
    progress: mpsc_async::UnboundedReceiver<usize>,
    said: usize,
    /// Every `who` round trip so far, in order.
    rtts: Arc<Mutex<Vec<Duration>>>,
    speaker: JoinHandle<(Ws, Vec<u64>)>,
    listener: JoinHandle<(Ws, Vec<u64>)>,
}

/// Takes one frame of the room: a message must be the speaker's next one,
/// with the room's next seq; a presence may only be about the pair.
fn track(who: &str, v: Value, last: &mut u64, own: &mut Vec<u64>) {
    match v["type"].as_str() {
        Some("message") => {
            assert_eq!(v["room"], WITNESS_ROOM, "{who}: {v}");
            assert_eq!(v["from"], SPEAKER, "{who}: {v}");
            let seq = v["seq"].as_u64().unwrap();
            assert_eq!(seq, *last + 1, "{who}: seq skipped or repeated: {v}");
            assert_eq!(
                v["text"],
                format!("wit #{}", own.len()),
                "{who}: out of order"
            );
            *last = seq;
            own.push(seq);
        }
        Some("presence") if v["nick"] == SPEAKER || v["nick"] == LISTENER => {}
        _ => panic!("{who}: unexpected frame {v}"),
    }
}

/// Connects `nick` and joins the witness room; returns the room's seq.
async fn witness_member(url: &str, nick: &str) -> (Ws, u64) {
    let (mut c, welcome) = Ws::connect(&format!("{url}?nick={nick}"), None, BOUND)
        .await
        .unwrap();
    assert_eq!(welcome["nick"], nick, "{welcome}");
    let seq = c
        .ok(json!({"type": "join", "room": WITNESS_ROOM, "id": 0}))
        .await["seq"]
        .as_u64()
        .unwrap();
    (c, seq)
}

/// The speaker: say, read to the reply, `who` (timed), pause reading.
async fn speak(
    mut c: Ws,
    from: u64,
    stop: Arc<AtomicBool>,
    progress: mpsc_async::UnboundedSender<usize>,
    rtts: Arc<Mutex<Vec<Duration>>>,
    total: oneshot::Sender<usize>,
) -> (Ws, Vec<u64>) {
    let (mut last, mut own, mut acked) = (from, Vec::new(), Vec::new());
    let mut stopped_at = None;
    let started = Instant::now();
    for i in 0..100_000usize {
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(i);
        }
        // At least 20 messages, and 3 more once told to stop.
        if i >= 20 && stopped_at.is_some_and(|s| i >= s + 3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the witness was never stopped"
        );
        let text = format!("wit #{i}");
        c.send(&json!({"type": "say", "room": WITNESS_ROOM, "text": text, "id": i}))
            .await;
        let reply = read_reply(&mut c, &mut last, &mut own).await;
        assert_eq!(
            (&reply["type"], &reply["id"]),
            (&json!("ok"), &json!(i)),
            "{reply}"
        );
        acked.push(reply["seq"].as_u64().unwrap());

        let sent = Instant::now();
        c.send(&json!({"type": "who", "room": WITNESS_ROOM, "id": format!("who{i}")}))
            .await;
        let reply = read_reply(&mut c, &mut last, &mut own).await;
        let rtt = sent.elapsed();
        assert_eq!(reply["id"], format!("who{i}"), "{reply}");
        assert_eq!(reply["members"], json!([LISTENER, SPEAKER]), "{reply}");
        rtts.lock().unwrap().push(rtt);
        let _ = progress.unbounded_send(acked.len());

        let until = Instant::now() + WITNESS_PACE;
        while let Some(v) = c
            .next_within(until.saturating_duration_since(Instant::now()))
            .await
        {
            track(SPEAKER, v, &mut last, &mut own);
        }
    }
    let _ = total.send(acked.len());
    for _ in 0..MAX_FRAMES {
        if own.len() >= acked.len() {
            break;
        }
        let v = c.next().await;
        track(SPEAKER, v, &mut last, &mut own);
    }
    assert_eq!(
        own, acked,
        "{SPEAKER}: echoes do not match acknowledgements"
    );
    (c, acked)
}

/// Reads up to the next reply, tracking the room's messages on the way.
async fn read_reply(c: &mut Ws, last: &mut u64, own: &mut Vec<u64>) -> Value {
    for _ in 0..MAX_FRAMES {
        let v = c.next().await;
        if v["type"] == "ok" || v["type"] == "error" {
            return v;
        }
        track(SPEAKER, v, last, own);
    }
    panic!("{SPEAKER}: no reply within {MAX_FRAMES} frames")
}

/// The listener: reads until the speaker's total is known and all of its
/// messages have arrived.
async fn listen(mut c: Ws, from: u64, mut total: oneshot::Receiver<usize>) -> (Ws, Vec<u64>) {
    let (mut last, mut own) = (from, Vec::new());
    let mut expected: Option<usize> = None;
    for _ in 0..10 * MAX_FRAMES {
        if expected.is_some_and(|n| own.len() >= n) {
            return (c, own);
        }
        let v = if expected.is_none() {
            match select(pin!(c.next()), &mut total).await {
                Either::Left((v, _)) => v,
                Either::Right((n, _)) => {
                    expected = Some(n.expect("the witness speaker ended without a total"));
                    continue;
                }
            }
        } else {
            c.next().await
        };
        track(LISTENER, v, &mut last, &mut own);
    }
    panic!("{LISTENER}: too many frames")
}

impl Witness {
    async fn start(url: &str) -> Witness {
        let (listener, l_from) = witness_member(url, LISTENER).await;
        let (speaker, s_from) = witness_member(url, SPEAKER).await;
        let stop = Arc::new(AtomicBool::new(false));
        let rtts = Arc::new(Mutex::new(Vec::new()));
        let (progress_tx, progress) = mpsc_async::unbounded();
        let (total_tx, total_rx) = oneshot::channel();
        let speaker = spawn(speak(
            speaker,
            s_from,
            stop.clone(),
            progress_tx,
            rtts.clone(),
            total_tx,
        ));
        let listener = spawn(listen(listener, l_from, total_rx));
        Witness {
            stop,
            progress,
            said: 0,
            rtts,
            speaker,
            listener,
        }
    }

    /// Waits (bounded, [`WITNESS_WAIT`]) for the speaker's next report;
    /// returns how many messages it has said.
    async fn next_report(&mut self) -> usize {
        let (progress, said) = (&mut self.progress, &mut self.said);
        let n = *said + 1;
        wait_until(
            &format!("the witness to say {n} messages"),
            WITNESS_WAIT,
            async move || {
                match progress.next().await {
                    Some(now) => *said = now,
                    None => panic!("the witness stopped after {said} messages"),
                }
                while let Ok(now) = progress.try_recv() {
                    *said = now;
                }
                Ok::<_, String>(())
            },
        )
        .await;
        self.said
    }

    /// Waits until the speaker has said `n` messages in all.
    async fn wait_said(&mut self, n: usize) {
        for _ in 0..n + 1 {
            if self.said >= n {
                return;
            }
            self.next_report().await;
        }
    }

    /// `who` round trips recorded so far.
    fn rtt_mark(&self) -> usize {
        self.rtts.lock().unwrap().len()
    }

    /// The longest `who` round trip recorded since `mark`, and how many.
    fn max_rtt_since(&self, mark: usize) -> (Duration, usize) {
        let rtts = self.rtts.lock().unwrap();
        let window = &rtts[mark.min(rtts.len())..];
        (
            window.iter().copied().max().unwrap_or_default(),
            window.len(),
        )
    }

    /// Stops the pair, checks it and closes its connections; returns how
    /// many messages were said.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (speaker, acked) = timeout(Duration::from_secs(60), self.speaker)
            .await
            .expect("the witness speaker finishes");
        let (listener, own) = timeout(Duration::from_secs(60), self.listener)
            .await
            .expect("the witness listener finishes");
        assert_eq!(
            own, acked,
            "{LISTENER} did not get the speaker's messages as acknowledged"
        );
        speaker.close().await;
        listener.close().await;
        acked.len()
    }
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

/// Samples the server's RSS at each witness report until `done()` holds
/// and [`SETTLE_MESSAGES`] more messages have been said; returns the
/// highest sample. Bounded: each report by [`WITNESS_WAIT`], the whole by
/// 120 s and 100 000 reports.
async fn peak_rss_while(
    server: &ServerProcess,
    witness: &mut Witness,
    done: impl Fn() -> bool,
) -> u64 {
    let started = Instant::now();
    let mut peak = server.rss_kib();
    let mut done_at: Option<usize> = None;
    for _ in 0..100_000 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the attack did not end within 120 s"
        );
        let said = witness.next_report().await;
        peak = peak.max(server.rss_kib());
        if done_at.is_none() && done() {
            done_at = Some(said);
        }
        if done_at.is_some_and(|at| said >= at + SETTLE_MESSAGES) {
            return peak;
        }
    }
    panic!("no end to the attack within 100 000 witness messages")
}

/// Asserts that the witness's `who` round trips since `mark` stayed within
/// [`WHO_BOUND`]; returns the longest.
fn assert_who_prompt(witness: &Witness, mark: usize, attack: &str) -> Duration {
    let (max, n) = witness.max_rtt_since(mark);
    assert!(n > 0, "{attack}: no `who` round trip during the attack");
    assert!(
        max <= WHO_BOUND,
        "{attack}: the witness waited {max:?} for a `who` reply (bound {WHO_BOUND:?}, {n} round trips)"
    );
    max
}

// ---------------------------------------------------------------------------
// The room with a full history of maximal texts
// ---------------------------------------------------------------------------

fn maximal_text() -> String {
    "\u{1}".repeat(MAX_TEXT_BYTES)
}

/// Join replies read before any measurement, by [`WARM_PROBES`] connections
/// (members of the room together, as the readers of the third test are),
/// [`WARM_JOINS`] each. The first big reply is mmapped and unmapped when
/// freed, which raises glibc's mmap threshold, so later ones come from the
/// heap, which keeps the space (about one reply, 2.4 MiB) once they are
/// freed: a one-off cost of the process, not of any connection. Measured
/// without a warm-up done after the idle connections were opened (their
/// small allocations land in that freed space), the second of 60 readers
/// added 2.4 MiB to RSS and the other 58 about 2 KiB each, none of it
/// given back when they all closed; spread over 20 readers that one step
/// looked like ~124 KiB each.
const WARM_PROBES: usize = 3;
const WARM_JOINS: usize = 1;

/// Fills [`BIG_ROOM`]'s history with [`HISTORY`] maximal texts.
async fn fill_big_room(server: &ServerProcess) {
    let url = &server.url;
    let (mut filler, _) = Ws::connect(&format!("{url}?nick=filler"), None, BOUND)
        .await
        .unwrap();
    filler
        .ok(json!({"type": "join", "room": BIG_ROOM, "id": 0}))
        .await;
    let text = maximal_text();
    for i in 1..=HISTORY {
        filler
            .ok(json!({"type": "say", "room": BIG_ROOM, "text": text, "id": i}))
            .await;
    }
    filler.close().await;
}

/// Has [`WARM_PROBES`] connections join [`BIG_ROOM`] with `since: 0`, check
/// its history and read the whole reply; returns the reply's size in bytes.
async fn warm_big_room(server: &ServerProcess) -> usize {
    let (url, text) = (&server.url, maximal_text());
    let rss = server.rss_kib();
    let mut bytes = 0;
    let mut probes = Vec::new();
    for p in 0..WARM_PROBES {
        let (mut probe, _) = Ws::connect(&format!("{url}?nick=probe{p}"), None, BOUND)
            .await
            .unwrap();
        for i in 1..=WARM_JOINS {
            let reply = probe
                .ok(json!({"type": "join", "room": BIG_ROOM, "since": 0, "id": i}))
                .await;
            let history = reply["history"].as_array().unwrap();
            assert_eq!(history.len(), HISTORY, "the room's history");
            assert!(
                history.iter().all(|m| m["text"] == text.as_str()),
                "history texts"
            );
            bytes = reply.to_string().len();
        }
        probes.push(probe);
    }
    for probe in probes {
        probe.close().await;
    }
    eprintln!(
        "warm-up ({WARM_PROBES} joins of {bytes} bytes read): VmRSS {rss} -> {} KiB",
        server.rss_kib()
    );
    bytes
}

// ---------------------------------------------------------------------------
// 1. Ping flood
// ---------------------------------------------------------------------------

/// Connections that flood, and what each sends at most.
const PINGERS: usize = 3;
const PINGS: usize = 200_000;
/// How long each flooder keeps sending (or trying to: the server may stop
/// reading it, and the kernel's buffers then fill).
const FLOOD_FOR: Duration = Duration::from_secs(2);

/// A masked client ping frame (RFC 6455 §5.2) with `payload` bytes; the
/// masking key is 0, so the payload goes as it is.
fn ping_frame(payload: usize) -> Vec<u8> {
    assert!(
        payload <= 125,
        "a control frame's payload is at most 125 bytes"
    );
    let mut f = vec![0x89, 0x80 | payload as u8, 0, 0, 0, 0];
    f.extend(std::iter::repeat_n(b'p', payload));
    f
}

/// Writes pings of `payload` bytes straight to the socket, as fast as the
/// socket takes them, until [`PINGS`] are out or [`FLOOD_FOR`] has passed;
/// never reads. Returns the connection and the pings written whole.
async fn ping_flood(mut c: Ws, payload: usize) -> (Ws, usize, String) {
    const PER_WRITE: usize = 1000;
    let chunk: Vec<u8> = (0..PER_WRITE).flat_map(|_| ping_frame(payload)).collect();
    let deadline = Instant::now() + FLOOD_FOR;
    let mut sent = 0;
    let mut ended = "count reached".to_owned();
    while sent < PINGS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            ended = "time up".into();
            break;
        }
        // The welcome was read and nothing was sent since: tungstenite
        // holds no partial frame, so raw frames may follow on its socket.
        match timeout(left, c.ws.get_mut().write_all(&chunk)).await {
            Some(Ok(())) => sent += PER_WRITE,
            Some(Err(e)) => {
                ended = format!("write failed: {e}");
                break;
            }
            None => {
                ended = "time up, the socket full".into();
                break;
            }
        }
    }
    (c, sent, ended)
}

#[test]
fn a_ping_flood_that_never_reads_holds_at_most_the_bound_per_connection() {
    let _serial = serial();
    let server = start_server();
    let url = server.url.clone();
    natter_runtime::block_on(async {
        let fds0 = server.open_fds();
        let mut witness = Witness::start(&url).await;
        witness.wait_said(5).await;
        let fds = server.open_fds();
        let mut flooders = Vec::new();
        for k in 0..PINGERS {
            let (c, _) = Ws::connect(&format!("{url}?nick=pinger{k}"), None, BOUND)
                .await
                .unwrap();
            flooders.push(c);
        }
        let rss0 = server.rss_kib();
        let mark = witness.rtt_mark();

        // Empty pings (the most frames for the bytes), middling and maximal
        // ones (the most pong bytes per frame).
        let done = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = flooders
            .into_iter()
            .zip([0, 64, 125])
            .map(|(c, payload)| {
                let done = done.clone();
                spawn(async move {
                    let out = ping_flood(c, payload).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    out
                })
            })
            .collect();
        let peak = peak_rss_while(&server, &mut witness, || {
            done.load(Ordering::SeqCst) == PINGERS
        })
        .await;
        let max_who = assert_who_prompt(&witness, mark, "ping flood");
        let mut sent = Vec::new();
        for (k, t) in tasks.into_iter().enumerate() {
            let (c, n, ended) = timeout(BOUND, t).await.expect("a flooder ends");
            eprintln!("ping flood: pinger{k} wrote {n} pings ({ended})");
            sent.push(n);
            c.reset();
        }
        server.wait_fds(fds, "after the ping flood").await;
        let rss_after = server.rss_kib();
        let said = witness.finish().await;
        server.wait_fds(fds0, "after the witness").await;

        let bound = PINGERS as u64 * CONNECTION_BOUND_KIB + SLACK_KIB;
        eprintln!(
            "ping flood ({PINGERS} connections, --rate 0): VmRSS {rss0} KiB before, \
             peak {peak} KiB (+{} KiB, bound +{bound} KiB), {rss_after} KiB once they \
             were gone; witness said {said}, longest `who` {max_who:?}",
            peak.saturating_sub(rss0)
        );
        assert!(
            peak <= rss0 + bound,
            "ping flood: RSS went from {rss0} to {peak} KiB (bound +{bound} KiB)"
        );
        assert!(
            sent.iter().all(|&n| n > 0),
            "a flooder sent nothing: {sent:?}"
        );
    });
    let status = server.stop();
    assert!(status.success(), "natter-server exited with {status}");
}

// ---------------------------------------------------------------------------
// 2. Re-join amplification
// ---------------------------------------------------------------------------

const REJOINS: usize = 40;

#[test]
fn pipelined_rejoins_of_a_full_history_room_hold_at_most_the_bound() {
    let _serial = serial();
    let server = start_server();
    let url = server.url.clone();
    natter_runtime::block_on(async {
        let fds0 = server.open_fds();
        let mut witness = Witness::start(&url).await;
        witness.wait_said(5).await;
        // No warm-up here: the first big replies' one-off cost to the
        // allocator (see WARM_PROBES) counts against the slack.
        // Before the filler comes and goes: a closed socket's descriptor is
        // released a little after the close.
        let fds = server.open_fds();
        fill_big_room(&server).await;
        let reply_bytes = HISTORY * 6 * MAX_TEXT_BYTES;
        let (mut attacker, _) = Ws::connect(&format!("{url}?nick=rejoiner"), None, BOUND)
            .await
            .unwrap();
        let rss0 = server.rss_kib();
        let mark = witness.rtt_mark();

        // 40 joins in one write (about 2.4 KB: the socket takes them all),
        // then nothing read, ever.
        let sent = async {
            for i in 1..=REJOINS {
                let join = json!({"type": "join", "room": BIG_ROOM, "since": 0, "id": i});
                attacker.ws.feed(Message::text(join.to_string())).await?;
            }
            attacker.ws.flush().await
        };
        match timeout(BOUND, sent).await {
            Some(Ok(())) => {}
            other => panic!("pipelining the joins failed: {other:?}"),
        }
        let peak = peak_rss_while(&server, &mut witness, || true).await;
        let max_who = assert_who_prompt(&witness, mark, "re-joins");
        // The joins were held back, not dropped: read now, the re-joiner
        // gets every reply, in order (only their heads are looked at).
        let mut replies = 0;
        for _ in 0..REJOINS + 10 {
            if replies == REJOINS {
                break;
            }
            let i = replies + 1;
            match timeout(BOUND, attacker.ws.next()).await {
                Some(Some(Ok(Message::Text(t)))) => {
                    let head = &t.as_str()[..t.len().min(64)];
                    if head.starts_with("{\"type\":\"presence\"") {
                        continue;
                    }
                    assert!(
                        head.starts_with(&format!("{{\"type\":\"ok\",\"id\":{i},")),
                        "re-join {i}: {head}"
                    );
                    assert!(
                        t.len() + 64 >= reply_bytes,
                        "re-join {i}: {} bytes",
                        t.len()
                    );
                    replies += 1;
                }
                other => panic!("re-join {i}: {other:?}"),
            }
        }
        assert_eq!(replies, REJOINS, "replies to the re-joins");
        attacker.reset();
        server.wait_fds(fds, "after the re-joiner").await;
        let rss_after = server.rss_kib();
        let said = witness.finish().await;
        server.wait_fds(fds0, "after the witness").await;

        let bound = CONNECTION_BOUND_KIB + SLACK_KIB;
        eprintln!(
            "re-joins ({REJOINS} pipelined, each reply over {reply_bytes} bytes, --rate 0): \
             VmRSS {rss0} KiB before, peak {peak} KiB (+{} KiB, bound +{bound} KiB), \
             {rss_after} KiB once it was gone (and had read its {replies} replies); \
             witness said {said}, longest `who` {max_who:?}",
            peak.saturating_sub(rss0)
        );
        assert!(
            peak <= rss0 + bound,
            "re-joins: RSS went from {rss0} to {peak} KiB (bound +{bound} KiB)"
        );
    });
    let status = server.stop();
    assert!(status.success(), "natter-server exited with {status}");
}

// ---------------------------------------------------------------------------
// 3. Retained buffers
// ---------------------------------------------------------------------------

const READERS: usize = 20;

/// What each connection that read one big join reply may still cost once
/// idle. The reply is ~2.4 MB, and before the fix each such connection
/// kept a 2.6 MiB write buffer; the idle figure is a few KiB. RSS also
/// holds the allocator's caches (a freed reply's block may stay in the
/// heap) and the members' entries in the room, so the bound is well above
/// the idle figure, and ten times below the old one.
const RETAINED_PER_CONNECTION_KIB: u64 = 256;

#[test]
fn connections_that_read_a_big_reply_and_go_idle_keep_no_big_buffer() {
    let _serial = serial();
    let server = start_server();
    let url = server.url.clone();
    natter_runtime::block_on(async {
        let fds0 = server.open_fds();
        let mut witness = Witness::start(&url).await;
        witness.wait_said(5).await;
        // Before the filler and the probes come and go (see above).
        let fds = server.open_fds();
        fill_big_room(&server).await;
        warm_big_room(&server).await;
        let mark = witness.rtt_mark();

        // Open them first, idle: what they cost idle is not counted.
        let mut readers = Vec::new();
        for k in 0..READERS {
            let (c, welcome) = Ws::connect(&format!("{url}?nick=reader{k}"), None, BOUND)
                .await
                .unwrap();
            assert_eq!(welcome["nick"], format!("reader{k}"), "{welcome}");
            readers.push(c);
        }
        // The warm-up (see WARM_PROBES) again, after the idle connections'
        // own allocations: without it, one reader's reply still added about
        // 2.4 MiB (124 KiB a reader over 20), once, and kept it.
        let reply_bytes = warm_big_room(&server).await;
        witness.next_report().await;
        let rss0 = server.rss_kib();

        // One after another: each reads the whole reply, then goes idle
        // (the presence of later joiners stays unread in its socket).
        for c in &mut readers {
            let reply = c
                .ok(json!({"type": "join", "room": BIG_ROOM, "since": 0, "id": 1}))
                .await;
            assert_eq!(reply["history"].as_array().unwrap().len(), HISTORY);
        }
        // A few witness messages: the server's side of the last reply is
        // done (the client read all of it), and nothing else is pending.
        for _ in 0..5 {
            witness.next_report().await;
        }
        let rss1 = server.rss_kib();
        let max_who = assert_who_prompt(&witness, mark, "retained buffers");

        for c in readers {
            c.close().await;
        }
        server.wait_fds(fds, "after the readers").await;
        let rss_after = server.rss_kib();
        let said = witness.finish().await;
        server.wait_fds(fds0, "after the witness").await;

        let per = rss1.saturating_sub(rss0) / READERS as u64;
        eprintln!(
            "retained buffers ({READERS} connections, each read a {reply_bytes}-byte reply): \
             VmRSS {rss0} KiB with them idle, {rss1} KiB after the replies (+{per} KiB each, \
             bound {RETAINED_PER_CONNECTION_KIB} KiB), {rss_after} KiB once they were gone; \
             witness said {said}, longest `who` {max_who:?}"
        );
        assert!(
            rss1 <= rss0 + READERS as u64 * RETAINED_PER_CONNECTION_KIB,
            "retained buffers: RSS went from {rss0} to {rss1} KiB for {READERS} idle \
             connections (+{per} KiB each, bound {RETAINED_PER_CONNECTION_KIB} KiB)"
        );
    });
    let status = server.stop();
    assert!(status.success(), "natter-server exited with {status}");
}
