//! A connection to a natter server.
//!
//! One background task reads the socket and routes each frame: a reply
//! whose id a caller is awaiting goes to that caller's one-shot channel
//! (asyncio: a Future whose result another task sets); everything else —
//! events, and replies nobody awaits — goes to the `incoming` queue.
//!
//! [`Client::connect_lean`] is the light alternative for load tests: no
//! background task and no queue (a queue preallocates its slots, which adds
//! up over tens of thousands of connections); the caller reads the frames.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_channel::Receiver;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes, http};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures::StreamExt;
use futures::channel::oneshot;
use futures_rustls::TlsConnector;
use futures_rustls::rustls::ClientConfig;
use natter_protocol::{Envelope, Id, Reply, Request, ServerMessage, Welcome};
use rustls_pki_types::ServerName;

/// Re-exported so `natter::client::CloseInfo` keeps naming it.
pub use crate::close::CloseInfo;
use crate::error::ClientError;
use crate::transport::Transport;

/// Events and unclaimed replies buffered before the reader waits for the
/// application (TCP backpressure then reaches the server).
const INCOMING_BUFFER: usize = 4096;

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Local address to connect from (spreads load tests over 127.0.0.x).
    pub source_ip: Option<IpAddr>,
    /// TLS settings for `wss://` URLs (see [`crate::tls::client_config`]);
    /// `None` trusts the public web roots.
    pub tls: Option<Arc<ClientConfig>>,
}

type Pending = Arc<Mutex<HashMap<Id, oneshot::Sender<ServerMessage>>>>;

