//! The room registry: who is connected, under which nick, in which rooms;
//! shared by every connection task behind one `async_lock::Mutex`.
//!
//! Why one async mutex over everything: every operation that must be
//! ordered — taking a room's next seq and handing the frame to every
//! member's queue, a join's presence and its history snapshot, a rename
//! across all of a member's rooms — happens inside a single critical
//! section, which is what makes "one order per room" true for every member.
//! The rule that keeps this cheap: **no await while the guard is held**.
//! Each method locks, does synchronous work (queueing a frame is a push
//! onto a queue, never a wait on a socket), and unlocks; the writers it
//! queued for are woken after the unlock, by the [`Locked`] guard every
//! method takes (see [`crate::broadcast`]). An async (not std) mutex
//! because waiting for it must not block an executor thread.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use async_lock::Mutex;
use futures::channel::oneshot;
use natter_protocol::names::nick_key;
use natter_protocol::{
    ChatMessage, ErrorCode, Presence, PresenceKind, RoomCount, ServerMessage, WhisperEvent,
};

use crate::broadcast::Locked;
use crate::conn_id::ConnId;
use crate::frame::{Frame, encode, unix_ms};
use crate::outbox::{Cause, Outbox};
use crate::room::{HistorySlice, Room, Rooms};
use crate::room_log::{ClosedLog, Commit, Op, RoomLog, StoredRoom, Written};

/// Registry settings taken from the server configuration.
#[derive(Debug, Clone)]
pub(crate) struct RegistryConfig {
    /// `--history`: messages kept per room.
    pub(crate) history: usize,
    /// `--max-rooms`: empty rooms retained (see [`Rooms`]).
    pub(crate) max_rooms: usize,
    /// `--max-rooms-per-connection`.
    pub(crate) max_rooms_per_connection: usize,
}

pub(crate) struct Registry {
    /// Everything, behind the one lock (see the module docs).
    state: Mutex<State>,
    /// The limits it enforces.
    config: RegistryConfig,
    /// Random per process, so epochs differ across restarts.
    epoch_nonce: u32,
}

struct State {
    /// Every connection past its handshake.
    users: HashMap<ConnId, User>,
    /// Lower-cased nick → connection: nicks are unique case-insensitively.
    nicks: HashMap<String, ConnId>,
    /// Every retained room, with or without members, and the indexes that
    /// keep `--max-rooms` and the `rooms` listing cheap.
    rooms: Rooms,
    /// The number in the next `guest-N` nick.
    next_guest: u64,
    /// The counter in the next room's epoch.
    next_epoch: u64,
    /// Logical clock for "least recently active" (ticks on each join,
    /// leave and disconnect).
    clock: u64,
    /// Where rooms, their numbering and history are kept (memory, or the
    /// store of `--data-dir`). Inside the lock on purpose: only a lock
    /// holder can hand it a change, so it sees the order members see.
    log: Box<dyn RoomLog>,
    /// Changes handed to a durable log and not yet reported committed, in
    /// the order they were made (so in the order commits report them).
    /// Always empty with the memory log.
    pending: VecDeque<Pending>,
}

/// A change that waits for its commit before anyone may see it.
struct Pending {
    /// Its number in the log.
    op: Op,
    /// The message it makes visible, if it is a `say`.
    message: Option<Unpublished>,
    /// Resolves the request waiting for it (the `say`, the `join` that
    /// created a room, a flush) once it is committed and published.
    done: oneshot::Sender<Result<(), ErrorCode>>,
}

/// A message with its seq taken, waiting to be committed; then it is
/// broadcast exactly as it would have been at once in memory.
struct Unpublished {
    room: Arc<str>,
    /// Which incarnation of the room took the seq.
    incarnation: u64,
    seq: u64,
    frame: Frame,
    /// The sender (its copy is its own; see `Post::broadcast`).
    origin: ConnId,
}

struct User {
    /// As the user spelled it; shared, so listing members under the lock
    /// copies a pointer, not the name.
    nick: Arc<str>,
    /// Where frames for this user go.
    outbox: Arc<Outbox>,
    /// The rooms it is in, so leaving them all on disconnect needs no scan.
    rooms: BTreeSet<String>,
}

