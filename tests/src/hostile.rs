//! Helpers for the hostile-client suite (`tests/tests/hostile_*.rs`).
//!
//! - [`Witness`]: a well-behaved speaker and listener in one room that keep
//!   chatting (spawned, concurrently) while a test attacks the server, and
//!   check at the end that every message arrived, in order, gap-free.
//! - [`settle`]: waits until the server's own counters account for the
//!   witnesses alone, i.e. the attacker left nothing behind.
//! - [`scale`]: the `NATTER_HOSTILE_SCALE` knob for bigger manual runs.
//! - raw-socket tools: an upgrade done by hand (to send frames tungstenite
//!   would never send), a TCP reset (`SO_LINGER` 0), a tiny seeded PRNG.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use futures::{AsyncWriteExt, FutureExt, StreamExt};
use natter_runtime::{JoinHandle, TcpStream, timeout};
use serde_json::{Value, json};

use crate::{
    Client, Config, MAX_FRAMES, RECV_TIMEOUT, Stats, TestServer, assert_message, bounded, is_reply,
    join_task, read_http_head, upgrade_request, wait_until,
};

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

/// `NATTER_HOSTILE_SCALE` (default 1): multiplies socket counts and cycles.
pub fn scale() -> usize {
    match std::env::var("NATTER_HOSTILE_SCALE") {
        Err(_) => 1,
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("NATTER_HOSTILE_SCALE must be a positive integer, got {s:?}"),
        },
    }
}

/// `n` times [`scale`].
pub fn scaled(n: usize) -> usize {
    n * scale()
}

// ---------------------------------------------------------------------------
// Witness
// ---------------------------------------------------------------------------

/// Longest a witness may run before someone tells it to stop.
pub const WITNESS_MAX_RUN: Duration = Duration::from_secs(240);
/// How long a witness may take to reach a message count it is waited for
/// ([`Witness::wait_said`]). It says one every few ms when the machine is
/// idle; 30 s covers a loaded 2-core machine with an attack in progress.
pub const WITNESS_WAIT: Duration = Duration::from_secs(30);
/// Most messages a witness says in one run.
const WITNESS_MAX_MESSAGES: usize = 100_000;

/// How a [`Witness`] behaves.
#[derive(Debug, Clone)]
pub struct WitnessOpts {
    /// Nick prefix: the pair is `{tag}-s` (speaker) and `{tag}-l` (listener).
    pub tag: String,
    pub room: String,
    /// Messages said at least, however early the witness is stopped.
    pub min_messages: usize,
    /// Messages said after [`Witness::finish`] is called: the witness must
    /// still be served once the attack is over.
    pub after_stop: usize,
    /// Pause between two says; the speaker keeps reading meanwhile.
    pub pace: Duration,
}

impl WitnessOpts {
    /// Paced to stay under `config`'s rate limit (1.5 / rate seconds apart,
    /// i.e. two thirds of the rate), or every 10 ms when the limit is off.
    pub fn new(tag: &str, room: &str, config: &Config) -> WitnessOpts {
        let pace = if config.rate == 0 {
            Duration::from_millis(10)
        } else {
            Duration::from_secs_f64(1.5 / f64::from(config.rate))
        };
        WitnessOpts {
            tag: tag.into(),
            room: room.into(),
            min_messages: 20,
            after_stop: 3,
            pace,
        }
    }
}

/// What one witness connection saw of its room.
#[derive(Debug)]
pub struct RoomTrack {
    /// The connection doing the tracking (for messages).
    who: String,
    room: String,
    tag: String,
    speaker: String,
    last_seq: u64,
    /// The speaker's messages, (seq, text), in arrival order.
    pub own: Vec<(u64, String)>,
    /// Everyone else's `message` events.
    pub others: Vec<Value>,
    pub presences: Vec<Value>,
}

impl RoomTrack {
    fn new(who: &str, opts: &WitnessOpts, speaker: &str, after_seq: u64) -> RoomTrack {
        RoomTrack {
            who: who.into(),
            room: opts.room.clone(),
            tag: opts.tag.clone(),
            speaker: speaker.into(),
            last_seq: after_seq,
            own: Vec::new(),
            others: Vec::new(),
            presences: Vec::new(),
        }
    }

