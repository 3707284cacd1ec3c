//! The connection task: one spawned task per client, from the first HTTP
//! byte to the last close frame.
//!
//! Inside the task two halves run concurrently (`futures::join`-style, not
//! two spawned tasks, so they share the task's lifetime and its slot):
//! - the **reader** reads frames, enforces the rate limit and hands each
//!   request to the [`Handler`], one after another, so replies come back in
//!   request order;
//! - the **writer** ([`crate::writer`]) drains the connection's outbox.
//!
//! Whatever ends the reader — the client's close, abuse, a slow-consumer
//! kick, shutdown — becomes a [`CloseReason`] on the outbox. The writer
//! then delivers what is still queued (unless the reason discards it), sends
//! the matching close frame, and the socket is let go with a linger.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketReceiver;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketSender, WebSocketStream};
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use futures_rustls::TlsAcceptor;
use natter_protocol::{PROTOCOL_VERSION, ServerMessage, Welcome};
use natter_runtime::{TcpStream, timeout};

use crate::broadcast;
use crate::close_reason::CloseReason;
use crate::closing::linger;
use crate::conn_id::ConnId;
use crate::frame::encode;
use crate::handler::{self, Handler};
use crate::handshake::{self, Head, HttpRefusal};
use crate::log_limit::{Note, truncate};
use crate::outbox::{Outbox, Side};
use crate::pages;
use crate::ping_filter::{PingFilter, PingLog, Wire};
use crate::rate::{FloodMeter, TokenBucket};
use crate::state::ServerState;
use crate::stream::Stream;

/// The `server` field of `welcome`.
const SERVER_NAME: &str = concat!("natter ", env!("CARGO_PKG_VERSION"));

/// Messages a reader handles before it lets other tasks run: a client that
/// keeps its socket full (pings cost almost nothing to send) must not keep
/// the executor from everyone else; reads of buffered bytes never wait.
const YIELD_EVERY: u32 = 8;

/// How long a request that arrives as shutdown begins may still take to
/// arrive in full (then it is answered: a page, or 503 for an upgrade).
const LAST_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// How long an HTTP refusal may take to be written.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the writer may take to deliver what is left and close, once
/// the reader has stopped (shutdown has its own, server-wide grace period).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted socket to the end. The caller holds its slot.
///
/// The task's size is every idle connection's memory, so only the steady
/// part (`serve`) is held inline; the one-off steps at either end — the
/// HTTP handshake, refusals, the linger — are boxed and live only while
/// they run.
pub(crate) async fn run(stream: TcpStream, peer: SocketAddr, id: ConnId, state: Arc<ServerState>) {
    let raw = stream.clone();
    let limit = state.config.handshake_timeout();
    let Some(stream) = Box::pin(secure(stream, state.tls.as_ref(), limit)).await else {
        log::debug!("connection {id} from {peer}: no TLS handshake");
        state.metrics.refused("tls");
        return;
    };
    let Some((ws, pings, nick)) = Box::pin(open(stream, &raw, peer, id, &state)).await else {
        return;
    };
    // Split here rather than in `serve`: an argument stays part of the
    // task's state for the whole call, and the stream is 288 bytes.
    let (sink, stream) = ws.split();
    serve(sink, stream, &pings, id, peer, nick.as_deref(), &state).await;
    Box::pin(linger(raw)).await;
}

