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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_lock::Mutex;
use natter_protocol::names::nick_key;
use natter_protocol::{
    ChatMessage, ErrorCode, Presence, PresenceKind, RoomCount, ServerMessage, WhisperEvent,
};

use crate::broadcast::Locked;
use crate::conn_id::ConnId;
use crate::frame::{Frame, encode, unix_ms};
use crate::outbox::{Cause, Outbox};
use crate::room::{HistorySlice, Room, Rooms};

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
    pub(crate) fn new(config: RegistryConfig) -> Registry {
        Registry {
            state: Mutex::new(State {
                users: HashMap::new(),
                nicks: HashMap::new(),
                rooms: Rooms::new(config.max_rooms),
                next_guest: 1,
                next_epoch: 1,
                clock: 0,
            }),
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
            st.rooms.exit(name, id, now);
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
    pub(crate) async fn join(
        &self,
        id: ConnId,
        name: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Joined, ErrorCode> {
        let (nicks, seq, epoch, history) = {
            let mut locked = self.lock().await;
            let (st, mut post) = locked.parts();
            let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
            let already = user.rooms.contains(name);
            if !already && user.rooms.len() >= self.config.max_rooms_per_connection {
                return Err(ErrorCode::TooManyRooms);
            }
            if !already {
                let (nick, outbox) = (user.nick.clone(), user.outbox.clone());
                st.tick();
                let room = st.rooms.enter(name, id, outbox, || {
                    let epoch = format!("{:08x}.{}", self.epoch_nonce, st.next_epoch);
                    st.next_epoch += 1;
                    Room::new(epoch, self.config.history)
                });
                let frame = presence(name, PresenceKind::Join, &nick, None);
                post.broadcast(room.members(), &frame, id);
                if let Some(user) = st.users.get_mut(&id) {
                    user.rooms.insert(name.to_owned());
                }
            }
            let room = st.rooms.get(name).ok_or(ErrorCode::Internal)?;
            (
                st.member_nicks(room),
                room.last_seq,
                room.epoch.clone(),
                room.history_since(since, epoch),
            )
        };
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
        st.rooms.exit(name, id, now);
        Ok(())
    }

    /// Says `text` in a room: takes the next seq, encodes the message once,
    /// keeps it in history and queues it for every member. Returns the seq.
    pub(crate) async fn say(&self, id: ConnId, name: &str, text: &str) -> Result<u64, ErrorCode> {
        let mut locked = self.lock().await;
        let (st, mut post) = locked.parts();
        let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
        if !user.rooms.contains(name) {
            return Err(ErrorCode::NotMember);
        }
        let room = st.rooms.get_mut(name).ok_or(ErrorCode::Internal)?;
        let seq = room.next_seq();
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: name.to_owned(),
            seq,
            from: user.nick.to_string(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        room.remember(seq, frame.clone());
        // No activity stamp: the room has a member (the sender), and only
        // empty rooms are ranked by activity (see `Rooms`).
        post.broadcast(room.members(), &frame, id);
        Ok(seq)
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
