//! The room registry: who is connected, under which nick, in which rooms;
//! shared by every connection task behind one `async_lock::Mutex`.
//!
//! Why one async mutex over everything: every operation that must be
//! ordered — taking a room's next seq and handing the frame to every
//! member's queue, a join's presence and its history snapshot, a rename
//! across all of a member's rooms — happens inside a single critical
//! section, which is what makes "one order per room" true for every member.
//! The rule that keeps this cheap: **no await while the guard is held**.
//! Each method locks, does synchronous work (queueing is `try_send`, never
//! a wait on a socket), and unlocks. An async (not std) mutex because
//! waiting for it must not block an executor thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_lock::Mutex;
use natter_protocol::names::nick_key;
use natter_protocol::{
    ChatMessage, ErrorCode, Presence, PresenceKind, RoomCount, ServerMessage, WhisperEvent,
};

use crate::broadcast::{Wakeups, deliver, offer};
use crate::outbox::{Frame, Outbox};
use crate::room::{HistorySlice, Room};

/// Identifies one connection for the whole life of the server.
pub type ConnId = u64;

/// Registry settings taken from the server configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub history: usize,
    pub max_rooms: usize,
    pub max_rooms_per_connection: usize,
}

pub struct Registry {
    state: Mutex<State>,
    config: RegistryConfig,
    /// Random per process, so epochs differ across restarts.
    epoch_nonce: u32,
}

#[derive(Default)]
struct State {
    users: HashMap<ConnId, User>,
    /// Lower-cased nick → connection: nicks are unique case-insensitively.
    nicks: HashMap<String, ConnId>,
    rooms: HashMap<String, Room>,
    next_guest: u64,
    next_epoch: u64,
    /// Logical clock for "least recently active".
    clock: u64,
}

struct User {
    nick: String,
    outbox: Arc<Outbox>,
    rooms: BTreeSet<String>,
}

/// A successful join, with what the reply needs (encoded outside the lock).
pub struct Joined {
    pub members: Vec<String>,
    pub seq: u64,
    pub epoch: String,
    pub history: HistorySlice,
}

