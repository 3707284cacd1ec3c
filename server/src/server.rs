//! The accept loop and the shutdown path.
//!
//! Shape of a server's life:
//! 1. [`Server::bind`] opens the listener.
//! 2. [`Server::run`] accepts sockets; each is counted against its address
//!    (or gets a 429), then gets a connection slot (or a 503) and its own
//!    spawned task, counted by a [`TaskTracker`].
//!    Beside the accept loop, with `--data-dir`, runs the publisher: it
//!    takes the history writer's commit reports and publishes what they
//!    cover (see `crate::disk_log` and `Registry::publish`).
//! 3. [`ServerHandle::shutdown`] (also what SIGINT/SIGTERM call) sets the
//!    [`Shutdown`] signal. The accept loop goes on until `run` returns, so
//!    that plain HTTP is still answered (`/healthz` says 503, and a load
//!    balancer sees the node leave) and new upgrades get 503.
//! 4. The log is flushed: every message already said is committed and
//!    published (at once in memory). Only then is `closing` set: every
//!    connection task sees it, queues its `shutdown` event behind whatever
//!    it still has to deliver, closes with 1001 and ends.
//! 5. `run` waits — at most the grace period, flush included — until the
//!    tracker counts no task, closes the log, and returns. Nothing is cut
//!    off while it still has a chance to finish, and nothing can keep the
//!    process alive past the grace.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures::FutureExt;
use futures::future::{Either, select};
use natter_runtime::{TcpListener, sleep, spawn, timeout};

use crate::backlog::Backlog;
use crate::cap::{ConnectionCap, Slot};
use crate::chat::Chat;
use crate::closing::linger;
use crate::cluster::{Cluster, ClusterConfig};
use crate::config::Config;
use crate::connection;
use crate::disk_log::DiskLog;
use crate::handshake::{Head, HttpRefusal};
use crate::log_limit::{LogLimit, Note};
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::pages;
use crate::per_ip::{IpSlot, PerIpCap};
use crate::registry::{Registry, RegistryConfig, RegistryCounts};
use crate::room_log::{Commit, MemoryLog, RoomLog, StoredRoom};
use crate::shutdown::Shutdown;
use crate::state::ServerState;
use crate::store::StoreError;
use crate::tasks::{TaskToken, TaskTracker};
use crate::writer::FRAGMENT;

/// Listen backlog: deep enough for a burst of thousands of connects.
const LISTEN_BACKLOG: i32 = 4096;
/// Sockets refused at the cap that may be answering (503) at once; past
/// this, further sockets over the cap are closed without an answer.
const MAX_REFUSING: usize = 256;
/// How long a socket over a cap may take to send its request (and finish
/// its TLS handshake) before it is answered anyway.
const REFUSAL_READ: Duration = Duration::from_secs(2);
/// A refused origin or address is logged once per this window.
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Why a server could not start.

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// An option is out of range or contradicts another.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The `--listen` address, as given.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The history store (`--data-dir`) could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker (`--broker`) could not be used at start.
    #[error(transparent)]
    Broker(#[from] crate::cluster::BrokerStartError),
    /// The TLS certificate or key (`--tls-cert`, `--tls-key`) is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Another process took over this node's `--node-id` in the broker;
    /// this one shut down rather than fight over it.
    #[error("{0}; stopped serving")]
    NodeTakenOver(String),
    /// Messages could not be made durable while serving; the server shut
    /// down rather than answer `say`s it could not keep.
    #[error("{0}; stopped serving")]
    HistoryWrite(String),
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    /// The history writer's commit reports (`--data-dir` only), for the
    /// publisher that `run` drives.
    commits: Option<async_channel::Receiver<Commit>>,
}

/// Controls a running server from outside: shut it down, read its counters.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
    local_addr: SocketAddr,
}

