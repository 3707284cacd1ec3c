//! Helpers for natter's end-to-end tests.
//!
//! Every test starts its own in-process server on 127.0.0.1 with port 0
//! ([`start`]), talks to it over real sockets with the raw WebSocket
//! [`Client`] below (or [`http_exchange`] for HTTP-level checks), and never
//! waits on a clock for something it could await: every read is bounded by
//! [`RECV_TIMEOUT`] and fails with a message saying what was expected. The
//! one wait that re-checks, [`wait_until`] (used by
//! [`TestServer::wait_stats`]), exists because the server offers no
//! notification when its counters change.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use natter_runtime::{JoinHandle, TcpStream, timeout};
use serde_json::{Value, json};

pub use natter_server::{Config, Server, ServerHandle, Stats};
pub use serde_json;

pub mod hostile;
pub mod wait;

pub use wait::{SETTLE, wait_until};

/// How long any single read, write or connect may take before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Most frames read while looking for one particular frame.
pub const MAX_FRAMES: usize = 100_000;

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// An in-process server running on its own task.
pub struct TestServer {
    pub handle: ServerHandle,
    run: Option<JoinHandle<usize>>,
}

/// Binds `config` (callers start from [`Config::local`]) and spawns `run()`.
pub async fn start(config: Config) -> TestServer {
    let server = Server::bind(config).await.expect("server binds");
    let handle = server.handle();
    let run = natter_runtime::spawn(async move { server.run().await.expect("server runs") });
    TestServer {
        handle,
        run: Some(run),
    }
}