/// Counts for tests and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryCounts {
    pub users: usize,
    pub rooms: usize,
    pub memberships: usize,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            state: Mutex::new(State {
                next_guest: 1,
                next_epoch: 1,
                ..State::default()
            }),
            config,
            epoch_nonce: fastrand::u32(..),
        }
    }

    /// Makes a connection visible under the nick it asked for (or a guest
    /// nick), and queues its `welcome` inside the same critical section so
    /// nothing — not even a whisper — can reach it first.
    pub async fn connect(
        &self,
        id: ConnId,
        wanted: Option<&str>,
        outbox: Arc<Outbox>,
        welcome: impl FnOnce(&str, Option<ErrorCode>) -> Frame,
    ) -> String {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
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
        outbox.push_own(welcome(&nick, refusal));
        wakes.defer(&outbox);
        st.users.insert(
            id,
            User {
                nick: nick.clone(),
                outbox,
                rooms: BTreeSet::new(),
            },
        );
        nick
    }

    /// Removes a connection: its nick is freed and every room it was in
    /// gets a `leave`. Safe to call twice.
    pub async fn disconnect(&self, id: ConnId) {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
        let Some(user) = st.users.remove(&id) else {
            return;
        };
        st.nicks.remove(&nick_key(&user.nick));
        let now = st.tick();
        for name in &user.rooms {
            if let Some(room) = st.rooms.get_mut(name) {
                room.members.remove(&id);
                room.last_active = now;
                let frame = presence(name, PresenceKind::Leave, &user.nick, None);
                deliver(&room.members, &frame, id, &mut wakes);
            }
        }
    }

    /// Changes a connection's nick; every room it is in hears a `rename`.
    pub async fn rename(&self, id: ConnId, nick: &str) -> Result<String, ErrorCode> {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
        let st = &mut *st;
        let key = nick_key(nick);
        if st.nicks.get(&key).is_some_and(|&owner| owner != id) {
            return Err(ErrorCode::NickTaken);
        }
        let user = st.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
        if user.nick == nick {
            return Ok(user.nick.clone());
        }
        let old = std::mem::replace(&mut user.nick, nick.to_owned());
        st.nicks.remove(&nick_key(&old));
        st.nicks.insert(key, id);
        for name in &user.rooms {
            if let Some(room) = st.rooms.get(name) {
                let frame = presence(name, PresenceKind::Rename, nick, Some(&old));
                deliver(&room.members, &frame, id, &mut wakes);
            }
        }
        Ok(nick.to_owned())
    }

    pub async fn join(
        &self,
        id: ConnId,
        name: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Joined, ErrorCode> {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
        let now = st.tick();
        let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
        let already = user.rooms.contains(name);
        if !already && user.rooms.len() >= self.config.max_rooms_per_connection {
            return Err(ErrorCode::TooManyRooms);
        }
        let (nick, outbox) = (user.nick.clone(), user.outbox.clone());
        if !already {
            if !st.rooms.contains_key(name) {
                st.evict_for_new_room(self.config.max_rooms);
                let epoch = format!("{:08x}.{}", self.epoch_nonce, st.next_epoch);
                st.next_epoch += 1;
                st.rooms
                    .insert(name.to_owned(), Room::new(epoch, self.config.history, now));
            }
            if let Some(user) = st.users.get_mut(&id) {
                user.rooms.insert(name.to_owned());
            }
        }
        let st = &mut *st;
        let room = st.rooms.get_mut(name).ok_or(ErrorCode::Internal)?;
        if !already {
            room.members.insert(id, outbox);
            room.last_active = now;
            let frame = presence(name, PresenceKind::Join, &nick, None);
            deliver(&room.members, &frame, id, &mut wakes);
        }
        let mut members: Vec<String> = room
            .members
            .keys()
            .filter_map(|m| st.users.get(m).map(|u| u.nick.clone()))
            .collect();
        members.sort_unstable();
        Ok(Joined {
            members,
            seq: room.last_seq,
            epoch: room.epoch.clone(),
            history: room.history_since(since, epoch),
        })
    }

    /// Leaves a room; the leaver hears its own `leave` too.
    pub async fn leave(&self, id: ConnId, name: &str) -> Result<(), ErrorCode> {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
        let now = st.tick();
        let st = &mut *st;
        let user = st.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
        if !user.rooms.remove(name) {
            return Err(ErrorCode::NotMember);
        }
        if let Some(room) = st.rooms.get_mut(name) {
            let frame = presence(name, PresenceKind::Leave, &user.nick, None);
            deliver(&room.members, &frame, id, &mut wakes);
            room.members.remove(&id);
            room.last_active = now;
        }
        Ok(())
    }

    /// Says `text` in a room: takes the next seq, encodes the message once,
    /// keeps it in history and queues it for every member. Returns the seq.
    pub async fn say(&self, id: ConnId, name: &str, text: &str) -> Result<u64, ErrorCode> {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let mut st = self.state.lock().await;
        let now = st.tick();
        let st = &mut *st;
        let user = st.users.get(&id).ok_or(ErrorCode::Internal)?;
        if !user.rooms.contains(name) {
            return Err(ErrorCode::NotMember);
        }
        let room = st.rooms.get_mut(name).ok_or(ErrorCode::Internal)?;
        let seq = room.next_seq();
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: name.to_owned(),
            seq,
            from: user.nick.clone(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        room.remember(seq, frame.clone());
        room.last_active = now;
        deliver(&room.members, &frame, id, &mut wakes);
        Ok(seq)
    }

    /// Sends a direct message; returns the recipient's nick as it is spelled.
    pub async fn whisper(&self, id: ConnId, to: &str, text: &str) -> Result<String, ErrorCode> {
        let mut wakes = Wakeups::default(); // woken after the guard drops
        let st = self.state.lock().await;
        let from = st.users.get(&id).ok_or(ErrorCode::Internal)?;
        let target_id = *st.nicks.get(&nick_key(to)).ok_or(ErrorCode::NoSuchUser)?;
        let target = st.users.get(&target_id).ok_or(ErrorCode::NoSuchUser)?;
        let frame = encode(&ServerMessage::Whisper(WhisperEvent {
            from: from.nick.clone(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        if target_id == id {
            target.outbox.push_own(frame);
        } else {
            offer(target_id, &target.outbox, &frame);
        }
        wakes.defer(&target.outbox);
        Ok(target.nick.clone())
    }

    /// Rooms with at least one member, sorted by name.
    pub async fn rooms(&self) -> Vec<RoomCount> {
        let st = self.state.lock().await;
        let mut rooms: Vec<RoomCount> = st
            .rooms
            .iter()
            .filter(|(_, room)| !room.members.is_empty())
            .map(|(name, room)| RoomCount {
                room: name.clone(),
                members: room.members.len(),
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// A room's members, sorted; empty for an unknown room.
    pub async fn who(&self, name: &str) -> Vec<String> {
        let st = self.state.lock().await;
        let mut members: Vec<String> = st
            .rooms
            .get(name)
            .map(|room| {
                room.members
                    .keys()
                    .filter_map(|m| st.users.get(m).map(|u| u.nick.clone()))
                    .collect()
            })
            .unwrap_or_default();
        members.sort_unstable();
        members
    }

    pub async fn counts(&self) -> RegistryCounts {
        let st = self.state.lock().await;
        RegistryCounts {
            users: st.users.len(),
            rooms: st.rooms.len(),
            memberships: st.rooms.values().map(|r| r.members.len()).sum(),
        }
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

    /// Keeps the number of retained rooms under `max` by evicting the least
    /// recently active room that has no members; rooms with members stay.
    fn evict_for_new_room(&mut self, max: usize) {
        if self.rooms.len() < max {
            return;
        }
        let victim = self
            .rooms
            .iter()
            .filter(|(_, room)| room.members.is_empty())
            .min_by_key(|(_, room)| room.last_active)
            .map(|(name, _)| name.clone());
        if let Some(name) = victim {
            log::debug!("evicting empty room {name:?} to stay within {max} rooms");
            self.rooms.remove(&name);
        }
    }
}

fn presence(room: &str, event: PresenceKind, nick: &str, old: Option<&str>) -> Frame {
    encode(&ServerMessage::Presence(Presence {
        room: room.to_owned(),
        event,
        nick: nick.to_owned(),
        old: old.map(str::to_owned),
    }))
}

/// Encodes a server message once, as a frame every recipient can share.
pub fn encode(message: &ServerMessage) -> Frame {
    Frame::from(message.to_json())
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