/// A snapshot of the server's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connection slots held (handshaking or connected).
    pub slots_in_use: usize,
    /// Connection tasks still running, refusals included.
    pub tasks: usize,
    /// Client addresses holding a connection counted by
    /// `--max-connections-per-ip` (always 0 when it is off).
    pub per_ip_addresses: usize,
    /// Users, rooms and memberships in the registry.
    pub registry: RegistryCounts,
}

impl Server {
    /// Checks the configuration and opens the listening socket.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let origins = OriginPolicy::new(&config.allowed_origins).map_err(ServerError::Config)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let listener = natter_runtime::bind(&config.listen, LISTEN_BACKLOG).map_err(|source| {
            ServerError::Bind {
                addr: config.listen.clone(),
                source,
            }
        })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let backlog = Arc::<Backlog>::default();
        let (chat, commits) = open_chat(&config, &backlog).await?;
        let state = ServerState {
            limits: config.limits(),
            chat,
            shutdown: Shutdown::new(),
            closing: Shutdown::new(),
            cap: ConnectionCap::new(config.max_connections),
            refusing: ConnectionCap::new(MAX_REFUSING),
            per_ip: PerIpCap::new(config.max_connections_per_ip),
            origins,
            refused_origins: LogLimit::new(REFUSAL_LOG_WINDOW),
            refused_addresses: LogLimit::new(REFUSAL_LOG_WINDOW),
            tasks: TaskTracker::new(),
            ws_config: websocket_config(&config),
            backlog,
            metrics: Metrics::new(),
            tls,
            config,
        };
        Ok(Server {
            listener,
            local_addr,
            state: Arc::new(state),
            commits,
        })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to shut it down and read its counters while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
            local_addr: self.local_addr,
        }
    }

    /// Serves until shutdown is requested and every connection has finished
    /// (or the grace period ran out). Returns how many tasks were cut off,
    /// or why serving had to stop (the history store failed).
    pub async fn run(self) -> Result<usize, ServerError> {
        let Server {
            listener,
            state,
            commits,
            ..
        } = self;
        // Accepting goes on until the very end: during a shutdown, plain
        // HTTP is still answered (a health check says 503) and upgrades
        // are refused with 503, rather than connections being refused.
        let stopped = Shutdown::new();
        let serving = async {
            let accepting = accept_loop(&listener, &state, &stopped);
            let winding = async {
                state.shutdown.wait().await;
                let cut_off = wind_down(&state).await;
                stopped.trigger();
                cut_off
            };
            futures::join!(accepting, winding).1
        };
        // The publisher ends when the writer thread does, which closing the
        // log (in `wind_down`) brings about, or at `stopped`; a cluster
        // node's broker session ends at `stopped` too: all of them finish.
        let broker = async {
            let cluster = state.chat.cluster()?;
            let fatal = cluster.run(&stopped).await;
            if fatal.is_some() {
                state.shutdown.trigger();
            }
            fatal
        };
        let (cut_off, failed, fatal) =
            futures::join!(serving, publish(&state, commits, &stopped), broker);
        match (failed, fatal) {
            (Some(e), _) => Err(ServerError::HistoryWrite(e)),
            (None, Some(why)) => Err(ServerError::NodeTakenOver(why)),
            (None, None) => Ok(cut_off),
        }
    }
}

/// Opens the chat: a node of the cluster behind `--broker`, or this
/// process's own registry, with history where `--data-dir` says (and the
/// history writer's commit reports, for the publisher).
async fn open_chat(
    config: &Config,
    backlog: &Arc<Backlog>,
) -> Result<(Chat, Option<async_channel::Receiver<Commit>>), ServerError> {
    if let Some(url) = &config.broker {
        let cluster = Cluster::start(
            ClusterConfig {
                url: url.clone(),
                node: config.node_name(),
                node_timeout: config.node_timeout(),
                history: config.history,
                max_rooms: config.max_rooms,
                max_rooms_per_connection: config.max_rooms_per_connection,
                queue: config.queue,
            },
            backlog.clone(),
        )
        .await?;
        return Ok((Chat::Cluster(cluster), None));
    }
    let (log, commits, stored) = open_log(config).await?;
    let registry = Registry::new(
        RegistryConfig {
            history: config.history,
            max_rooms: config.max_rooms,
            max_rooms_per_connection: config.max_rooms_per_connection,
        },
        log,
        stored,
    );
    Ok((Chat::Alone(registry), commits))
}