pub struct Client {
    sink: async_lock::Mutex<WebSocketSender<Transport>>,
    pending: Pending,
    incoming: Receiver<ServerMessage>,
    closed: Arc<OnceLock<CloseInfo>>,
    next_id: AtomicI64,
    welcome: Welcome,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws?nick=…`) and waits for `welcome`.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        Self::start(open(url, options, 8 * 1024).await?).await
    }

    /// Connects like [`Client::connect`] but hands back the two halves of
    /// the socket instead of starting a background reader: no task, no
    /// queue, no reply routing. The caller reads frames itself. Load tests
    /// with tens of thousands of connections use it.
    pub async fn connect_lean(
        url: &str,
        options: &ConnectOptions,
    ) -> Result<LeanConnection, ClientError> {
        let (sink, mut stream) = open(url, options, LEAN_READ_BUFFER).await?.split();
        let welcome = read_welcome(&mut stream).await?;
        Ok(LeanConnection {
            welcome,
            sender: LeanSender { sink, next_id: 1 },
            receiver: LeanReceiver {
                stream,
                closed: None,
            },
        })
    }

    async fn start(ws: WebSocketStream<Transport>) -> Result<Client, ClientError> {
        let (sink, mut stream) = ws.split();
        let welcome = read_welcome(&mut stream).await?;
        let pending: Pending = Arc::default();
        let closed: Arc<OnceLock<CloseInfo>> = Arc::default();
        let (tx, incoming) = async_channel::bounded(INCOMING_BUFFER);
        natter_runtime::spawn(read_loop(stream, pending.clone(), tx, closed.clone()));
        Ok(Client {
            sink: async_lock::Mutex::new(sink),
            pending,
            incoming,
            closed,
            next_id: AtomicI64::new(1),
            welcome,
        })
    }
    /// The server's `welcome`: our nick, the server's limits.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let id = Id::Int(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        if let Err(e) = self.send_with_id(request, Some(id.clone())).await {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        match rx.await {
            Ok(ServerMessage::Ok(ok)) => Ok(ok.reply),
            Ok(ServerMessage::Error(err)) => Err(ClientError::Request {
                code: err.code,
                message: err.message,
            }),
            Ok(other) => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
            Err(_) => Err(ClientError::Closed(self.close_info())),
        }
    }

    /// Sends a request without waiting; its reply arrives on [`Client::incoming`].
    /// Returns the id it was given.
    pub async fn send(&self, request: Request) -> Result<Id, ClientError> {
        let id = Id::Int(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send_with_id(request, Some(id.clone())).await?;
        Ok(id)
    }

    async fn send_with_id(&self, request: Request, id: Option<Id>) -> Result<(), ClientError> {
        let text = Envelope { request, id }.to_json();
        self.send_text(text).await
    }

    /// Sends one raw text frame (for tools that craft their own JSON).
    pub async fn send_text(&self, text: String) -> Result<(), ClientError> {
        let mut sink = self.sink.lock().await;
        sink.send(Message::text(text)).await.map_err(|e| match e {
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                ClientError::Closed(self.close_info())
            }
            other => ClientError::Send(other.to_string()),
        })
    }

    /// Events and unclaimed replies, in arrival order. Ends when the
    /// connection closes; [`Client::close_info`] then tells why.
    pub fn incoming(&self) -> Receiver<ServerMessage> {
        self.incoming.clone()
    }

    /// The next event or unclaimed reply, or `None` once closed.
    pub async fn next(&self) -> Option<ServerMessage> {
        self.incoming.recv().await.ok()
    }

    /// How the server closed the connection, once it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.closed.get().cloned()
    }

    /// Says goodbye with close code 1000 and waits (briefly) for the
    /// server's answer.
    pub async fn close(&self) {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        {
            let mut sink = self.sink.lock().await;
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let drain = async { while self.incoming.recv().await.is_ok() {} };
        let _ = natter_runtime::timeout(Duration::from_secs(5), drain).await;
    }
}

/// Routes every frame the server sends until the connection ends.
async fn read_loop(
    mut stream: WebSocketReceiver<Transport>,
    pending: Pending,
    incoming: async_channel::Sender<ServerMessage>,
    closed: Arc<OnceLock<CloseInfo>>,
) {
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                let _ = closed.set(frame.map(info).unwrap_or(CloseInfo {
                    code: 1005,
                    reason: String::new(),
                }));
                continue; // tungstenite answers; the stream ends next
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = closed.set(CloseInfo {
                    code: 1006,
                    reason: e.to_string(),
                });
                break;
            }
        };
        let message: ServerMessage = match serde_json::from_str(&text) {
            Ok(message) => message,
            Err(e) => {
                log::warn!("ignoring a frame the client cannot decode ({e}): {text}");
                continue;
            }
        };
        let id = match &message {
            ServerMessage::Ok(ok) => ok.id.clone(),
            ServerMessage::Error(err) => err.id.clone(),
            _ => None,
        };
        let waiter = id.and_then(|id| lock(&pending).remove(&id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(message);
            }
            None => {
                if incoming.send(message).await.is_err() {
                    // Nobody listens for events; keep routing replies.
                }
            }
        }
    }
    let _ = closed.set(CloseInfo {
        code: 1006,
        reason: "connection lost".into(),
    });
    incoming.close();
    lock(&pending).clear();
}

fn info(frame: CloseFrame) -> CloseInfo {
    CloseInfo {
        code: frame.code.into(),
        reason: frame.reason.to_string(),
    }
}

/// Read buffer of a lean connection. tungstenite zero-fills the free part
/// of its read buffer before every read, so a small buffer is cheaper when
/// frames are small (chat events are a few hundred bytes); larger frames
/// still fit, the buffer grows for them.
const LEAN_READ_BUFFER: usize = 2048;

/// Opens the TCP connection, the TLS session for `wss://`, and performs
/// the WebSocket upgrade.
async fn open(
    url: &str,
    options: &ConnectOptions,
    read_buffer: usize,
) -> Result<WebSocketStream<Transport>, ClientError> {
    let target = resolve(url)?;
    let addr = target.addr;
    let stream = match options.source_ip {
        Some(ip) => natter_runtime::connect_from(ip, addr).await,
        None => natter_runtime::connect(addr).await,
    }
    .map_err(|source| ClientError::Unreachable {
        addr: addr.to_string(),
        source,
    })?;
    let _ = stream.set_nodelay(true);
    let stream = if target.tls {
        let config = match &options.tls {
            Some(config) => config.clone(),
            None => crate::tls::client_config(None)?,
        };
        let name = ServerName::try_from(target.host.clone()).map_err(|e| ClientError::BadUrl {
            url: url.to_owned(),
            why: format!("{}: {e}", target.host),
        })?;
        let tls = TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| ClientError::Tls(format!("with {}: {e}", target.host)))?;
        Transport::Tls(Box::new(tls))
    } else {
        Transport::Plain(stream)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(8 * 1024)
        // Server frames (a join reply with history) can be large.
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _response) = async_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) if response.status() == 503 => ClientError::ServerFull,
            WsError::Http(response) => ClientError::Refused {
                status: response.status().as_u16(),
            },
            other => ClientError::Handshake(other.to_string()),
        })?;
    Ok(ws)
}

