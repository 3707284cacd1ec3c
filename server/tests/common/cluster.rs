//! What the multi-node tests (`cluster.rs`, `cluster_failures.rs`) share:
//! starting `natter-server` nodes on one [`Redis`] (PROTOCOL.md guarantee
//! 8), the plain-HTTP answers a node gives (an upgrade refused with 503,
//! `/healthz`), and members that pipeline says into a room while they
//! record everything the room tells them ([`member`]), to compare what
//! members on different nodes saw.

use std::process::Command;
use std::time::Duration;

use async_tungstenite::tungstenite::{self, Message};
use futures::channel::mpsc as mpsc_async;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use natter_runtime::timeout;
use serde_json::{Value, json};

use super::redis::Redis;
use super::{BOUND, MAX_FRAMES, ServerProcess, Ws};

/// The environment variables of the cluster options: removed from every
/// node's environment so that only its command line counts (a developer's
/// shell may have them set).
pub const CLUSTER_ENV: [&str; 3] = ["NATTER_BROKER", "NATTER_NODE_TIMEOUT", "NATTER_NODE_ID"];

/// The reason of the close a node sends when it lost its broker.
pub const TRY_AGAIN_LATER: (u16, &str) = (1013, "try again later");

/// A `natter-server` command for a node of the chat on `broker`: on
/// 127.0.0.1, port 0, rate limiting off (these tests pipeline), with
/// `args` after the rest.
pub fn node_command(broker: &str, args: &[&str]) -> Command {
    let mut cmd = bare_node_command(args);
    cmd.args(["--broker", broker]);
    cmd
}

/// [`node_command`] without `--broker` (for a test that passes the broker
/// another way).
pub fn bare_node_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-server"));
    for var in CLUSTER_ENV {
        cmd.env_remove(var);
    }
    cmd.args(["--listen", "127.0.0.1:0", "--rate", "0"])
        .args(args);
    cmd
}

/// Starts a node on `redis` and returns once it printed its listening
/// line, which it does only once it has reached the broker: from then on
/// it serves as part of the chat.
pub fn start_node(redis: &Redis, args: &[&str]) -> ServerProcess {
    ServerProcess::spawn(node_command(&redis.url(), args))
}

/// `n` nodes on `redis`, each with `args`.
pub fn start_nodes(redis: &Redis, n: usize, args: &[&str]) -> Vec<ServerProcess> {
    (0..n).map(|_| start_node(redis, args)).collect()
}

/// The `host:port` of a node's `ws://` URL.
fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {url:?}"))
}

/// Tries a WebSocket upgrade on `url` (a node's `ws://…/ws`, with a query
/// if wanted): the connection and its welcome, or the HTTP status of the
/// refusal. Anything else (no TCP connection, no answer within
/// [`BOUND`]) panics: a node that lost its broker still answers.
pub async fn try_upgrade(url: &str) -> Result<(Ws, Value), u16> {
    let step = async {
        let tcp = natter_runtime::connect(addr_of(url))
            .await
            .unwrap_or_else(|e| panic!("TCP connect to {url}: {e}"));
        let _ = tcp.set_nodelay(true);
        match async_tungstenite::client_async(url, tcp).await {
            Ok((ws, _)) => {
                let mut ws = Ws { ws };
                let welcome = ws.next().await;
                assert_eq!(welcome["type"], "welcome", "the first frame: {welcome}");
                Ok((ws, welcome))
            }
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("upgrade on {url}: neither accepted nor refused with a status: {e}"),
        }
    };
    // Boxed: the handshake's future is tens of KiB in a debug build, and
    // every test future that awaits this one would carry it on the stack.
    timeout(BOUND, Box::pin(step))
        .await
        .unwrap_or_else(|| panic!("no answer to an upgrade on {url} within {BOUND:?}"))
}

/// The status of a plain `GET path` on the node at `url`.
pub async fn http_status(url: &str, path: &str) -> u16 {
    let addr = addr_of(url);
    let exchange = async {
        let mut tcp = natter_runtime::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send GET {path}: {e}"));
        // The status line is all we need: read until it is complete.
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 64 * 1024 {
            match tcp.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read the answer to GET {path}: {e}"),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        head.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP/1.1 status line for GET {path}: {head:?}"))
    };
    timeout(BOUND, Box::pin(exchange))
        .await
        .unwrap_or_else(|| panic!("no answer to GET {path} on {addr} within {BOUND:?}"))
}