impl TestServer {
    /// `ws://127.0.0.1:PORT/ws`
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The chat URL with `?nick=` (the value is used as given, unencoded).
    pub fn url_nick(&self, nick: &str) -> String {
        format!("{}?nick={nick}", self.handle.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub async fn stats(&self) -> Stats {
        self.handle.stats().await
    }

    /// Connects a client with the given nick and checks the welcome names it.
    pub async fn client(&self, nick: &str) -> Client {
        let (client, welcome) = Client::connect(&self.url_nick(nick)).await;
        assert_eq!(welcome["nick"], nick, "welcome: {welcome}");
        assert!(welcome.get("nick_error").is_none(), "welcome: {welcome}");
        client
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits (bounded) for `run()` to return; returns its value (how many
    /// connections were cut off). Call after [`TestServer::trigger_shutdown`].
    pub async fn join(&mut self) -> usize {
        let run = self.run.take().expect("server run already awaited");
        timeout(Duration::from_secs(20), run)
            .await
            .expect("Server::run did not return within 20 s of shutdown")
    }

    /// Shuts the server down and waits (bounded) for `run()` to return.
    pub async fn stop(mut self) -> usize {
        self.trigger_shutdown();
        self.join().await
    }

    /// Waits (bounded by [`SETTLE`]) until the server's stats satisfy
    /// `cond`, and returns them; on time-out the panic shows `what` and the
    /// last stats seen.
    pub async fn wait_stats(&self, what: &str, mut cond: impl FnMut(&Stats) -> bool) -> Stats {
        wait_until(what, SETTLE, async || {
            let s = self.stats().await;
            if cond(&s) { Ok(s) } else { Err(s) }
        })
        .await
    }

    /// Waits until the server holds no slot, no task and no user.
    pub async fn assert_idle(&self) {
        let s = self
            .wait_stats("server back to idle (no slot, task or user)", |s| {
                s.slots_in_use == 0 && s.tasks == 0 && s.registry.users == 0
            })
            .await;
        assert_eq!(s.registry.memberships, 0, "stats: {s:?}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that failed halfway must not leave its server serving.
        self.handle.shutdown();
    }
}

/// Bounds a future by [`RECV_TIMEOUT`], failing with `what`.
pub async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match timeout(RECV_TIMEOUT, fut).await {
        Some(out) => out,
        None => panic!("timed out after {RECV_TIMEOUT:?}: {what}"),
    }
}

/// Awaits a spawned task's result with a bound.
pub async fn join_task<T>(what: &str, task: JoinHandle<T>) -> T {
    match timeout(Duration::from_secs(60), task).await {
        Some(out) => out,
        None => panic!("task did not finish within 60 s: {what}"),
    }
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

/// The `host:port` of a `ws://host:port/...` URL.
pub fn addr_of(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("ws://").expect("a ws:// URL");
    let authority = rest.split('/').next().expect("URL has an authority");
    authority.parse().expect("URL authority is an IP:port")
}

/// A raw WebSocket test client speaking JSON text frames.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: i64,
}

impl Client {
    /// Connects (the URL may carry `?nick=`) and reads the welcome.
    pub async fn connect(url: &str) -> (Client, Value) {
        let mut client = Client::connect_raw(url).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
        (client, welcome)
    }

    /// Connects and completes the upgrade without reading anything.
    pub async fn connect_raw(url: &str) -> Client {
        match Client::try_connect(url).await {
            Ok(client) => client,
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        }
    }

    /// Connects, returning the error instead of panicking.
    pub async fn try_connect(url: &str) -> Result<Client, String> {
        Client::connect_via(None, url).await
    }

    /// Connects from `local` when given (to spread many connections over
    /// several loopback source addresses), else from any address.
    pub async fn connect_via(local: Option<std::net::IpAddr>, url: &str) -> Result<Client, String> {
        let addr = addr_of(url);
        let fut = async {
            let tcp = match local {
                Some(ip) => natter_runtime::connect_from(ip, addr).await,
                None => natter_runtime::connect(addr).await,
            }
            .map_err(|e| format!("TCP connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (ws, _response) = async_tungstenite::client_async(url, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            Ok::<_, String>(ws)
        };
        let ws = bounded(&format!("connect to {url}"), fut).await?;
        Ok(Client {
            ws,
            next_id: 1_000_000,
        })
    }

    /// Sends one WebSocket message, bounded.
    pub async fn send_raw(&mut self, message: Message) {
        match bounded("send a frame", self.ws.send(message)).await {
            Ok(()) => {}
            Err(e) => panic!("send failed: {e}"),
        }
    }

    /// Sends one WebSocket message, bounded, returning a failure instead of
    /// panicking (for sends the server may legitimately cut short).
    pub async fn try_send_raw(&mut self, message: Message) -> Result<(), String> {
        match timeout(RECV_TIMEOUT, self.ws.send(message)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("send did not finish within {RECV_TIMEOUT:?}")),
        }
    }

    /// Sends a message without flushing (for pipelining); call [`Client::flush`].
    pub async fn feed_raw(&mut self, message: Message) {
        match bounded("feed a frame", self.ws.feed(message)).await {
            Ok(()) => {}
            Err(e) => panic!("send failed: {e}"),
        }
    }

    pub async fn flush(&mut self) {
        match bounded("flush", self.ws.flush()).await {
            Ok(()) => {}
            Err(e) => panic!("flush failed: {e}"),
        }
    }

    /// Sends a raw frame (masked by tungstenite, otherwise as given).
    pub async fn send_frame(&mut self, frame: Frame) {
        self.send_raw(Message::Frame(frame)).await;
    }

    /// Sends one data frame of a (possibly fragmented) text message: the
    /// `first` fragment has the text opcode, later ones are continuations;
    /// `fin` marks the last.
    pub async fn send_fragment(&mut self, payload: Vec<u8>, first: bool, fin: bool) {
        let opcode = if first {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        self.send_frame(Frame::message(payload, opcode, fin)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Next WebSocket message of any kind, bounded; `None` when the stream
    /// ended. Panics on a read error.
    pub async fn next_message(&mut self) -> Option<Message> {
        match bounded("read a WebSocket message", self.ws.next()).await {
            None => None,
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => panic!("WebSocket read error: {e}"),
        }
    }

    /// Next text frame as JSON (pings and pongs skipped), bounded. Panics
    /// on a close, a binary frame or the end of the stream.
    pub async fn recv(&mut self) -> Value {
        for _ in 0..MAX_FRAMES {
            match self.next_message().await {
                Some(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}"));
                }
                Some(Message::Ping(_)) | Some(Message::Pong(_)) => continue,
                Some(Message::Close(c)) => panic!("expected a text frame, got close {c:?}"),
                Some(other) => panic!("expected a text frame, got {other:?}"),
                None => panic!("expected a text frame, the stream ended"),
            }
        }
        panic!("no text frame among {MAX_FRAMES} frames")
    }

    /// Reads frames until one satisfies `pred`; returns it and the frames
    /// skipped on the way. Bounded by `max` frames.
    pub async fn recv_until(
        &mut self,
        max: usize,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        for _ in 0..max {
            let v = self.recv().await;
            if pred(&v) {
                return (v, skipped);
            }
            skipped.push(v);
        }
        panic!(
            "no matching frame within {max} frames; last ones: {:?}",
            skipped.iter().rev().take(5).collect::<Vec<_>>()
        )
    }

    /// Next frame of the given `type`, skipping (and returning) others.
    pub async fn recv_type(&mut self, kind: &str) -> (Value, Vec<Value>) {
        self.recv_until(MAX_FRAMES, |v| v["type"] == kind).await
    }

    /// A fresh integer id.
    pub fn fresh_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a request (adding an integer id if it has none), reads up to
    /// its reply and returns the reply plus the events seen before it.
    /// Panics if a reply with another id arrives first: every request has
    /// exactly one reply, in request order.
    pub async fn request(&mut self, mut req: Value) -> (Value, Vec<Value>) {
        let obj = req.as_object_mut().expect("a request is a JSON object");
        if !obj.contains_key("id") {
            let id = self.fresh_id();
            obj.insert("id".into(), json!(id));
        }
        let id = req["id"].clone();
        self.send_json(&req).await;
        self.reply_for(&id).await
    }

    /// Reads up to the next reply, which must carry `id`.
    pub async fn reply_for(&mut self, id: &Value) -> (Value, Vec<Value>) {
        let mut events = Vec::new();
        for _ in 0..MAX_FRAMES {
            let v = self.recv().await;
            if is_reply(&v) {
                assert_eq!(&v["id"], id, "expected the reply to id {id}, got {v}");
                return (v, events);
            }
            events.push(v);
        }
        panic!("no reply to id {id} within {MAX_FRAMES} frames")
    }

    /// A request that must succeed; returns the ok reply.
    pub async fn ok(&mut self, req: Value) -> Value {
        let (reply, _) = self.request(req.clone()).await;
        assert_eq!(reply["type"], "ok", "request {req} got {reply}");
        reply
    }

    /// A request that must fail; returns the error code.
    pub async fn err(&mut self, req: Value) -> String {
        let (reply, _) = self.request(req.clone()).await;
        assert_eq!(reply["type"], "error", "request {req} got {reply}");
        assert!(
            reply["message"].is_string(),
            "error without message: {reply}"
        );
        reply["code"].as_str().expect("error code").to_owned()
    }

    /// Joins a room and returns the ok reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "join", "room": room})).await
    }

    /// Says `text` in `room` and returns the new message's seq.
    pub async fn say(&mut self, room: &str, text: &str) -> u64 {
        let reply = self
            .ok(json!({"type": "say", "room": room, "text": text}))
            .await;
        reply["seq"].as_u64().expect("say reply has a seq")
    }

    /// Reads until a close frame, through whatever text frames are still
    /// queued (returned), then until the stream ends. Returns the close
    /// code and reason. Panics if the stream ends without a close frame.
    pub async fn read_until_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut texts: Vec<Value> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..MAX_FRAMES {
            assert!(Instant::now() < deadline, "no close frame within 30 s");
            match bounded("read until a close frame", self.ws.next()).await {
                Some(Ok(Message::Text(t))) => texts.push(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
                ),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = match frame {
                        Some(CloseFrame { code, reason }) => (u16::from(code), reason.to_string()),
                        None => (1005, String::new()),
                    };
                    self.drain_after_close().await;
                    return (code, reason, texts);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!(
                    "read error before a close frame: {e} (after {} text frames)",
                    texts.len()
                ),
                None => panic!(
                    "stream ended without a close frame (after {} text frames)",
                    texts.len()
                ),
            }
        }
        panic!("no close frame within {MAX_FRAMES} frames")
    }

    /// Reads until a close frame (skipping text frames) and returns its
    /// code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let (code, reason, _) = self.read_until_close().await;
        (code, reason)
    }

    /// After a close frame: let tungstenite send its answer and see EOF.
    async fn drain_after_close(&mut self) {
        for _ in 0..100 {
            match timeout(RECV_TIMEOUT, self.ws.next()).await {
                Some(Some(Ok(_))) => continue,
                _ => return,
            }
        }
    }

    /// Closes the connection from the client side (close 1000) and waits
    /// for the server's answer and EOF.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        let _ = timeout(RECV_TIMEOUT, self.ws.close(Some(frame))).await;
        self.drain_after_close().await;
    }
}

/// Whether a server frame is a reply (`ok` or `error`) rather than an event.
pub fn is_reply(v: &Value) -> bool {
    v["type"] == "ok" || v["type"] == "error"
}

/// The `message` events among `frames`.
pub fn messages(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|v| v["type"] == "message").collect()
}

/// The `presence` events among `frames`.
pub fn presences(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|v| v["type"] == "presence").collect()
}

/// Checks a `message` event's fields.
pub fn assert_message(v: &Value, room: &str, seq: u64, from: &str, text: &str) {
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["room"], room, "{v}");
    assert_eq!(v["seq"], seq, "{v}");
    assert_eq!(v["from"], from, "{v}");
    assert_eq!(v["text"], text, "{v}");
    assert_plausible_ts(&v["ts"]);
}