    /// Takes one event: messages must come gap-free in seq order, and the
    /// speaker's own must be its texts in the order it said them.
    fn take(&mut self, v: Value) {
        match v["type"].as_str() {
            Some("message") => {
                assert_eq!(v["room"], self.room.as_str(), "{}: {v}", self.who);
                let seq = v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}: message without seq: {v}", self.who));
                assert_eq!(
                    seq,
                    self.last_seq + 1,
                    "{}: room {:?} skipped or repeated a seq after {}: {v}",
                    self.who,
                    self.room,
                    self.last_seq
                );
                self.last_seq = seq;
                if v["from"] == self.speaker.as_str() {
                    let expected = format!("{} #{}", self.tag, self.own.len());
                    assert_message(&v, &self.room, seq, &self.speaker, &expected);
                    self.own.push((seq, expected));
                } else {
                    self.others.push(v);
                }
            }
            Some("presence") => {
                assert_eq!(v["room"], self.room.as_str(), "{}: {v}", self.who);
                self.presences.push(v);
            }
            _ => panic!("{}: unexpected frame {v}", self.who),
        }
    }
}

/// What the speaker's task hands back: its client, what it saw, and the
/// (seq, text) of every message it said, as acknowledged.
type Spoken = (Client, RoomTrack, Vec<(u64, String)>);

/// A speaker and a listener in one room, chatting in a spawned task while
/// a test attacks the server. [`Witness::finish`] stops them and asserts
/// that both received every message the speaker said, in order, with no
/// gap in the room's seq.
pub struct Witness {
    pub speaker: String,
    pub listener: String,
    pub room: String,
    stop: Arc<AtomicBool>,
    /// The speaker's running count of acknowledged messages.
    progress: mpsc::UnboundedReceiver<usize>,
    said: usize,
    speaker_task: JoinHandle<Spoken>,
    listener_task: JoinHandle<(Client, RoomTrack)>,
}

/// What a finished [`Witness`] saw; its clients are still connected.
pub struct WitnessReport {
    pub speaker: Client,
    pub listener: Client,
    pub speaker_nick: String,
    pub listener_nick: String,
    /// Messages the speaker said (each acknowledged and seen by both).
    pub said: usize,
    /// The listener's view (the speaker's is checked against it).
    pub listener_track: RoomTrack,
    pub speaker_track: RoomTrack,
}

impl Witness {
    /// Connects the pair to `url` (`ws://…/ws`), joins both to the room and
    /// starts chatting.
    pub async fn start(url: &str, opts: WitnessOpts) -> Witness {
        let speaker_nick = format!("{}-s", opts.tag);
        let listener_nick = format!("{}-l", opts.tag);
        let (mut listener, welcome) = Client::connect(&format!("{url}?nick={listener_nick}")).await;
        assert_eq!(welcome["nick"], listener_nick.as_str(), "{welcome}");
        let joined = listener.join(&opts.room).await;
        let listener_from = joined["seq"].as_u64().expect("join reply seq");
        let (mut speaker, welcome) = Client::connect(&format!("{url}?nick={speaker_nick}")).await;
        assert_eq!(welcome["nick"], speaker_nick.as_str(), "{welcome}");
        let joined = speaker.join(&opts.room).await;
        let speaker_from = joined["seq"].as_u64().expect("join reply seq");

        let stop = Arc::new(AtomicBool::new(false));
        let (progress_tx, progress) = mpsc::unbounded();
        let (total_tx, total_rx) = oneshot::channel();
        let speaker_task = {
            let track = RoomTrack::new(&speaker_nick, &opts, &speaker_nick, speaker_from);
            let (stop, opts) = (stop.clone(), opts.clone());
            natter_runtime::spawn(async move {
                speak(speaker, track, opts, stop, progress_tx, total_tx).await
            })
        };
        let listener_task = {
            let track = RoomTrack::new(&listener_nick, &opts, &speaker_nick, listener_from);
            natter_runtime::spawn(listen(listener, track, total_rx))
        };
        Witness {
            speaker: speaker_nick,
            listener: listener_nick,
            room: opts.room,
            stop,
            progress,
            said: 0,
            speaker_task,
            listener_task,
        }
    }

    /// Messages said (and acknowledged) as of the last [`Witness::wait_said`].
    pub fn said(&self) -> usize {
        self.said
    }