// ---------------------------------------------------------------------------
// Members that record a room
// ---------------------------------------------------------------------------

/// The text of the message that ends every [`member`]'s recording: the
/// test says it once every sender has finished.
pub const SENTINEL: &str = "that is all";

/// The text of say number `j` of the sender `nick`.
pub fn say_text(nick: &str, j: usize) -> String {
    format!("{nick} #{j}")
}

/// What a member task reports to the test while it runs.
#[derive(Debug)]
pub enum Progress {
    /// One of its says got its `ok`.
    Ok,
    /// It will send and be acknowledged no more: every say got its `ok`,
    /// or its socket ended. Sent once by each member.
    Finished(String),
}

/// How a member's recording ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// It heard the [`SENTINEL`] message; the connection is still open.
    Sentinel,
    /// The server closed the connection with this code and reason.
    Closed(u16, String),
    /// The socket ended without a close frame, or with something that was
    /// not a text frame: what came.
    Dropped(String),
}

/// Everything one member of a room saw.
#[derive(Debug)]
pub struct Transcript {
    pub nick: String,
    /// The room's `message` and `presence` events, in the order received.
    pub events: Vec<Value>,
    /// `(seq, j)` of each `ok` to its say number `j`, in reply order.
    pub acked: Vec<(u64, usize)>,
    /// Seqs whose `ok` came before the sender had its own `message` of
    /// that seq (guarantee 2 as the cluster keeps it: none).
    pub ok_before_message: Vec<u64>,
    /// Any other reply or event (errors, whispers…): none expected.
    pub unexpected: Vec<Value>,
    pub ending: Ending,
}

