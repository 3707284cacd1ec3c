//! Many nodes, one chat (`--broker`): this node's half of guarantee 8.
//!
//! Every node started with the same Redis serves one chat. What must be
//! decided once for everyone — a room's next seq, who holds a nick, who is
//! in a room — is decided inside Redis by one atomic script per request
//! ([`scripts`]); each room event the scripts decide is numbered in the
//! room's order and published on one bus channel ([`bus`]). Every node's
//! delivery task ([`delivery`]) reads the bus and hands each event to its
//! own members, in each room's order, repairing from the room's kept
//! events when it missed some. The node's connection tasks call the
//! [`Cluster`] methods below instead of the single-process registry's: a
//! request runs its script, then waits until this node has delivered the
//! event it caused, so a sender still hears its message before its `ok`.
//!
//! ```text
//!  connection task ──script──▶ Redis ──PUBLISH natter:bus──▶ every node's
//!        ▲                      (seq, history,                delivery task
//!        └── wait for own event ◀── members, nicks)           ──▶ local queues
//! ```
//!
//! Liveness ([`session`]): each node holds a lease in Redis and renews it;
//! a node whose lease lapses is reaped by whichever node looks first (its
//! members leave every room, in each room's order, once). A node that
//! cannot reach Redis closes its connections with 1013 and refuses
//! upgrades until it can again.

mod bus;
mod delivery;
mod local;
mod scripts;
mod session;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_lock::Mutex;
use futures::channel::oneshot;
use natter_protocol::names::nick_key;
use natter_protocol::{ChatMessage, ErrorCode, RoomCount, ServerMessage, WhisperEvent};
use natter_runtime::redis::aio::MultiplexedConnection;
use natter_runtime::redis::{self, AsyncConnectionConfig};

use crate::backlog::Backlog;
use crate::broadcast::Locked;
use crate::conn_id::ConnId;
use crate::frame::{Frame, encode, unix_ms};
use crate::outbox::{Cause, Outbox};
use crate::registry::{Joined, RegistryCounts};
use crate::room::HistorySlice;

use local::{Local, User};
use scripts::{Bounds, BrokerError, Scripts};

/// How long connecting to the broker may take, at start and after a loss.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any one command may take before the broker counts as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

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
    config: ClusterConfig,
    /// The Redis client (a URL; connections are made from it).
    client: redis::Client,
    /// The scripts every request runs.
    scripts: Scripts,
    /// `--history` and `--max-rooms`, as the scripts take them.
    bounds: Bounds,
    /// Random per process: the first part of the epochs of rooms this node
    /// creates, so that a room re-created after Redis lost its data gets
    /// an epoch no client has seen.
    epoch_prefix: String,
    /// The command connection while the broker is reachable; `None` while
    /// it is not (requests then fail at once).
    link: RwLock<Option<MultiplexedConnection>>,
    /// Whether the node serves: the broker is reachable and the node holds
    /// its lease. Read by the handshake (503 while not) and `/healthz`.
    up: AtomicBool,
    /// Local connections and the rooms they follow, behind the node's lock.
    local: Mutex<Local>,
    /// Bumped each time the bus subscription is re-established: a request
    /// that sees it change while its script ran asks for its room to be
    /// checked, since its event may have been published in the gap.
    generation: AtomicU64,
    /// The number of the next marker this node publishes (see `flush`).
    markers: AtomicU64,
    /// Rooms whose order a request wants checked against the broker.
    resync: (
        async_channel::Sender<Arc<str>>,
        async_channel::Receiver<Arc<str>>,
    ),
    /// Set by a request that found the broker unreachable, so the node
    /// notices at once rather than at its next lease renewal.
    trouble: event_listener::Event,
    /// The connection made at start, for the first session.
    first: std::sync::Mutex<Option<session::Link>>,
    /// Writers falling behind: delivery waits for them, as the durable
    /// publisher does (guarantee 4).
    backlog: Arc<Backlog>,
}

impl Cluster {
    /// Connects to the broker and registers this node: the server starts
    /// only once it can serve.
    pub(crate) async fn start(
        config: ClusterConfig,
        backlog: Arc<Backlog>,
    ) -> Result<Cluster, BrokerStartError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| BrokerStartError::Url {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
        let cluster = Cluster {
            bounds: Bounds {
                history: config.history,
                max_rooms: config.max_rooms,
            },
            client,
            scripts: Scripts::new(),
            epoch_prefix: format!("{:08x}", fastrand::u32(..)),
            link: RwLock::new(None),
            up: AtomicBool::new(false),
            local: Mutex::new(Local::default()),
            generation: AtomicU64::new(0),
            markers: AtomicU64::new(1),
            resync: async_channel::unbounded(),
            trouble: event_listener::Event::new(),
            first: std::sync::Mutex::new(None),
            backlog,
            config,
        };
        let link = cluster
            .link_up()
            .await
            .map_err(|e| BrokerStartError::Unreachable {
                url: cluster.config.url.clone(),
                reason: e.to_string(),
            })?;
        *cluster.first.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
        log::info!(
            "node {} joined the cluster at {}",
            cluster.config.node,
            cluster.config.url
        );
        Ok(cluster)
    }