    /// Waits (bounded, [`WITNESS_WAIT`]) until the speaker has said at least
    /// `n` messages, so that an attack starts while the witness is
    /// demonstrably chatting (or to show it still chats in the middle of
    /// one). Each check awaits the speaker's next progress report.
    pub async fn wait_said(&mut self, n: usize) {
        let what = format!("witness {} to say {n} messages", self.speaker);
        let (progress, said) = (&mut self.progress, &mut self.said);
        wait_until(&what, WITNESS_WAIT, async move || {
            if *said >= n {
                return Ok(());
            }
            match progress.next().await {
                Some(now) => *said = now,
                None => panic!("witness stopped after {said} messages, before {n}"),
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
        })
        .await
    }

    /// Stops the witness (after a few more messages) and asserts that both
    /// of its connections got every message of the speaker, in order.
    pub async fn finish(self) -> WitnessReport {
        self.stop.store(true, Ordering::SeqCst);
        let (speaker, speaker_track, acked) = join_task("witness speaker", self.speaker_task).await;
        let (listener, listener_track) = join_task("witness listener", self.listener_task).await;
        assert_eq!(
            listener_track.own, acked,
            "the listener {} did not get the speaker's messages as acknowledged",
            self.listener
        );
        WitnessReport {
            speaker,
            listener,
            speaker_nick: self.speaker,
            listener_nick: self.listener,
            said: acked.len(),
            listener_track,
            speaker_track,
        }
    }
}

/// The speaker's loop: say, read up to the reply, read while pausing.
async fn speak(
    mut speaker: Client,
    mut track: RoomTrack,
    opts: WitnessOpts,
    stop: Arc<AtomicBool>,
    progress: mpsc::UnboundedSender<usize>,
    total: oneshot::Sender<usize>,
) -> Spoken {
    let started = Instant::now();
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut stopped_at = None;
    for i in 0..WITNESS_MAX_MESSAGES {
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(i);
        }
        if i >= opts.min_messages && stopped_at.is_some_and(|s| i >= s + opts.after_stop) {
            break;
        }
        assert!(
            started.elapsed() < WITNESS_MAX_RUN,
            "witness {} was never stopped",
            track.who
        );
        let text = format!("{} #{i}", opts.tag);
        speaker
            .send_json(&json!({"type": "say", "room": opts.room, "text": text, "id": i}))
            .await;
        let mut reply = None;
        for _ in 0..MAX_FRAMES {
            let v = speaker.recv().await;
            if is_reply(&v) {
                reply = Some(v);
                break;
            }
            track.take(v);
        }
        let reply = reply.expect("a reply to the witness's say");
        assert_eq!(reply["type"], "ok", "{}: say #{i} got {reply}", track.who);
        assert_eq!(reply["id"], i, "{}: {reply}", track.who);
        let seq = reply["seq"].as_u64().expect("say reply seq");
        acked.push((seq, text));
        let _ = progress.unbounded_send(acked.len());
        // Pause, but keep reading: a witness is never a slow consumer.
        let until = Instant::now() + opts.pace;
        for _ in 0..MAX_FRAMES {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match speaker.recv_within(left).await {
                Some(v) => {
                    assert!(!is_reply(&v), "{}: unexpected reply {v}", track.who);
                    track.take(v);
                }
                None => break,
            }
        }
    }
    let _ = total.send(acked.len());
    // The echoes of the last messages may still be on their way.
    for _ in 0..MAX_FRAMES {
        if track.own.len() >= acked.len() {
            break;
        }
        let v = speaker.recv().await;
        track.take(v);
    }
    assert_eq!(
        track.own, acked,
        "{}: echoes do not match acknowledgements",
        track.who
    );
    (speaker, track, acked)
}

/// The listener's loop: read and check every frame until the speaker's
/// total is known and all of its messages have arrived.
async fn listen(
    mut listener: Client,
    mut track: RoomTrack,
    total: oneshot::Receiver<usize>,
) -> (Client, RoomTrack) {
    let mut total = total.fuse();
    let mut expected: Option<usize> = None;
    for _ in 0..10 * MAX_FRAMES {
        if expected.is_some_and(|n| track.own.len() >= n) {
            return (listener, track);
        }
        if expected.is_none() {
            // A frame (each read bounded: the speaker says something every
            // few ms), or the news that the speaker has finished.
            let frame = pin!(listener.recv());
            match select(frame, &mut total).await {
                Either::Left((v, _)) => track.take(v),
                Either::Right((n, _)) => {
                    expected = Some(n.expect("the witness speaker ended without a total"))
                }
            }
        } else {
            let v = listener.recv().await;
            track.take(v);
        }
    }
    panic!("{}: too many frames", track.who)
}