/// The HTTP handshake: reads the request and answers it — a page of the
/// server's own (and the socket is let go), an HTTP error (the same), or a
/// 101, which hands back the WebSocket with the nick the client asked for.
async fn open(
    mut stream: Stream,
    raw: &TcpStream,
    peer: SocketAddr,
    id: ConnId,
    state: &ServerState,
) -> Option<(WebSocketStream<Wire>, PingLog, Option<String>)> {
    let request = {
        let read = pin!(timeout(
            state.config.handshake_timeout(),
            handshake::read_request(&mut stream)
        ));
        // Once shutdown begins, a request still has a moment to arrive:
        // plain HTTP (a health check) is answered until the process exits;
        // an upgrade is refused with 503 either way.
        let stop = pin!(async {
            state.shutdown.wait().await;
            natter_runtime::sleep(LAST_REQUEST_WAIT).await;
        });
        match select(read, stop).await {
            Either::Left((read, _)) => read,
            Either::Right(((), _)) => Some(Ok(Err(HttpRefusal::shutting_down()))),
        }
    };
    let refusal = match request {
        None => {
            log::debug!("connection {id} from {peer}: handshake timed out");
            HttpRefusal::timed_out()
        }
        Some(Err(e)) => {
            log::debug!("connection {id} from {peer}: handshake failed: {e}");
            return None;
        }
        Some(Ok(Err(refusal))) => refusal,
        Some(Ok(Ok(Head::Page { page, head_only }))) => {
            log::debug!("connection {id} from {peer}: {page:?}");
            // Bounded like the request: a client that asks for a page and
            // never reads the answer must not keep its slot.
            let answer = pages::serve(&mut stream, page, head_only, state);
            if let Some(Ok(())) = timeout(state.config.handshake_timeout(), answer).await {
                linger(raw.clone()).await;
            }
            return None;
        }
        Some(Ok(Ok(Head::Upgrade(upgrade)))) if !origin_allowed(&upgrade, peer, state) => {
            HttpRefusal::forbidden_origin()
        }
        Some(Ok(Ok(Head::Upgrade(_)))) if state.shutdown.is_triggered() => {
            HttpRefusal::shutting_down()
        }
        Some(Ok(Ok(Head::Upgrade(_)))) if !state.chat.is_up() => HttpRefusal::broker_unavailable(),
        Some(Ok(Ok(Head::Upgrade(upgrade)))) => {
            if let Err(e) = handshake::accept(&mut stream, &upgrade.key).await {
                log::debug!("connection {id} from {peer}: could not complete upgrade: {e}");
                return None;
            }
            state.metrics.accepted.inc();
            let pings = PingLog::default();
            let wire = PingFilter::new(stream, upgrade.leftover, pings.clone());
            let ws =
                WebSocketStream::from_raw_socket(wire, Role::Server, Some(state.ws_config)).await;
            return Some((ws, pings, upgrade.nick));
        }
    };
    refuse(stream, raw.clone(), id, peer, &refusal, state).await;
    None
}

/// The TLS handshake when TLS is on (bounded by `limit`); the plain socket
/// otherwise. `None`: the client did not complete it (a plain request to a
/// TLS port among them); there is nothing to answer it in.
pub(crate) async fn secure(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    limit: Duration,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(stream));
    };
    match timeout(limit, tls.accept(stream)).await {
        Some(Ok(session)) => Some(Stream::Tls(Box::new(session))),
        _ => None,
    }
}

/// The Origin rule (`crate::origin`) for this upgrade; a refused origin is
/// logged at info, once a minute per origin.
fn origin_allowed(upgrade: &handshake::Upgrade, peer: SocketAddr, state: &ServerState) -> bool {
    let Some(origin) = upgrade.origin.as_deref() else {
        return true;
    };
    if state.origins.allows(origin, &upgrade.host) {
        return true;
    }
    match state.refused_origins.note(origin, Instant::now()) {
        Note::Log => log::info!(
            "refused origin {:?} (Host {:?}, from {peer}): HTTP 403; \
             --allowed-origin lists the pages allowed (logged once a minute per origin)",
            truncate(origin),
            truncate(&upgrade.host)
        ),
        Note::Overflow => {
            log::info!("refusing origins from many distinct pages; not logging each (from {peer})")
        }
        Note::Quiet => {}
    }
    false
}

/// Answers a handshake with an HTTP error and lets the socket (`raw`
/// underneath `stream`) go.
pub(crate) async fn refuse(
    mut stream: Stream,
    raw: TcpStream,
    id: ConnId,
    peer: SocketAddr,
    refusal: &HttpRefusal,
    state: &ServerState,
) {
    state.metrics.refused(refusal.kind);
    log::debug!(
        "connection {id} from {peer}: HTTP {} {}",
        refusal.status,
        refusal.reason
    );
    // Bounded: a refusal is small, but a client that never reads could
    // still stall it behind a full window (or a TLS record).
    let answer = handshake::refuse(&mut stream, refusal);
    if let Some(Ok(())) = timeout(ANSWER_TIMEOUT, answer).await {
        linger(raw).await;
    }
}

