//! What the connection tasks call in a cluster: each request runs its
//! script in the broker, then waits until this node has delivered the
//! event it caused (see the module docs of `super`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::channel::oneshot;
use natter_protocol::names::nick_key;
use natter_protocol::{ChatMessage, ErrorCode, RoomCount, ServerMessage, WhisperEvent};
use natter_runtime::redis;

use crate::broadcast::Locked;
use crate::conn_id::ConnId;
use crate::frame::{Frame, encode, unix_ms};
use crate::outbox::{Cause, Outbox};
use crate::registry::{Joined, RegistryCounts};
use crate::room::HistorySlice;

use super::bus;
use super::local::User;
use super::node::Cluster;
use super::scripts;

impl Cluster {
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
            .arg(bus::BUS)
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