    /// Whether the node serves (the broker is reachable).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Registers a connection under the nick it asked for (or a guest's)
    /// and queues its `welcome`. `None`: the broker is unreachable (the
    /// caller closes the connection with 1013).
    pub(crate) async fn connect(
        &self,
        id: ConnId,
        wanted: Option<&str>,
        outbox: Arc<Outbox>,
        welcome: impl FnOnce(&str, Option<ErrorCode>) -> Frame,
    ) -> Option<String> {
        let invalid = wanted.is_some_and(|n| natter_protocol::names::validate_nick(n).is_err());
        let wanted = wanted.filter(|_| !invalid);
        // Known here before the broker hands out the nick, so a whisper
        // that races the welcome waits behind it rather than being lost.
        self.local.lock().await.users.insert(
            id,
            User {
                nick: Arc::from(""),
                outbox: outbox.clone(),
                rooms: BTreeSet::new(),
                early: Some(Vec::new()),
            },
        );
        let answer = match self.link() {
            Ok(mut c) => {
                let node = &self.config.node;
                self.checked(self.scripts.connect(&mut c, node, id, wanted).await)
            }
            Err(e) => Err(e),
        };
        let mut locked = Locked::lock(&self.local).await;
        let (local, mut post) = locked.parts();
        let Ok((nick, taken)) = answer else {
            local.users.remove(&id);
            return None;
        };
        let refusal = if invalid {
            Some(ErrorCode::InvalidNick)
        } else if taken {
            Some(ErrorCode::NickTaken)
        } else {
            None
        };
        // Lost meanwhile (the broker went): nothing to welcome.
        let user = local.users.get_mut(&id)?;
        user.nick = Arc::from(nick.as_str());
        post.send(id, &outbox, &welcome(&nick, refusal), Cause::Own);
        for frame in user.early.take().unwrap_or_default() {
            post.send(id, &outbox, &frame, Cause::Other);
        }
        Some(nick)
    }

    /// A connection is gone: it leaves this node's rooms at once and the
    /// cluster's through the broker (if the broker is unreachable, the
    /// node's next registration reaps it).
    pub(crate) async fn disconnect(&self, id: ConnId) {
        let Some(rooms) = self.local.lock().await.remove_user(id) else {
            return;
        };
        if let Ok(mut c) = self.link() {
            let node = &self.config.node;
            let gone = self
                .scripts
                .disconnect(&mut c, node, id, &rooms, &self.bounds);
            if let Err(e) = self.checked(gone.await) {
                log::debug!("connection {id}: could not tell the broker it left: {e}");
            }
        }
    }

    /// Changes a connection's nick; every room it is in hears `rename`
    /// (before the reply).
    pub(crate) async fn rename(&self, id: ConnId, nick: &str) -> Result<String, ErrorCode> {
        let rooms = self.rooms_of(id).await?;
        let mut c = self.link().map_err(|_| ErrorCode::Internal)?;
        let generation = self.generation.load(Ordering::SeqCst);
        let node = &self.config.node;
        let renamed = self.checked(self.scripts.rename(&mut c, node, id, nick, &rooms).await);
        let events = renamed.map_err(|_| ErrorCode::Internal)??;
        let mut waits = Vec::new();
        {
            let mut local = self.local.lock().await;
            if let Some(user) = local.users.get_mut(&id) {
                user.nick = Arc::from(nick);
            }
            for (room, ev) in &events {
                waits.extend(self.wait_for(&mut local, room, *ev, generation));
            }
        }
        for wait in waits {
            delivered(wait).await?;
        }
        Ok(nick.to_owned())
    }