/// A successful join, with what the reply needs (encoded outside the lock).
pub(crate) struct Joined {
    /// The room's members, sorted (after the lock was released).
    pub(crate) members: Vec<String>,
    /// The room's latest seq.
    pub(crate) seq: u64,
    /// The room's epoch.
    pub(crate) epoch: String,
    /// The history the reply carries.
    pub(crate) history: HistorySlice,
}

/// Counts for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryCounts {
    /// Connections past their handshake.
    pub users: usize,
    /// Retained rooms, with or without members.
    pub rooms: usize,
    /// Room memberships, summed over rooms.
    pub memberships: usize,
}

impl Registry {
    /// A registry keeping its rooms in `log`, starting from the rooms the
    /// log held (least recently active first; none for memory).
    pub(crate) fn new(
        config: RegistryConfig,
        log: Box<dyn RoomLog>,
        stored: Vec<StoredRoom>,
    ) -> Registry {
        let mut st = State {
            users: HashMap::new(),
            nicks: HashMap::new(),
            rooms: Rooms::new(config.max_rooms),
            next_guest: 1,
            next_epoch: 1,
            clock: 0,
            log,
            pending: VecDeque::new(),
        };
        for room in stored {
            let name = room.name.clone();
            let incarnation = st.next_incarnation();
            let now = st.tick();
            let room = Room::restored(room, config.history, incarnation);
            // The log already trimmed itself to --max-rooms; nothing is
            // evicted here unless it holds more than it said.
            for evicted in st.rooms.restore(&name, room, now) {
                st.log.evict(&evicted);
            }
        }
        Registry {
            state: Mutex::new(st),
            config,
            epoch_nonce: fastrand::u32(..),
        }
    }

    /// Makes a connection visible under the nick it asked for (or a guest
    /// nick), and queues its `welcome` inside the same critical section so
    /// nothing — not even a whisper — can reach it first.
    pub(crate) async fn connect(
        &self,
        id: ConnId,
        wanted: Option<&str>,
        outbox: Arc<Outbox>,
        welcome: impl FnOnce(&str, Option<ErrorCode>) -> Frame,
    ) -> String {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let refusal = match wanted {
            None => None,
            Some(nick) if natter_protocol::names::validate_nick(nick).is_err() => {
                Some(ErrorCode::InvalidNick)
            }
            Some(nick) if st.nicks.contains_key(&nick_key(nick)) => Some(ErrorCode::NickTaken),
            Some(_) => None,
        };
        let nick = match (wanted, refusal) {
            (Some(nick), None) => nick.to_owned(),
            _ => st.guest_nick(),
        };
        st.nicks.insert(nick_key(&nick), id);
        post.send(id, &outbox, &welcome(&nick, refusal), Cause::Own);
        st.users.insert(
            id,
            User {
                nick: Arc::from(nick.as_str()),
                outbox,
                rooms: BTreeSet::new(),
            },
        );
        nick
    }

    /// Removes a connection: its nick is freed and every room it was in
    /// gets a `leave`. Safe to call twice.
    pub(crate) async fn disconnect(&self, id: ConnId) {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let Some(user) = st.users.remove(&id) else {
            return;
        };
        st.nicks.remove(&nick_key(&user.nick));
        let now = st.tick();
        for name in &user.rooms {
            st.exit_room(name, id, now);
            // Evicted (it emptied): nobody is left to tell.
            if let Some(room) = st.rooms.get(name) {
                let frame = presence(name, PresenceKind::Leave, &user.nick, None);
                post.broadcast(room.members(), &frame, id);
            }
        }
    }