/// Opens where history lives: the store in `--data-dir` (on the blocking
/// pool: it reads and checks the whole file), or memory.
async fn open_log(
    config: &Config,
) -> Result<
    (
        Box<dyn RoomLog>,
        Option<async_channel::Receiver<Commit>>,
        Vec<StoredRoom>,
    ),
    ServerError,
> {
    let Some(dir) = config.data_dir.clone() else {
        return Ok((Box::new(MemoryLog), None, Vec::new()));
    };
    let (history, max_rooms) = (config.history, config.max_rooms);
    let opened = natter_runtime::spawn_blocking(move || {
        let opened = DiskLog::open(&dir, history, max_rooms);
        (dir, opened)
    })
    .await;
    let (dir, opened) = opened;
    let opened = opened?;
    let messages: usize = opened.rooms.iter().map(|r| r.history.len()).sum();
    log::info!(
        "history in {}: {} room(s), {messages} message(s) kept",
        dir.display(),
        opened.rooms.len()
    );
    Ok((Box::new(opened.log), Some(opened.commits), opened.rooms))
}

/// The publisher: publishes each commit the history writer reports, in
/// order. A failed commit is logged once and stops the server (the
/// requests it covers are answered `internal`). Returns that failure, once
/// the writer has gone.
async fn publish(
    state: &ServerState,
    commits: Option<async_channel::Receiver<Commit>>,
    stopped: &Shutdown,
) -> Option<String> {
    let commits = commits?;
    let mut failed = None;
    loop {
        // Normally the writer's hang-up ends this loop. `stopped` ends it
        // too, should the writer hang (a stuck fsync) past the shutdown:
        // what it reported by then is still taken.
        let next = {
            let recv = pin!(commits.recv());
            let stop = pin!(stopped.wait());
            match select(recv, stop).await {
                Either::Left((Ok(commit), _)) => Some(commit),
                Either::Left((Err(_), _)) => None,
                Either::Right(((), _)) => commits.try_recv().ok(),
            }
        };
        let Some(commit) = next else {
            return failed;
        };
        if let (Err(e), None) = (&commit.result, &failed) {
            log::error!("{e}: shutting down");
            failed = Some(e.to_string());
            state.shutdown.trigger();
        }
        // Messages published per lock hold: what the backlog lets a reader
        // queue before it waits (a quarter of --queue; see `crate::backlog`).
        // The wait comes before *every* chunk, a commit's first included,
        // as a reader's comes before every request: waiting only between
        // one commit's chunks let a run of small commits (each fsync
        // carries what arrived during the last one, often under a quarter
        // of --queue) pile into writers that had not taken their last
        // chunk yet, and members that read were dropped as slow consumers.
        let chunk = (state.config.queue / 4).max(1);
        loop {
            state.backlog.wait_clear().await;
            let Some(registry) = state.chat.registry() else {
                break;
            };
            if !registry.publish(&commit, chunk).await {
                break;
            }
        }
    }
}