impl Transcript {
    /// The room's message events, as `(seq, from, text)`.
    pub fn messages(&self) -> Vec<(u64, String, String)> {
        self.events
            .iter()
            .filter(|e| e["type"] == "message")
            .map(|e| {
                (
                    e["seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{}: no seq in {e}", self.nick)),
                    e["from"].as_str().unwrap_or_default().to_owned(),
                    e["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The seqs of [`Transcript::messages`].
    pub fn seqs(&self) -> Vec<u64> {
        self.messages().into_iter().map(|m| m.0).collect()
    }
}

/// A member of `room` (already joined on `c`) that pipelines `says` says
/// (0 for a member that only listens) — without waiting for replies, while
/// it reads — and records every event of the room until it hears the
/// [`SENTINEL`] or its socket ends. Reports on `progress` (see
/// [`Progress`]). Every read is bounded by [`BOUND`], the frames by
/// [`MAX_FRAMES`]; a read that times out ends the recording as
/// [`Ending::Dropped`].
pub async fn member(
    nick: String,
    c: Ws,
    room: &'static str,
    says: usize,
    progress: mpsc_async::UnboundedSender<Progress>,
) -> Transcript {
    let (mut sink, mut stream) = c.ws.split();
    let sender = nick.clone();
    let send = async move {
        for j in 0..says {
            let say = json!({"type": "say", "room": room, "text": say_text(&sender, j), "id": j});
            match timeout(BOUND, sink.send(Message::text(say.to_string()))).await {
                Some(Ok(())) => {}
                // The socket is gone: the rest is never sent.
                Some(Err(_)) | None => break,
            }
        }
        sink
    };
    let read = async {
        let mut t = Transcript {
            nick: nick.clone(),
            events: Vec::new(),
            acked: Vec::new(),
            ok_before_message: Vec::new(),
            unexpected: Vec::new(),
            ending: Ending::Dropped("no frame read".into()),
        };
        let mut finished = says == 0;
        if finished {
            let _ = progress.unbounded_send(Progress::Finished(nick.clone()));
        }
        let mut own_heard = std::collections::HashSet::new();
        for _ in 0..MAX_FRAMES {
            let text = match timeout(BOUND, stream.next()).await {
                Some(Some(Ok(Message::Text(text)))) => text,
                Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Some(Some(Ok(Message::Close(frame)))) => {
                    t.ending = match frame {
                        Some(f) => Ending::Closed(f.code.into(), f.reason.to_string()),
                        None => Ending::Closed(1005, String::new()),
                    };
                    break;
                }
                None => {
                    t.ending = Ending::Dropped(format!("nothing within {BOUND:?}"));
                    break;
                }
                other => {
                    t.ending = Ending::Dropped(format!("{other:?}"));
                    break;
                }
            };
            let v: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("{nick}: not JSON ({e}): {text}"));
            match v["type"].as_str() {
                Some("message" | "presence") if v["room"] == room => {
                    let sentinel = v["type"] == "message" && v["text"] == SENTINEL;
                    if v["type"] == "message"
                        && v["from"] == nick.as_str()
                        && let Some(seq) = v["seq"].as_u64()
                    {
                        own_heard.insert(seq);
                    }
                    t.events.push(v);
                    if sentinel {
                        t.ending = Ending::Sentinel;
                        break;
                    }
                }
                Some("ok") if v["id"].is_u64() && v["seq"].is_u64() => {
                    let seq = v["seq"].as_u64().unwrap_or_default();
                    let j = usize::try_from(v["id"].as_u64().unwrap_or_default())
                        .expect("an id fits usize");
                    if !own_heard.contains(&seq) {
                        t.ok_before_message.push(seq);
                    }
                    t.acked.push((seq, j));
                    let _ = progress.unbounded_send(Progress::Ok);
                    if t.acked.len() == says && !finished {
                        finished = true;
                        let _ = progress.unbounded_send(Progress::Finished(nick.clone()));
                    }
                }
                _ => t.unexpected.push(v),
            }
        }
        if !finished {
            let _ = progress.unbounded_send(Progress::Finished(nick.clone()));
        }
        t
    };
    futures::future::join(send, read).await.1
}

/// The test's end of the members' [`Progress`] reports.
pub struct Progresses {
    rx: mpsc_async::UnboundedReceiver<Progress>,
    /// Oks reported so far, over all members.
    pub oks: usize,
    /// Members finished so far.
    pub finished: Vec<String>,
}

impl Progresses {
    /// A channel: the sender goes to each [`member`].
    pub fn channel() -> (mpsc_async::UnboundedSender<Progress>, Progresses) {
        let (tx, rx) = mpsc_async::unbounded();
        let progresses = Progresses {
            rx,
            oks: 0,
            finished: Vec::new(),
        };
        (tx, progresses)
    }

    /// Reads reports until `done` holds, each within `wait`.
    async fn until(&mut self, what: &str, wait: Duration, done: impl Fn(&Progresses) -> bool) {
        for _ in 0..MAX_FRAMES {
            if done(self) {
                return;
            }
            match timeout(wait, self.rx.next()).await {
                Some(Some(Progress::Ok)) => self.oks += 1,
                Some(Some(Progress::Finished(nick))) => self.finished.push(nick),
                Some(None) => panic!(
                    "waiting for {what}: every member ended, after {} oks, finished: {:?}",
                    self.oks, self.finished
                ),
                None => panic!(
                    "waiting for {what}: no progress within {wait:?}, after {} oks, \
                     finished: {:?}",
                    self.oks, self.finished
                ),
            }
        }
        panic!("waiting for {what}: more than {MAX_FRAMES} reports")
    }

    /// Waits until `n` oks have been reported in all.
    pub async fn until_oks(&mut self, n: usize, wait: Duration) {
        self.until(&format!("{n} oks"), wait, |p| p.oks >= n).await
    }

    /// Waits until `n` members have finished.
    pub async fn until_finished(&mut self, n: usize, wait: Duration) {
        self.until(&format!("{n} members finished"), wait, |p| {
            p.finished.len() >= n
        })
        .await
    }
}

/// Upgrades on `url` until one is accepted (a node that lost its broker
/// refuses them with 503 until it has it back), within `bound`; any
/// status but 503 fails at once.
pub async fn upgrade_when_accepted(url: &str, bound: Duration) -> (Ws, Value) {
    Box::pin(super::wait::wait_until(
        &format!("an upgrade on {url} to be accepted"),
        bound,
        async || match try_upgrade(url).await {
            Ok(accepted) => Ok(accepted),
            Err(503) => Err(503),
            Err(status) => panic!("an upgrade on {url} got {status}, not 503 or accepted"),
        },
    ))
    .await
}
