//! The state of this node's membership of a cluster: what the request
//! side ([`super::requests`]), the delivery task ([`super::delivery`]) and
//! the session ([`super::session`]) share, and the small helpers they all
//! use. Each of those files adds its own `impl Cluster` block.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_lock::Mutex;
use natter_runtime::redis::aio::{MultiplexedConnection, PubSubStream};
use natter_runtime::redis::{self, AsyncConnectionConfig};

use crate::backlog::Backlog;
use crate::broadcast::Locked;

use super::local::Local;
use super::scripts::{Bounds, BrokerError, Scripts};

/// How long connecting to the broker may take, at start and after a loss.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any one command may take before the broker counts as lost.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The options a cluster node runs with.
#[derive(Debug, Clone)]
pub(crate) struct ClusterConfig {
    /// `--broker`: the Redis URL.
    pub(crate) url: String,
    /// `--node-id`: this node's name in the broker.
    pub(crate) node: String,
    /// `--node-timeout`: how soon the others notice this node is gone.
    pub(crate) node_timeout: Duration,
    /// `--history`.
    pub(crate) history: usize,
    /// `--max-rooms`.
    pub(crate) max_rooms: usize,
    /// `--max-rooms-per-connection`.
    pub(crate) max_rooms_per_connection: usize,
    /// `--queue`: the delivery task hands over a quarter of it at a time.
    pub(crate) queue: usize,
}

/// Why a node could not join its cluster at start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    /// The URL is not a Redis URL.
    #[error("invalid --broker URL {url:?}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis did not answer, or refused the node.
    #[error("cannot use the broker at {url}: {reason}")]
    Unreachable {
        /// As given.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// This node's membership of a cluster: what the connection tasks call.
pub(crate) struct Cluster {
    /// The options.
    pub(super) config: ClusterConfig,
    /// The Redis client (a URL; connections are made from it).
    pub(super) client: redis::Client,
    /// The scripts every request runs.
    pub(super) scripts: Scripts,
    /// `--history` and `--max-rooms`, as the scripts take them.
    pub(super) bounds: Bounds,
    /// Random per start: this life of the node, held in its lease. A second
    /// process started with the same `--node-id` takes the lease over, and
    /// this one then stops rather than fight over it.
    pub(super) token: String,
    /// Random per process: the first part of the epochs of rooms this node
    /// creates, so that a room re-created after Redis lost its data gets
    /// an epoch no client has seen.
    pub(super) epoch_prefix: String,
    /// The command connection while the node serves (the broker is
    /// reachable and the node holds its lease); `None` while it does not:
    /// requests then fail at once, and upgrades and `/healthz` get 503.
    pub(super) link: RwLock<Option<MultiplexedConnection>>,
    /// Local connections and the rooms they follow, behind the node's lock.
    pub(super) local: Mutex<Local>,
    /// Bumped each time the bus subscription is re-established: a request
    /// that sees it change while its script ran asks for its room to be
    /// checked, since its event may have been published in the gap.
    pub(super) generation: AtomicU64,
    /// The number of the next marker this node publishes (see `flush`).
    pub(super) markers: AtomicU64,
    /// Rooms whose order a request wants checked against the broker.
    pub(super) resync: (
        async_channel::Sender<Arc<str>>,
        async_channel::Receiver<Arc<str>>,
    ),
    /// Set by a request that found the broker unreachable, so the node
    /// notices at once rather than at its next lease renewal.
    pub(super) trouble: event_listener::Event,
    /// The connection made at start, for the first session.
    pub(super) first: std::sync::Mutex<Option<Link>>,
    /// Writers falling behind: delivery waits for them, as the durable
    /// publisher does (guarantee 4).
    pub(super) backlog: Arc<Backlog>,
}

/// A connection to the broker and a subscription to its bus, with this
/// node registered: what a session starts from.
pub(super) struct Link {
    /// For commands and scripts.
    pub(super) conn: MultiplexedConnection,
    /// The bus.
    pub(super) events: PubSubStream,
}

impl Cluster {
    /// Whether the node serves (the broker is reachable).
    pub(crate) fn is_up(&self) -> bool {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The command connection, or why there is none.
    pub(super) fn link(&self) -> Result<MultiplexedConnection, BrokerError> {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| BrokerError::Down("not connected".into()))
    }

    /// Passes a broker answer through, and raises the alarm when it says
    /// the broker is unreachable or the lease is gone: the session then
    /// ends (a command that got no answer may still have been carried out,
    /// and only registering again, which reaps what this node left, puts
    /// the broker and the node back in step).
    pub(super) fn checked<T>(&self, answer: Result<T, BrokerError>) -> Result<T, BrokerError> {
        if let Err(e @ (BrokerError::Down(_) | BrokerError::NoLease)) = &answer {
            log::debug!("broker call failed: {e}");
            self.trouble.notify(usize::MAX);
        }
        answer
    }

    /// Delivers frames under the node's lock (for the delivery task).
    pub(super) async fn locked(&self) -> Locked<'_, Local> {
        Locked::lock(&self.local).await
    }

    /// The settings for a fresh connection to the broker.
    pub(super) fn connection_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }
}