/// Reads the first frame, which must be the `welcome`.
async fn read_welcome(stream: &mut WebSocketReceiver<Transport>) -> Result<Welcome, ClientError> {
    match stream.next().await {
        Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
            Ok(ServerMessage::Welcome(welcome)) => Ok(welcome),
            _ => Err(ClientError::Protocol(format!(
                "expected welcome, got {text}"
            ))),
        },
        Some(Ok(Message::Close(frame))) => Err(ClientError::Closed(frame.map(info))),
        Some(Ok(other)) => Err(ClientError::Protocol(format!(
            "expected welcome, got {other:?}"
        ))),
        Some(Err(e)) => Err(ClientError::Handshake(e.to_string())),
        None => Err(ClientError::Closed(None)),
    }
}

/// A connection without a background reader (see [`Client::connect_lean`]):
/// the `welcome`, a sending half and a receiving half that can live in
/// different tasks.
pub struct LeanConnection {
    pub welcome: Welcome,
    pub sender: LeanSender,
    pub receiver: LeanReceiver,
}

/// The sending half of a [`LeanConnection`].
pub struct LeanSender {
    sink: WebSocketSender<Transport>,
    next_id: i64,
}

impl LeanSender {
    /// Reserves the next request id (1, 2, 3, …) for a request the caller
    /// encodes itself and sends with [`LeanSender::send_text`].
    pub fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a request without waiting for its reply; returns its id.
    pub async fn send(&mut self, request: Request) -> Result<Id, ClientError> {
        let id = Id::Int(self.take_id());
        let text = Envelope {
            request,
            id: Some(id.clone()),
        }
        .to_json();
        self.send_text(text).await?;
        Ok(id)
    }

    /// Sends one raw text frame (for callers that craft their own JSON).
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.sink
            .send(Message::text(text))
            .await
            .map_err(send_error)
    }

    /// Starts the closing handshake with close code 1000; the receiving
    /// half then sees the server's close frame and ends.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        self.sink
            .send(Message::Close(Some(frame)))
            .await
            .map_err(send_error)
    }
}

/// One text frame from the server, undecoded (it derefs to `str`).
pub struct TextFrame(Utf8Bytes);

impl std::ops::Deref for TextFrame {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

/// The receiving half of a [`LeanConnection`].
pub struct LeanReceiver {
    stream: WebSocketReceiver<Transport>,
    closed: Option<CloseInfo>,
}

impl LeanReceiver {
    /// The next text frame, or `None` once the connection has ended
    /// ([`LeanReceiver::close_info`] then tells how). Reading also answers
    /// the server's pings.
    pub async fn next_text(&mut self) -> Option<TextFrame> {
        while let Some(frame) = self.stream.next().await {
            match frame {
                Ok(Message::Text(text)) => return Some(TextFrame(text)),
                Ok(Message::Close(frame)) => {
                    if self.closed.is_none() {
                        self.closed = Some(frame.map(info).unwrap_or(CloseInfo {
                            code: 1005,
                            reason: String::new(),
                        }));
                    }
                    // tungstenite answers; the stream ends next.
                }
                Ok(_) => {}
                Err(e) => {
                    if self.closed.is_none() {
                        self.closed = Some(CloseInfo {
                            code: 1006,
                            reason: e.to_string(),
                        });
                    }
                    return None;
                }
            }
        }
        if self.closed.is_none() {
            self.closed = Some(CloseInfo {
                code: 1006,
                reason: "connection lost".into(),
            });
        }
        None
    }

    /// The next frame decoded as a protocol message; frames that do not
    /// decode are logged and skipped. `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<ServerMessage> {
        loop {
            let text = self.next_text().await?;
            match serde_json::from_str(&text) {
                Ok(message) => return Some(message),
                Err(e) => log::warn!(
                    "ignoring a frame the client cannot decode ({e}): {}",
                    &*text
                ),
            }
        }
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref()
    }
}

fn send_error(e: WsError) -> ClientError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => ClientError::Closed(None),
        other => ClientError::Send(other.to_string()),
    }
}

/// The map is only touched briefly and never across an await, so a std
/// mutex is the right tool; a poisoned lock still holds valid data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a URL points: the socket address, the host name (for TLS) and
/// whether the scheme asks for TLS.
struct Target {
    addr: SocketAddr,
    host: String,
    tls: bool,
}

/// Finds the socket address of a `ws://host:port/...` or
/// `wss://host:port/...` URL.
fn resolve(url: &str) -> Result<Target, ClientError> {
    let bad = |why: &str| ClientError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(bad("natter speaks ws:// and wss:// only")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("host has no address"))?;
    Ok(Target {
        addr,
        host: host.to_owned(),
        tls,
    })
}