/// After the accept loop: commit and publish what was said, then tell the
/// connections to close, and wait for them — all within the grace period.
/// Returns how many connection tasks were cut off.
async fn wind_down(state: &ServerState) -> usize {
    let grace = state.config.shutdown_grace();
    let started = Instant::now();
    if timeout(grace, state.chat.flush()).await.is_none() {
        log::warn!("shutdown grace period ({grace:?}) over before history was committed");
    }
    state.closing.trigger();
    let live = state.tasks.live();
    if live > 0 {
        log::info!("shutting down: waiting for {live} connection(s) to finish");
    }
    let left_of_grace = grace.saturating_sub(started.elapsed());
    let cut_off = if timeout(left_of_grace, state.tasks.wait_idle())
        .await
        .is_none()
    {
        let left = state.tasks.live();
        log::warn!("shutdown grace period ({grace:?}) over; {left} connection(s) cut off");
        left
    } else {
        0
    };
    // Closing the log waits for its writer to commit what it holds: bounded
    // too (by what is left of the grace, and at least a second), so a disk
    // that hangs cannot keep the process alive; the store recovers from its
    // last commit on the next start.
    let left_of_grace = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let closed = async {
        match &state.chat {
            Chat::Alone(registry) => registry.close_log().await,
            // Nobody need wait for this node's lease to lapse.
            Chat::Cluster(cluster) => cluster.leave_cluster().await,
        }
    };
    if timeout(left_of_grace, closed).await.is_none() {
        log::warn!("the history store (or broker) did not close in time; exiting without it");
    }
    if cut_off == 0 {
        log::info!("shutdown complete");
    }
    cut_off
}