/// Runs an upgraded connection: registers it, runs reader and writer, and
/// leaves the registry however it ends.
async fn serve(
    sink: WebSocketSender<Wire>,
    stream: WebSocketReceiver<Wire>,
    pings: &PingLog,
    id: ConnId,
    peer: SocketAddr,
    wanted_nick: Option<&str>,
    state: &ServerState,
) {
    let headroom = state.config.max_rooms_per_connection + 2;
    let outbox = Outbox::new(state.config.queue, headroom, state.backlog.clone());
    let limits = state.limits;
    // The one-off steps at either end of the connection are boxed, here and
    // below: an idle connection's task then holds only the state of the
    // steady part (about 170 bytes less per connection).
    let nick = Box::pin(
        state
            .chat
            .connect(id, wanted_nick, outbox.clone(), |nick, nick_error| {
                encode(&ServerMessage::Welcome(Welcome {
                    nick: nick.to_owned(),
                    protocol: PROTOCOL_VERSION,
                    server: SERVER_NAME.to_owned(),
                    limits,
                    nick_error,
                }))
            }),
    )
    .await;
    match &nick {
        Some(nick) => log::debug!("connection {id} from {peer}: joined as {nick}"),
        None => {
            // The broker went between the upgrade and now: no welcome, a
            // 1013 close (the reader sees the closed outbox at once).
            log::debug!("connection {id} from {peer}: broker unavailable, closing");
            outbox.close(CloseReason::TryAgainLater);
        }
    }

    let reader = async {
        let reason = read_requests(stream, pings, id, &outbox, state).await;
        if reason == CloseReason::Shutdown {
            let notice = encode(&ServerMessage::Shutdown {
                reason: "server shutting down".into(),
            });
            broadcast::last_word(&outbox, notice, reason);
        } else {
            outbox.close(reason);
        }
        // Leave the rooms before the close frame goes out: the others hear
        // the `leave` at once, and nothing more is queued for this client.
        // A `leave` is a broadcast too: when thousands drop at once, let
        // the woken writers keep up (see `crate::backlog`).
        state.backlog.wait_clear().await;
        state.chat.disconnect(id).await;
        reason
    };
    let writer = crate::writer::run(sink, &outbox, &state.metrics.deliveries);
    // The halves run in one task but each gets its own waker (that is what
    // FuturesUnordered provides): with a plain `select`, every wake-up of
    // the writer — one per frame queued for this client — also polled the
    // reader, costing a `recv` syscall that found nothing. (`map`, not an
    // `async` block around `.await`: that would hold the half twice.)
    let mut halves: FuturesUnordered<Pin<Box<dyn Future<Output = Half> + Send + '_>>> =
        FuturesUnordered::new();
    halves.push(Box::pin(reader.map(Half::Reader)));
    halves.push(Box::pin(writer.map(|()| Half::Writer)));
    match halves.next().await {
        Some(Half::Reader(reason)) => {
            log::debug!("connection {id} ({peer}): closing: {reason:?}");
            // A shutdown may take the whole grace period to deliver what is
            // queued; the server as a whole enforces that bound.
            let limit = if reason == CloseReason::Shutdown {
                state.config.shutdown_grace()
            } else {
                CLOSE_TIMEOUT
            };
            if Box::pin(timeout(limit, halves.next())).await.is_none() {
                log::info!("connection {id} ({peer}): peer did not take its last frames in time");
            }
        }
        _ => {
            // The writer ends first when the queue was abandoned (socket
            // failure, or a slow-consumer kick from another connection's
            // broadcast); the reader sees the abandoned outbox and stops.
            if let Some(Half::Reader(reason)) = halves.next().await {
                log::debug!("connection {id} ({peer}): closed: {reason:?}");
            }
        }
    }
    drop(halves);
    state
        .metrics
        .closed(outbox.reason().unwrap_or(CloseReason::Gone));
}

/// Which half of a connection finished.
enum Half {
    /// The reader stopped, and why.
    Reader(CloseReason),
    /// The writer drained the queue (or gave up on it) and sent the close.
    Writer,
}