impl WitnessReport {
    /// The `presence` events (kind, nick) the listener saw about `nick`.
    pub fn presence_of(&self, nick: &str) -> Vec<String> {
        self.listener_track
            .presences
            .iter()
            .filter(|p| p["nick"] == nick)
            .map(|p| p["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Asserts the listener saw `nick` join and then leave.
    pub fn assert_joined_and_left(&self, nick: &str) {
        let seen = self.presence_of(nick);
        assert_eq!(
            seen,
            ["join", "leave"],
            "presence of {nick} seen by the witness"
        );
    }

    /// The texts of others' messages the listener saw from `nick`.
    pub fn texts_from(&self, nick: &str) -> Vec<String> {
        self.listener_track
            .others
            .iter()
            .filter(|m| m["from"] == nick)
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Closes both witness connections.
    pub async fn close(self) {
        self.speaker.close().await;
        self.listener.close().await;
    }
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

/// Waits (bounded, [`SETTLE`](crate::SETTLE)) until the server holds exactly `conns`
/// connections — slots, tasks and registry users alike — and `memberships`
/// room memberships; returns the stats. A witness accounts for 2 and 2.
pub async fn settle(server: &TestServer, conns: usize, memberships: usize) -> Stats {
    server
        .wait_stats(
            &format!(
                "the server to settle to {conns} connection(s) and {memberships} membership(s)"
            ),
            |s| {
                s.slots_in_use == conns
                    && s.tasks == conns
                    && s.registry.users == conns
                    && s.registry.memberships == memberships
            },
        )
        .await
}

// ---------------------------------------------------------------------------
// Client extras
// ---------------------------------------------------------------------------

impl Client {
    /// Like [`Client::try_connect`], from a chosen local address (to spread
    /// many short connections over several loopback source addresses).
    pub async fn try_connect_from(local: IpAddr, url: &str) -> Result<Client, String> {
        Client::connect_via(Some(local), url).await
    }

    /// A client over a socket whose upgrade was done by hand
    /// ([`raw_upgrade`]); `leftover` are the bytes read after the 101.
    pub async fn from_upgraded(tcp: TcpStream, leftover: Vec<u8>) -> Client {
        let ws = WebSocketStream::from_partially_read(tcp, leftover, Role::Client, None).await;
        Client {
            ws,
            next_id: 1_000_000,
        }
    }

    /// The underlying socket.
    pub fn socket(&self) -> &TcpStream {
        self.ws.get_ref()
    }

    /// The next text frame as JSON if one arrives within `wait` (pings and
    /// pongs skipped); `None` on time-out. Panics on a close or the end.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        for _ in 0..MAX_FRAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await {
                None => return None,
                Some(Some(Ok(Message::Text(t)))) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
                    );
                }
                Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        panic!("no text frame among {MAX_FRAMES} frames")
    }

    /// Reads through text frames (returned) to a close frame, tolerating a
    /// connection that ends without one: `Some((code, reason))` for a close
    /// frame, `None` when the stream ended or failed first (the error, if
    /// any, is returned as the last element).
    pub async fn read_until_close_or_end(
        &mut self,
    ) -> (Option<(u16, String)>, Vec<Value>, Option<String>) {
        let mut texts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..MAX_FRAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.ws.next()).await {
                None => panic!("neither a close frame nor the end within 30 s"),
                Some(Some(Ok(Message::Text(t)))) => texts.push(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
                ),
                Some(Some(Ok(Message::Close(frame)))) => {
                    let close = match frame {
                        Some(CloseFrame { code, reason }) => (u16::from(code), reason.to_string()),
                        None => (1005, String::new()),
                    };
                    for _ in 0..100 {
                        match timeout(RECV_TIMEOUT, self.ws.next()).await {
                            Some(Some(Ok(_))) => continue,
                            _ => break,
                        }
                    }
                    return (Some(close), texts, None);
                }
                Some(Some(Ok(_))) => continue,
                Some(Some(Err(e))) => return (None, texts, Some(e.to_string())),
                Some(None) => return (None, texts, None),
            }
        }
        panic!("no close frame within {MAX_FRAMES} frames")
    }

