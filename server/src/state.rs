//! What every connection task shares: one `Arc<ServerState>` per server.

use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use natter_protocol::Limits;

use crate::backlog::Backlog;
use crate::cap::ConnectionCap;
use crate::chat::Chat;
use crate::config::Config;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::per_ip::PerIpCap;
use crate::shutdown::Shutdown;
use crate::tasks::TaskTracker;

/// Everything the connection tasks share.
pub(crate) struct ServerState {
    /// The options it was started with.
    pub(crate) config: Config,
    /// The limits announced in every `welcome`, computed once.
    pub(crate) limits: Limits,
    /// Who is connected and in which rooms: the shared state (this
    /// process's registry, or the cluster's broker).
    pub(crate) chat: Chat,
    /// Set once to stop taking connections: the accept loop ends and
    /// handshakes in progress are refused.
    pub(crate) shutdown: Shutdown,
    /// Set once what was said before `shutdown` is committed: every
    /// connection queues its `shutdown` event and closes.
    pub(crate) closing: Shutdown,
    /// `--max-connections`: one slot per socket from accept to close.
    pub(crate) cap: ConnectionCap,
    /// Slots for sockets being answered 503 when `cap` is full, so a flood
    /// over the cap cannot spawn unbounded tasks.
    pub(crate) refusing: ConnectionCap,
    /// `--max-connections-per-ip`: counted before a socket gets a slot.
    pub(crate) per_ip: PerIpCap,
    /// `--allowed-origin`: which web pages may open a WebSocket here.
    pub(crate) origins: OriginPolicy,
    /// Refused origins already logged this minute (one line per origin).
    pub(crate) refused_origins: LogLimit,
    /// Addresses refused at the per-address cap already logged this minute.
    pub(crate) refused_addresses: LogLimit,
    /// Counts live connection tasks, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// tungstenite's buffer sizes and frame limits, from the options.
    pub(crate) ws_config: WebSocketConfig,
    /// Members whose woken writers are falling behind (see [`crate::backlog`]).
    pub(crate) backlog: Arc<Backlog>,
    /// The counters `GET /metrics` reports.
    pub(crate) metrics: Metrics,
    /// `--tls-cert`/`--tls-key`: every socket starts with a TLS handshake.
    pub(crate) tls: Option<futures_rustls::TlsAcceptor>,
}