impl ServerHandle {
    /// Starts a graceful shutdown; `Server::run` returns when it is done.
    pub fn shutdown(&self) {
        self.state.shutdown.trigger();
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The chat endpoint's URL.
    pub fn url(&self) -> String {
        let scheme = if self.state.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/ws", self.local_addr)
    }

    /// A snapshot of the server's counters.
    pub async fn stats(&self) -> Stats {
        Stats {
            slots_in_use: self.state.cap.in_use(),
            tasks: self.state.tasks.live(),
            per_ip_addresses: self.state.per_ip.addresses(),
            registry: self.state.chat.counts().await,
        }
    }
}

/// Accepts sockets until `stopped`; each one becomes a task.
async fn accept_loop(listener: &TcpListener, state: &Arc<ServerState>, stopped: &Shutdown) {
    let next_id = AtomicU64::new(1);
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = {
            let accept = pin!(listener.accept());
            let stop = pin!(stopped.wait());
            match select(accept, stop).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => return,
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(e) => {
                // Typically out of file descriptors: keep serving the
                // connections we have and retry after a pause.
                log::error!("accept failed: {e}; retrying in {backoff:?}");
                let pause = pin!(sleep(backoff));
                let stop = pin!(stopped.wait());
                if let Either::Right(_) = select(pause, stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        // The address is counted first, so a socket refused with 429 never
        // takes a slot; one refused with 503 gives its count back at once.
        let Some(ip_slot) = state.per_ip.try_acquire(peer.ip()) else {
            if state
                .refused_addresses
                .note(&peer.ip().to_string(), Instant::now())
                == Note::Log
            {
                log::info!(
                    "{} is at --max-connections-per-ip {}: answering 429 (logged once a minute per address)",
                    peer.ip(),
                    state.config.max_connections_per_ip
                );
            }
            refuse_over_cap(
                state,
                stream,
                id,
                peer,
                HttpRefusal::too_many_from_address(),
            );
            continue;
        };
        if let Some(slot) = state.cap.try_acquire() {
            let token = state.tasks.token();
            let state = state.clone();
            spawn(async move {
                // Released only after the registry has forgotten us.
                let _held = Held {
                    _slot: slot,
                    _ip: ip_slot,
                    _token: token,
                };
                let run = connection::run(stream, peer, id, state.clone());
                if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                    log::error!("connection {id} ({peer}): task panicked");
                }
                state.chat.disconnect(id).await;
            });
        } else {
            drop(ip_slot);
            log::info!("connection {id} from {peer}: server full, answering 503");
            refuse_over_cap(state, stream, id, peer, HttpRefusal::server_full());
        }
    }
}

/// What a connection task holds while it runs. The slot and the address's
/// count are released before the task is counted out (struct fields drop
/// in declaration order), so when shutdown sees no task left, no slot or
/// count is held either.
struct Held {
    _slot: Slot,
    _ip: IpSlot,
    _token: TaskToken,
}

/// Answers a socket over a cap (the server's: 503, its address's: 429) on
/// a `refusing` slot, which it holds only while answering; with no such
/// slot free either, the socket is dropped unanswered. A request for one
/// of the server's pages is answered as usual: a health check must not
/// fail because the chat is full.
fn refuse_over_cap(
    state: &Arc<ServerState>,
    stream: natter_runtime::TcpStream,
    id: u64,
    peer: SocketAddr,
    refusal: HttpRefusal,
) {
    let Some(slot) = state.refusing.try_acquire() else {
        log::warn!(
            "connection {id} from {peer}: HTTP {} and no refusal slot free, dropping socket",
            refusal.status
        );
        state.metrics.refused(refusal.kind);
        return;
    };
    let token = state.tasks.token();
    let state = state.clone();
    spawn(async move {
        let _held = (slot, token);
        refuse_early(stream, id, peer, refusal, &state).await;
    });
}

/// Answers a socket that arrived over a cap with `refusal`, or with the
/// page it asked for.
async fn refuse_early(
    raw: natter_runtime::TcpStream,
    id: u64,
    peer: SocketAddr,
    refusal: HttpRefusal,
    state: &ServerState,
) {
    // Read the request first (briefly): answering before reading it could
    // make the kernel reset the connection and lose the answer.
    let Some(mut stream) = connection::secure(raw.clone(), state.tls.as_ref(), REFUSAL_READ).await
    else {
        state.metrics.refused("tls");
        return;
    };
    let read = timeout(REFUSAL_READ, crate::handshake::read_request(&mut stream)).await;
    let refusal = match read {
        Some(Ok(Err(refusal))) => refusal,
        Some(Ok(Ok(Head::Page { page, head_only }))) => {
            let answer = pages::serve(&mut stream, page, head_only, state);
            if let Some(Ok(())) = timeout(REFUSAL_READ, answer).await {
                linger(raw).await;
            }
            return;
        }
        _ => refusal,
    };
    connection::refuse(stream, raw, id, peer, &refusal, state).await;
}

/// tungstenite's defaults suit one big connection, not thousands: a 128 KiB
/// read buffer allocated up front per socket and an unbounded write buffer.
/// natter's requests are small: a typical `say` fits in 512 bytes with its
/// frame header, so one `recv` reads it whole. Bigger messages (the buffer
/// grows for them) take one `recv` per 512 bytes, which only the rate-limited
/// inbound side ever pays. Measured with `natter load conns`, going from
/// 4 KiB to 1 KiB took an idle connection from 10.7 to 7.7 KiB of server
/// memory, and 512 bytes saves another half KiB. tungstenite also zeroes
/// the buffer before each read, so smaller is cheaper per read too.
///
/// The write buffer gathers a batch's frames into one `send` up to 16 KiB.
/// Every frame natter sends is at most one [`FRAGMENT`] (bigger messages go
/// out in fragments, see `crate::writer`), so the buffer's bound is that
/// plus room for a pong and a close frame: a client that does not read can
/// hold no more than that in it.
fn websocket_config(config: &Config) -> WebSocketConfig {
    let write_buffer = 16 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + FRAGMENT + 1024)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

#[cfg(test)]
mod tests {
    /// Every connection's task is one allocation of this size for its whole
    /// life, so it is part of the per-connection memory bound; a buffer
    /// that sneaks into the task's state shows up here first.
    #[test]
    fn connection_task_stays_small() {
        natter_runtime::block_on(async {
            let server = super::Server::bind(crate::config::Config::local())
                .await
                .unwrap();
            let stream = natter_runtime::connect(server.local_addr()).await.unwrap();
            let peer = stream.local_addr().unwrap();
            let task = crate::connection::run(stream, peer, 1, server.state.clone());
            let size = std::mem::size_of_val(&task);
            assert!(size <= 1024, "connection task is {size} bytes");
        });
    }
}
