//! Where the connection tasks' requests are carried out: this process's
//! own registry, or — with `--broker` — the cluster of nodes sharing one
//! Redis. Both keep the same promises (PROTOCOL.md); this enum is the one
//! place that chooses between them, so neither the connection task nor
//! the request handler knows which it talks to.

use std::sync::Arc;

use natter_protocol::{ErrorCode, RoomCount};

use crate::cluster::Cluster;
use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::registry::{Joined, Registry, RegistryCounts};

/// The chat this server serves. (One per server, never moved once built:
/// the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Chat {
    /// One process: the registry holds everything (history in memory or
    /// in `--data-dir`).
    Alone(Registry),
    /// One node of several: the broker holds what they share.
    Cluster(Cluster),
}

impl Chat {
    /// The single-process registry, for what only it has (a durable log
    /// to publish, flush and close).
    pub(crate) fn registry(&self) -> Option<&Registry> {
        match self {
            Chat::Alone(registry) => Some(registry),
            Chat::Cluster(_) => None,
        }
    }

    /// The cluster membership, when there is one.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match self {
            Chat::Alone(_) => None,
            Chat::Cluster(cluster) => Some(cluster),
        }
    }

    /// Whether new connections can be served: always alone; in a cluster,
    /// only while the broker is reachable.
    pub(crate) fn is_up(&self) -> bool {
        self.cluster().is_none_or(Cluster::is_up)
    }

    /// Registers a connection and queues its `welcome` first. `None`: it
    /// cannot be served now (the broker is unreachable).
    pub(crate) async fn connect(
        &self,
        id: ConnId,
        wanted: Option<&str>,
        outbox: Arc<Outbox>,
        welcome: impl FnOnce(&str, Option<ErrorCode>) -> Frame,
    ) -> Option<String> {
        match self {
            Chat::Alone(r) => Some(r.connect(id, wanted, outbox, welcome).await),
            Chat::Cluster(c) => c.connect(id, wanted, outbox, welcome).await,
        }
    }

    /// Removes a connection; its rooms hear `leave`.
    pub(crate) async fn disconnect(&self, id: ConnId) {
        match self {
            Chat::Alone(r) => r.disconnect(id).await,
            Chat::Cluster(c) => c.disconnect(id).await,
        }
    }

    /// `nick`.
    pub(crate) async fn rename(&self, id: ConnId, nick: &str) -> Result<String, ErrorCode> {
        match self {
            Chat::Alone(r) => r.rename(id, nick).await,
            Chat::Cluster(c) => c.rename(id, nick).await,
        }
    }

    /// `join`.
    pub(crate) async fn join(
        &self,
        id: ConnId,
        room: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Joined, ErrorCode> {
        match self {
            Chat::Alone(r) => r.join(id, room, since, epoch).await,
            Chat::Cluster(c) => c.join(id, room, since, epoch).await,
        }
    }

    /// `leave`.
    pub(crate) async fn leave(&self, id: ConnId, room: &str) -> Result<(), ErrorCode> {
        match self {
            Chat::Alone(r) => r.leave(id, room).await,
            Chat::Cluster(c) => c.leave(id, room).await,
        }
    }

    /// `say`: the new message's seq.
    pub(crate) async fn say(&self, id: ConnId, room: &str, text: &str) -> Result<u64, ErrorCode> {
        match self {
            Chat::Alone(r) => r.say(id, room, text).await,
            Chat::Cluster(c) => c.say(id, room, text).await,
        }
    }

    /// `whisper`: the recipient's nick as spelled.
    pub(crate) async fn whisper(
        &self,
        id: ConnId,
        to: &str,
        text: &str,
    ) -> Result<String, ErrorCode> {
        match self {
            Chat::Alone(r) => r.whisper(id, to, text).await,
            Chat::Cluster(c) => c.whisper(id, to, text).await,
        }
    }

    /// `rooms` (`internal` when a cluster node cannot ask its broker).
    pub(crate) async fn rooms(&self) -> Result<Vec<RoomCount>, ErrorCode> {
        match self {
            Chat::Alone(r) => Ok(r.rooms().await),
            Chat::Cluster(c) => c.rooms().await,
        }
    }

    /// `who` (`internal` when a cluster node cannot ask its broker).
    pub(crate) async fn who(&self, room: &str) -> Result<Vec<String>, ErrorCode> {
        match self {
            Chat::Alone(r) => Ok(r.who(room).await),
            Chat::Cluster(c) => c.who(room).await,
        }
    }

    /// Resolves once everything said before is delivered here (committed
    /// and published with `--data-dir`; come back over the bus in a
    /// cluster): what a graceful shutdown waits for.
    pub(crate) async fn flush(&self) {
        match self {
            Chat::Alone(r) => {
                // A failed commit was logged where it happened; nothing
                // more to deliver either way.
                let _ = r.flush().await;
            }
            Chat::Cluster(c) => c.flush().await,
        }
    }

    /// Users, rooms and memberships (this node's own, in a cluster).
    pub(crate) async fn counts(&self) -> RegistryCounts {
        match self {
            Chat::Alone(r) => r.counts().await,
            Chat::Cluster(c) => c.counts().await,
        }
    }
}