/// Reads and handles requests until something ends the connection.
async fn read_requests(
    mut stream: WebSocketReceiver<Wire>,
    pings: &PingLog,
    id: ConnId,
    outbox: &Outbox,
    state: &ServerState,
) -> CloseReason {
    let config = &state.config;
    let handler = Handler {
        chat: &state.chat,
        metrics: &state.metrics,
        id,
        max_text_bytes: config.max_text_bytes,
        #[cfg(feature = "fault-injection")]
        panic_on_text: config.panic_on_text.as_deref(),
    };
    let mut bucket = TokenBucket::new(config.rate, config.burst);
    let mut flood = FloodMeter::default();
    let ping_interval = config.ping_interval().min(config.idle_timeout());
    let idle_timeout = config.idle_timeout();
    let mut last_heard = Instant::now();
    // Messages handled (for `YIELD_EVERY`).
    let mut handled: u32 = 0;
    let work = async {
        loop {
            // Closed by someone else (slow-consumer kick, dead socket):
            // requests still in the socket are not carried out.
            if outbox.is_closed() {
                return outbox.reason().unwrap_or(CloseReason::Gone);
            }
            // Backpressure for pipelining clients: don't read the next
            // request while this client's own replies are piling up. A
            // client that stops reading altogether is idle as far as the
            // server can tell.
            // Boxed: waiting is rare, and the timer would otherwise be part
            // of every idle connection's state.
            if !outbox.has_space()
                && Box::pin(timeout(idle_timeout, outbox.wait_for_space()))
                    .await
                    .is_none()
            {
                log::info!(
                    "connection {id}: not reading its replies for {idle_timeout:?}, closing"
                );
                return CloseReason::Idle;
            }
            let message = match timeout(ping_interval, stream.next()).await {
                None => {
                    // Silence: ping, and give up on a peer silent too long.
                    if last_heard.elapsed() >= idle_timeout {
                        log::info!("connection {id}: idle for {idle_timeout:?}, closing");
                        return CloseReason::Idle;
                    }
                    broadcast::ping(outbox);
                    continue;
                }
                Some(None) => return CloseReason::Gone,
                Some(Some(Err(e))) => return reason_for(&e, id),
                Some(Some(Ok(message))) => message,
            };
            last_heard = Instant::now();
            handled = handled.wrapping_add(1);
            if handled.is_multiple_of(YIELD_EVERY) {
                natter_runtime::yield_now().await;
            }
            let incoming = match message {
                Message::Text(text) => Ok(text),
                // A client's ping (see `crate::ping_filter`): a message like
                // any other for the rate limit.
                Message::Pong(data) if pings.was_ping() => Err(data),
                Message::Binary(_) => return CloseReason::Binary,
                Message::Close(_) => return CloseReason::PeerClosed,
                // The answer to our keepalive: it only tells us the peer
                // is there. (Pings never get here as pings.)
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            // Writers woken by earlier requests and falling behind go
            // first (see `crate::backlog`).
            state.backlog.wait_clear().await;
            let now = Instant::now();
            if !bucket.try_take(now) {
                // Over the rate: a request gets `rate_limited`, a ping no
                // pong; either counts towards flooding.
                if let Ok(text) = &incoming {
                    let refusal = handler::rate_limited(text, config.rate, config.burst);
                    broadcast::reply(id, outbox, refusal);
                }
                if flood.record(now) {
                    log::warn!("connection {id}: flooding, disconnecting");
                    return CloseReason::Flooding;
                }
                continue;
            }
            let text = match incoming {
                Ok(text) => text,
                Err(ping) => {
                    broadcast::pong(outbox, ping);
                    continue;
                }
            };
            // A bug in one request must not take the server down: the panic
            // is contained to this connection, which is closed with 1011.
            // Boxed so the (rarely running) handler does not add its size
            // to every idle connection's task.
            let handled = Box::pin(handler.handle(&text));
            match AssertUnwindSafe(handled).catch_unwind().await {
                Ok(reply) => broadcast::reply(id, outbox, reply),
                Err(_) => {
                    log::error!("connection {id}: request handler panicked; closing with 1011");
                    broadcast::reply(id, outbox, handler::internal_error(&text));
                    return CloseReason::Internal;
                }
            }
        }
    };
    let stop = async {
        let shutdown = pin!(state.closing.wait());
        let aborted = pin!(outbox.aborted(Side::Reader));
        match select(shutdown, aborted).await {
            Either::Left(_) => CloseReason::Shutdown,
            Either::Right(_) => outbox.reason().unwrap_or(CloseReason::Gone),
        }
    };
    match select(pin!(work), pin!(stop)).await {
        Either::Left((reason, _)) | Either::Right((reason, _)) => reason,
    }
}

/// Maps a WebSocket read error to how the connection closes.
fn reason_for(e: &WsError, id: ConnId) -> CloseReason {
    let reason = match e {
        WsError::Capacity(_) => CloseReason::TooBig,
        WsError::Utf8(_) => CloseReason::BadUtf8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => CloseReason::Gone,
        WsError::Protocol(_) | WsError::AttackAttempt => CloseReason::ProtocolViolation,
        _ => CloseReason::Gone,
    };
    if reason != CloseReason::Gone {
        log::info!("connection {id}: {e}; closing ({reason:?})");
    } else {
        log::debug!("connection {id}: read ended: {e}");
    }
    reason
}