    /// Changes a connection's nick; every room it is in hears a `rename`.
    pub(crate) async fn rename(&self, id: ConnId, nick: &str) -> Result<String, ErrorCode> {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let key = nick_key(nick);
        if st.nicks.get(&key).is_some_and(|&owner| owner != id) {
            return Err(ErrorCode::NickTaken);
        }
        let user = st.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
        if &*user.nick == nick {
            return Ok(nick.to_owned());
        }
        let old = std::mem::replace(&mut user.nick, Arc::from(nick));
        st.nicks.remove(&nick_key(&old));
        st.nicks.insert(key, id);
        for name in &user.rooms {
            if let Some(room) = st.rooms.get(name) {
                let frame = presence(name, PresenceKind::Rename, nick, Some(&old));
                post.broadcast(room.members(), &frame, id);
            }
        }
        Ok(nick.to_owned())
    }

    /// Joins a room (or re-joins one it is in: no presence, the same
    /// reply). Under the lock only what must be read there is taken — the
    /// members' nicks (shared pointers), the room's numbering and handles to
    /// its history frames; the nicks are sorted after the lock is released.
    /// A join that creates the room answers once the room's epoch is
    /// durable (at once in memory).
    pub(crate) async fn join(
        &self,
        id: ConnId,
        name: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Joined, ErrorCode> {
        let (nicks, seq, epoch, history, created) = {
            let mut locked = self.lock().await;
            let (st, mut post) = locked.parts();
            let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
            let already = user.rooms.contains(name);
            if !already && user.rooms.len() >= self.config.max_rooms_per_connection {
                return Err(ErrorCode::TooManyRooms);
            }
            let mut created = Written::Now;
            if !already {
                let (nick, outbox) = (user.nick.clone(), user.outbox.clone());
                st.tick();
                let room = st.rooms.enter(name, id, outbox, || {
                    let incarnation = st.next_epoch;
                    let epoch = format!("{:08x}.{incarnation}", self.epoch_nonce);
                    st.next_epoch += 1;
                    created = st.log.create(name, &epoch);
                    Room::new(epoch, self.config.history, incarnation)
                });
                let frame = presence(name, PresenceKind::Join, &nick, None);
                post.broadcast(room.members(), &frame, id);
                if let Some(user) = st.users.get_mut(&id) {
                    user.rooms.insert(name.to_owned());
                }
            }
            let created = st.await_commit(created, None);
            let room = st.rooms.get(name).ok_or(ErrorCode::Internal)?;
            (
                st.member_nicks(room),
                room.last_seq,
                room.epoch.clone(),
                room.history_since(since, epoch),
                created,
            )
        };
        if let Some(created) = created {
            committed(created).await?;
        }
        Ok(Joined {
            members: sorted(nicks),
            seq,
            epoch,
            history,
        })
    }

    /// Leaves a room; the leaver hears its own `leave` too.
    pub(crate) async fn leave(&self, id: ConnId, name: &str) -> Result<(), ErrorCode> {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let now = st.tick();
        let user = st.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
        if !user.rooms.remove(name) {
            return Err(ErrorCode::NotMember);
        }
        if let Some(room) = st.rooms.get(name) {
            let frame = presence(name, PresenceKind::Leave, &user.nick, None);
            post.broadcast(room.members(), &frame, id);
        }
        st.exit_room(name, id, now);
        Ok(())
    }

    /// Says `text` in a room: takes the next seq, encodes the message once,
    /// hands it to the log, and — once the log has it durably (at once in
    /// memory) — keeps it in history and queues it for every member.
    /// Returns the seq after the message has gone out.
    pub(crate) async fn say(&self, id: ConnId, name: &str, text: &str) -> Result<u64, ErrorCode> {
        let (seq, waiting) = {
            let mut locked = self.lock().await;
            let (st, mut post) = locked.parts();
            let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
            if !user.rooms.contains(name) {
                return Err(ErrorCode::NotMember);
            }
            let room = st.rooms.get_mut(name).ok_or(ErrorCode::Internal)?;
            let seq = room.take_seq();
            let frame = encode(&ServerMessage::Message(ChatMessage {
                room: name.to_owned(),
                seq,
                from: user.nick.to_string(),
                text: text.to_owned(),
                ts: unix_ms(),
            }));
            match st.log.append(name, seq, &frame) {
                Written::Now => {
                    room.publish(seq, frame.clone());
                    // No activity stamp: the room has a member (the sender),
                    // and only empty rooms are ranked by activity.
                    post.broadcast(room.members(), &frame, id);
                    return Ok(seq);
                }
                Written::Refused => {
                    room.give_back_seq(seq);
                    return Err(ErrorCode::Internal);
                }
                Written::Queued(op) => {
                    let message = Unpublished {
                        room: Arc::from(name),
                        incarnation: room.incarnation,
                        seq,
                        frame,
                        origin: id,
                    };
                    (seq, st.await_commit(Written::Queued(op), Some(message)))
                }
            }
        };
        if let Some(waiting) = waiting {
            committed(waiting).await?;
        }
        Ok(seq)
    }

    /// Publishes what a durable log reports committed, in the order it was
    /// handed over: each message is kept in history and queued for the
    /// room's members now (whoever is a member now — a member who joined
    /// while it waited was told a `seq` before it, so sees it next; one who
    /// left no longer hears the room), then each waiting request is
    /// resolved, after the lock is released, so a sender's `ok` follows its
    /// message. A failed commit fails every request it covers instead.
    ///
    /// At most `most` changes are published per call (one lock hold), so
    /// that one commit carrying thousands of messages does not flood every
    /// member's queue at once; the caller lets the writers catch up
    /// before each call (`Backlog::wait_clear`), as a reader does before
    /// each request. Returns whether changes this commit covers remain.
    pub(crate) async fn publish(&self, commit: &Commit, most: usize) -> bool {
        let mut resolved = Vec::new();
        let more = {
            let mut locked = self.lock().await;
            let (st, mut post) = locked.parts();
            while resolved.len() < most
                && st.pending.front().is_some_and(|p| p.op <= commit.through)
            {
                let Some(pending) = st.pending.pop_front() else {
                    break;
                };
                let outcome = match (&commit.result, pending.message) {
                    (Err(_), _) => Err(ErrorCode::Internal),
                    (Ok(()), None) => Ok(()),
                    (Ok(()), Some(m)) => {
                        // The room may be gone (evicted once its last member
                        // left); then nobody is there to tell.
                        if let Some(room) = st.rooms.get_mut(&m.room)
                            && room.incarnation == m.incarnation
                        {
                            room.publish(m.seq, m.frame.clone());
                            post.broadcast(room.members(), &m.frame, m.origin);
                            if room.members().is_empty() {
                                // Its sender left while it waited: the
                                // message is the room's latest activity.
                                let now = st.tick();
                                st.rooms.touch_empty(&m.room, now);
                            }
                        }
                        Ok(())
                    }
                };
                resolved.push((pending.done, outcome));
            }
            st.pending.front().is_some_and(|p| p.op <= commit.through)
        };
        for (done, outcome) in resolved {
            // The requester may have gone; then nobody needs the answer.
            let _ = done.send(outcome);
        }
        more
    }

    /// Resolves once everything handed to the log so far is committed and
    /// published (at once in memory): what a graceful shutdown waits for
    /// before it tells anyone goodbye.
    pub(crate) async fn flush(&self) -> Result<(), ErrorCode> {
        let waiting = {
            let mut st = self.state.lock().await;
            let written = st.log.barrier();
            st.await_commit(written, None)
        };
        match waiting {
            Some(waiting) => committed(waiting).await,
            None => Ok(()),
        }
    }

    /// Lets go of the log's storage: later changes are refused. The old
    /// log is dropped on the blocking pool (a durable log waits there for
    /// its writer thread to close the store).
    pub(crate) async fn close_log(&self) {
        let log = {
            let mut st = self.state.lock().await;
            std::mem::replace(&mut st.log, Box::new(ClosedLog))
        };
        natter_runtime::spawn_blocking(move || drop(log)).await;
    }

    /// Sends a direct message; returns the recipient's nick as it is spelled.
    pub(crate) async fn whisper(
        &self,
        id: ConnId,
        to: &str,
        text: &str,
    ) -> Result<String, ErrorCode> {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let from = st.users.get(&id).ok_or(ErrorCode::Internal)?;
        let target_id = *st.nicks.get(&nick_key(to)).ok_or(ErrorCode::NoSuchUser)?;
        let target = st.users.get(&target_id).ok_or(ErrorCode::NoSuchUser)?;
        let frame = encode(&ServerMessage::Whisper(WhisperEvent {
            from: from.nick.to_string(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        let cause = if target_id == id {
            Cause::Own
        } else {
            Cause::Other
        };
        post.send(target_id, &target.outbox, &frame, cause);
        Ok(target.nick.to_string())
    }

    /// Rooms with at least one member, sorted by name: a copy of an index
    /// kept in name order, so nothing is sorted, and names are copied only
    /// after the lock is released.
    pub(crate) async fn rooms(&self) -> Vec<RoomCount> {
        let listing = self.state.lock().await.rooms.listing();
        listing
            .into_iter()
            .map(|(name, members)| RoomCount {
                room: name.to_string(),
                members,
            })
            .collect()
    }

    /// A room's members, sorted (after the lock is released); empty for an
    /// unknown room.
    pub(crate) async fn who(&self, name: &str) -> Vec<String> {
        let nicks = {
            let st = self.state.lock().await;
            st.rooms
                .get(name)
                .map(|room| st.member_nicks(room))
                .unwrap_or_default()
        };
        sorted(nicks)
    }

    pub(crate) async fn counts(&self) -> RegistryCounts {
        let st = self.state.lock().await;
        RegistryCounts {
            users: st.users.len(),
            rooms: st.rooms.len(),
            memberships: st.rooms.memberships(),
        }
    }
}

impl Registry {
    /// The lock every method takes: the guard, plus the writers to wake
    /// once it is released.
    async fn lock(&self) -> Locked<'_, State> {
        Locked::lock(&self.state).await
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A number no other room of this process has had.
    fn next_incarnation(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch - 1
    }

    /// Ends a membership and tells the log about the rooms that evicts.
    fn exit_room(&mut self, name: &str, id: ConnId, now: u64) {
        for evicted in self.rooms.exit(name, id, now) {
            // Nobody waits for an eviction: if it is lost in a crash, the
            // room is still within --max-rooms when read back.
            self.log.evict(&evicted);
        }
    }

    /// For a change the log queued: records what waits for its commit and
    /// returns the receiver to await once the lock is released. `None` when
    /// there is nothing to wait for (written at once, or refused).
    fn await_commit(
        &mut self,
        written: Written,
        message: Option<Unpublished>,
    ) -> Option<oneshot::Receiver<Result<(), ErrorCode>>> {
        let Written::Queued(op) = written else {
            return None;
        };
        let (done, waiting) = oneshot::channel();
        self.pending.push_back(Pending { op, message, done });
        Some(waiting)
    }

    fn guest_nick(&mut self) -> String {
        loop {
            let nick = format!("guest-{}", self.next_guest);
            self.next_guest += 1;
            if !self.nicks.contains_key(&nick) {
                return nick;
            }
        }
    }

    /// The nicks of a room's members, unsorted: pointer copies, cheap
    /// enough to take under the lock.
    fn member_nicks(&self, room: &Room) -> Vec<Arc<str>> {
        room.members()
            .keys()
            .filter_map(|m| self.users.get(m).map(|u| u.nick.clone()))
            .collect()
    }
}

/// Waits for a commit (and its publication) reported by the publisher.
/// A report that can never come (the server stopped) is an internal error.
async fn committed(waiting: oneshot::Receiver<Result<(), ErrorCode>>) -> Result<(), ErrorCode> {
    waiting.await.unwrap_or(Err(ErrorCode::Internal))
}

/// Sorts nicks by bytes (the order of `who` and of a join reply's
/// `members`) and copies them out; called once the lock is released.
fn sorted(mut nicks: Vec<Arc<str>>) -> Vec<String> {
    nicks.sort_unstable();
    nicks.iter().map(|n| n.to_string()).collect()
}

fn presence(room: &str, event: PresenceKind, nick: &str, old: Option<&str>) -> Frame {
    encode(&ServerMessage::Presence(Presence {
        room: room.to_owned(),
        event,
        nick: nick.to_owned(),
        old: old.map(str::to_owned),
    }))
}