    /// Joins a room (or re-joins: no presence, the same reply). The reply
    /// is ready once this node has delivered the join's own event, so the
    /// member hears everything after the reply's `seq`.
    pub(crate) async fn join(
        &self,
        id: ConnId,
        name: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Joined, ErrorCode> {
        {
            let local = self.local.lock().await;
            let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
            if !user.rooms.contains(name)
                && user.rooms.len() >= self.config.max_rooms_per_connection
            {
                return Err(ErrorCode::TooManyRooms);
            }
        }
        let mut c = self.link().map_err(|_| ErrorCode::Internal)?;
        let generation = self.generation.load(Ordering::SeqCst);
        let node = &self.config.node;
        let joined = self
            .scripts
            .join(&mut c, node, id, name, &self.epoch_prefix, since, epoch);
        let answer = self
            .checked(joined.await)
            .map_err(|_| ErrorCode::Internal)?;
        let wait = {
            let mut local = self.local.lock().await;
            let user = local.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
            user.rooms.insert(name.to_owned());
            self.wait_for(&mut local, name, answer.ev, generation)
        };
        if let Some(wait) = wait {
            delivered(wait).await?;
        }
        let mut members = answer.members;
        members.sort_unstable();
        Ok(Joined {
            members,
            seq: answer.seq,
            epoch: answer.epoch,
            history: HistorySlice {
                frames: answer.history.into_iter().map(Frame::from).collect(),
                complete: answer.complete,
            },
        })
    }

    /// Leaves a room; the leaver hears its own `leave` before the reply.
    pub(crate) async fn leave(&self, id: ConnId, name: &str) -> Result<(), ErrorCode> {
        self.member_of(id, name).await?;
        let mut c = self.link().map_err(|_| ErrorCode::Internal)?;
        let generation = self.generation.load(Ordering::SeqCst);
        let left = self
            .scripts
            .leave(&mut c, &self.config.node, id, name, &self.bounds);
        let ev = self.checked(left.await).map_err(|_| ErrorCode::Internal)?;
        let wait = {
            let mut local = self.local.lock().await;
            if let Some(user) = local.users.get_mut(&id) {
                user.rooms.remove(name);
            }
            let ev = ev.ok_or(ErrorCode::NotMember)?;
            self.wait_for(&mut local, name, ev, generation)
        };
        if let Some(wait) = wait {
            delivered(wait).await?;
        }
        Ok(())
    }

    /// Says `text` in a room: the broker numbers it and publishes it; the
    /// reply (the seq) follows once this node delivered it to the sender.
    pub(crate) async fn say(&self, id: ConnId, name: &str, text: &str) -> Result<u64, ErrorCode> {
        let from = self.member_of(id, name).await?;
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: name.to_owned(),
            seq: 0,
            from: from.to_string(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        let (head, tail) = split_at_seq(&frame).ok_or(ErrorCode::Internal)?;
        let mut c = self.link().map_err(|_| ErrorCode::Internal)?;
        let generation = self.generation.load(Ordering::SeqCst);
        let node = &self.config.node;
        let said = self
            .scripts
            .say(&mut c, node, id, name, head, tail, &self.bounds);
        let (seq, ev) = self
            .checked(said.await)
            .map_err(|_| ErrorCode::Internal)?
            .ok_or(ErrorCode::NotMember)?;
        let wait = self.wait_for(&mut *self.local.lock().await, name, ev, generation);
        if let Some(wait) = wait {
            delivered(wait).await?;
        }
        Ok(seq)
    }

    /// Sends a direct message to a nick on any node; returns the nick as
    /// it is spelled.
    pub(crate) async fn whisper(
        &self,
        id: ConnId,
        to: &str,
        text: &str,
    ) -> Result<String, ErrorCode> {
        let mut locked = Locked::lock(&self.local).await;
        let (local, mut post) = locked.parts();
        let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
        let frame = encode(&ServerMessage::Whisper(WhisperEvent {
            from: user.nick.to_string(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        let key = nick_key(to);
        if key == nick_key(&user.nick) {
            // To oneself: it is one's own doing (never a slow-consumer drop).
            post.send(id, &user.outbox, &frame, Cause::Own);
            return Ok(user.nick.to_string());
        }
        drop(locked);
        let mut c = self.link().map_err(|_| ErrorCode::Internal)?;
        let sent = self.scripts.whisper(&mut c, &key, &frame).await;
        self.checked(sent)
            .map_err(|_| ErrorCode::Internal)?
            .ok_or(ErrorCode::NoSuchUser)
    }

    /// Resolves once every event published before it was called has been
    /// delivered here (it publishes a marker and waits for it to come
    /// back): what a graceful shutdown waits for before it tells anyone
    /// goodbye, so a message acknowledged anywhere before the shutdown
    /// reaches this node's members too (guarantee 5). Bounded by the
    /// caller; a lost broker ends it at once.
    pub(crate) async fn flush(&self) {
        let number = self.markers.fetch_add(1, Ordering::Relaxed);
        let back = self.local.lock().await.wait_for_marker(number);
        let Ok(mut c) = self.link() else {
            return;
        };
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(delivery::BUS)
            .arg(bus::marker(&self.config.node, number))
            .query_async(&mut c)
            .await;
        if published.is_ok() {
            let _ = back.await;
        }
    }

    /// Rooms with members on any node, sorted by name.
    pub(crate) async fn rooms(&self) -> Vec<RoomCount> {
        let listed = match self.link() {
            Ok(mut c) => self.checked(scripts::rooms(&mut c).await),
            Err(e) => Err(e),
        };
        let mut rooms: Vec<RoomCount> = listed
            .unwrap_or_default()
            .into_iter()
            .map(|(room, members)| RoomCount {
                room,
                members: usize::try_from(members).unwrap_or(usize::MAX),
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// A room's members on every node, sorted.
    pub(crate) async fn who(&self, name: &str) -> Vec<String> {
        let listed = match self.link() {
            Ok(mut c) => self.checked(scripts::who(&mut c, name).await),
            Err(e) => Err(e),
        };
        let mut members = listed.unwrap_or_default();
        members.sort_unstable();
        members
    }

    /// This node's own counts: its connections, the rooms it follows, and
    /// its members' memberships.
    pub(crate) async fn counts(&self) -> RegistryCounts {
        let local = self.local.lock().await;
        let (rooms, memberships) = local.counts();
        RegistryCounts {
            users: local.users.len(),
            rooms,
            memberships,
        }
    }
}

impl Cluster {
    /// The command connection, or why there is none.
    fn link(&self) -> Result<MultiplexedConnection, BrokerError> {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| BrokerError::Down("not connected".into()))
    }

    /// Passes a broker answer through, and raises the alarm when it says
    /// the broker is unreachable or the lease is gone.
    fn checked<T>(&self, answer: Result<T, BrokerError>) -> Result<T, BrokerError> {
        if let Err(e @ (BrokerError::Down(_) | BrokerError::NoLease)) = &answer {
            log::debug!("broker call failed: {e}");
            self.trouble.notify(usize::MAX);
        }
        answer
    }

    /// Waits for event `ev` of `room` to be delivered here, and asks for
    /// the room to be checked if the subscription was re-established while
    /// the script ran (the event may have fallen in the gap).
    fn wait_for(
        &self,
        local: &mut Local,
        room: &str,
        ev: u64,
        generation: u64,
    ) -> Option<oneshot::Receiver<bool>> {
        let wait = local.wait_for(room, ev)?;
        if self.generation.load(Ordering::SeqCst) != generation {
            // Unbounded, and the delivery task outlives every request.
            let _ = self.resync.0.try_send(Arc::from(room));
        }
        Some(wait)
    }

    /// The rooms a connection is in.
    async fn rooms_of(&self, id: ConnId) -> Result<Vec<String>, ErrorCode> {
        let local = self.local.lock().await;
        let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
        Ok(user.rooms.iter().cloned().collect())
    }

    /// The connection's nick, if it is in `room` (else `not_member`,
    /// without asking the broker).
    async fn member_of(&self, id: ConnId, room: &str) -> Result<Arc<str>, ErrorCode> {
        let local = self.local.lock().await;
        let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
        if !user.rooms.contains(room) {
            return Err(ErrorCode::NotMember);
        }
        Ok(user.nick.clone())
    }

    /// Delivers frames under the node's lock (for the delivery task).
    async fn locked(&self) -> Locked<'_, Local> {
        Locked::lock(&self.local).await
    }

    /// The settings for a fresh connection to the broker.
    fn connection_config() -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
    }
}

/// Waits for a request's own event to be delivered here. `false` (or a
/// dropped sender): its room's order was lost, and the connection is
/// being closed with 1013.
async fn delivered(wait: oneshot::Receiver<bool>) -> Result<(), ErrorCode> {
    match wait.await {
        Ok(true) => Ok(()),
        _ => Err(ErrorCode::Internal),
    }
}

/// Splits an encoded `message` event with seq 0 around its seq, so that
/// the broker can put the real one in: natter's encoding puts `"seq":0`
/// after the room, whose alphabet has no quote, so its first occurrence is
/// the field.
fn split_at_seq(frame: &str) -> Option<(&str, &str)> {
    const FIELD: &str = ",\"seq\":0,";
    let at = frame.find(FIELD)?;
    Some((
        &frame[..at + FIELD.len() - 2],
        &frame[at + FIELD.len() - 1..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_around_its_seq() {
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: "r".into(),
            seq: 0,
            from: "a".into(),
            text: "\"seq\":0, sneaky".into(),
            ts: 5,
        }));
        let (head, tail) = split_at_seq(&frame).unwrap();
        let rebuilt = format!("{head}42{tail}");
        let value: serde_json::Value = serde_json::from_str(&rebuilt).unwrap();
        assert_eq!(value["seq"], 42);
        assert_eq!(value["text"], "\"seq\":0, sneaky");
    }
}