/// A server timestamp: Unix milliseconds, after 2020 and not in the future
/// by more than a day.
pub fn assert_plausible_ts(ts: &Value) {
    let ts = ts
        .as_u64()
        .unwrap_or_else(|| panic!("ts is not an integer: {ts}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ts > 1_577_836_800_000, "ts {ts} is before 2020");
    assert!(ts < now + 86_400_000, "ts {ts} is in the future");
}

/// A presence event's (room, event, nick, old) as strings.
pub fn presence_of(v: &Value) -> (String, String, String, Option<String>) {
    assert_eq!(v["type"], "presence", "{v}");
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_owned()
    };
    (
        s("room"),
        s("event"),
        s("nick"),
        v.get("old").and_then(Value::as_str).map(str::to_owned),
    )
}

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

/// An HTTP response head read off a raw socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub head: String,
    /// Bytes read after the head (the start of the body, or early frames).
    pub leftover: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A well-formed upgrade request for `target` with extra header lines.
pub fn upgrade_request(target: &str, extra_headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    )
}

/// Sends `request` bytes on a fresh TCP connection and reads the response
/// head (bounded in time and size).
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut tcp = bounded("TCP connect", natter_runtime::connect(addr))
        .await
        .expect("TCP connect");
    bounded("write the HTTP request", tcp.write_all(request))
        .await
        .expect("write the HTTP request");
    read_http_head(&mut tcp).await
}

/// Reads an HTTP response head off `tcp` (bounded in time and size).
pub async fn read_http_head(tcp: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(buf.len() < 64 * 1024, "response head over 64 KiB");
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match timeout(left, tcp.read(&mut chunk)).await {
            None => panic!(
                "no complete HTTP response head within {RECV_TIMEOUT:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Some(Ok(n)) => n,
            Some(Err(e)) => panic!(
                "read error before a full response head: {e}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        };
        if n == 0 {
            panic!(
                "connection closed before a full response head; got {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert_eq!(version, "HTTP/1.1", "status line: {status_line:?}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        head,
        leftover: buf[end + 4..].to_vec(),
    }
}