    /// Vanishes without a close: sets `SO_LINGER` to 0 and drops the socket,
    /// so the kernel sends a TCP reset (RST) instead of a FIN.
    pub fn reset(self) {
        set_linger_zero(self.socket()).expect("set SO_LINGER 0");
        drop(self);
    }
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

/// Upgrades a raw TCP connection by hand (asserting the 101); returns the
/// socket and any bytes read after the response head.
pub async fn raw_upgrade(addr: SocketAddr, target: &str) -> (TcpStream, Vec<u8>) {
    let mut tcp = bounded("TCP connect", natter_runtime::connect(addr))
        .await
        .expect("TCP connect");
    let _ = tcp.set_nodelay(true);
    bounded(
        "write the upgrade",
        tcp.write_all(upgrade_request(target, "").as_bytes()),
    )
    .await
    .expect("write the upgrade");
    let resp = read_http_head(&mut tcp).await;
    assert_eq!(resp.status, 101, "{}", resp.head);
    (tcp, resp.leftover)
}

/// A client-to-server WebSocket frame; `mask: None` leaves it unmasked
/// (which RFC 6455 forbids from a client).
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
    }
    out
}

/// Makes closing `socket` send a TCP reset (`SO_LINGER` {on, 0}).
pub fn set_linger_zero(socket: &TcpStream) -> std::io::Result<()> {
    natter_runtime::reset_on_close(socket)
}

/// A small seeded PRNG (xorshift64*), so garbage is reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A WebSocket client on a raw socket, for clients no WebSocket stack
/// would be: it never answers pings by itself, and can stop in the middle
/// of a frame. Frames it sends are masked (as RFC 6455 requires).
pub struct RawWs {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Upgrades by hand and reads the welcome.
    pub async fn connect(addr: SocketAddr, target: &str) -> (RawWs, Value) {
        let (tcp, buf) = raw_upgrade(addr, target).await;
        let mut ws = RawWs { tcp, buf };
        let welcome = ws.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let frame = client_frame(opcode, true, payload, Some([0x5a, 0xa5, 0x3c, 0xc3]));
        bounded("write a frame", self.tcp.write_all(&frame))
            .await
            .expect("write a frame");
    }

    /// The next frame, or `None` at EOF or on a reset (bounded).
    pub async fn next_frame(&mut self) -> Option<RawFrame> {
        use futures::AsyncReadExt;
        let deadline = Instant::now() + RECV_TIMEOUT;
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..MAX_FRAMES {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.tcp.read(&mut chunk)).await {
                None => panic!("no complete frame within {RECV_TIMEOUT:?}"),
                Some(Ok(0)) | Some(Err(_)) => return None,
                Some(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        panic!("no complete frame after {MAX_FRAMES} reads")
    }

    /// The next text frame as JSON (pings are skipped, never answered).
    pub async fn next_json(&mut self) -> Value {
        for _ in 0..MAX_FRAMES {
            match self.next_frame().await {
                Some(f) if f.opcode == 0x1 => {
                    return serde_json::from_slice(&f.payload).expect("a JSON text frame");
                }
                Some(f) if f.opcode == 0x9 || f.opcode == 0xa => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        panic!("no text frame among {MAX_FRAMES} frames")
    }

    /// Sends a request (with an id) and reads up to its reply.
    pub async fn request(&mut self, req: Value) -> Value {
        self.send(0x1, req.to_string().as_bytes()).await;
        for _ in 0..MAX_FRAMES {
            let v = self.next_json().await;
            if is_reply(&v) {
                assert_eq!(v["id"], req["id"], "reply to {req}: {v}");
                return v;
            }
        }
        panic!("no reply to {req}")
    }

    /// Reads to the close frame, skipping everything else (and answering
    /// nothing); returns the close code and reason, `None` if the stream
    /// ended first, and how many pings went unanswered.
    pub async fn read_to_close(&mut self) -> (Option<(u16, String)>, usize) {
        let mut pings = 0;
        for _ in 0..MAX_FRAMES {
            match self.next_frame().await {
                None => return (None, pings),
                Some(f) if f.opcode == 0x8 => {
                    let code = f
                        .payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[]));
                    return (Some((code, reason.into_owned())), pings);
                }
                Some(f) if f.opcode == 0x9 => pings += 1,
                Some(_) => continue,
            }
        }
        panic!("no close frame among {MAX_FRAMES} frames")
    }
}

/// Parses one unmasked server frame off the front of `buf`: the frame and
/// the bytes it took, or `None` if it is not complete yet.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    let frame = RawFrame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload,
    };
    Some((frame, at))
}
