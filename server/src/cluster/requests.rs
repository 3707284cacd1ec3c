//! What the connection tasks call in a cluster: each request runs its
//! script in the broker, then waits until this node has delivered the
//! event it caused (see the module docs of `super`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use natter_protocol::names::nick_key;
use natter_protocol::{ChatMessage, ErrorCode, RoomCount, ServerMessage, WhisperEvent};
use natter_runtime::redis;
use natter_runtime::timeout;

use crate::broadcast::Locked;
use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::frame::{Frame, encode, unix_ms};
use crate::outbox::{Cause, Outbox};
use crate::registry::{Joined, RegistryCounts};
use crate::room::HistorySlice;

use super::bus;
use super::local::{Local, Stale, User};
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
        self.local
            .lock()
            .await
            .users
            .insert(id, User::new(outbox.clone()));
        let answer = match self.link() {
            Ok(mut c) => {
                let connected = self.scripts.connect(&mut c, self.me(), id, wanted);
                self.checked(connected.await)
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
        let (rooms, ticket) = {
            let mut local = self.local.lock().await;
            let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
            let rooms: Vec<String> = user.rooms.iter().cloned().collect();
            let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
            let ticket = self.ticket(&mut local, id, &names)?;
            (rooms, ticket)
        };
        let renamed = match self.link() {
            Ok(mut c) => {
                let node = &self.config.node;
                self.checked(self.scripts.rename(&mut c, node, id, nick, &rooms).await)
            }
            Err(e) => Err(e),
        };
        let events = match renamed {
            Ok(Ok(events)) => events,
            Ok(Err(refused)) => {
                self.unpin(id).await;
                return Err(refused);
            }
            Err(_) => {
                self.unpin(id).await;
                return Err(ErrorCode::Internal);
            }
        };
        if let Some(user) = self.local.lock().await.users.get_mut(&id) {
            user.nick = Arc::from(nick);
        }
        let events: Vec<(&str, &str, u64)> = events
            .iter()
            .map(|(room, ev, epoch)| (room.as_str(), epoch.as_str(), *ev))
            .collect();
        self.settle(id, ticket, &events).await?;
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
        let ticket = {
            let mut local = self.local.lock().await;
            let user = local.users.get_mut(&id).ok_or(ErrorCode::Internal)?;
            if !user.rooms.contains(name) {
                if user.rooms.len() >= self.config.max_rooms_per_connection {
                    return Err(ErrorCode::TooManyRooms);
                }
                // Before the script: should this request be dropped with
                // its connection while the script runs, the disconnect
                // still names the room (leaving a room one is not in is
                // nothing).
                user.rooms.insert(name.to_owned());
            }
            self.ticket(&mut local, id, &[name])?
        };
        let joined = match self.link() {
            Ok(mut c) => {
                let prefix = &self.epoch_prefix;
                let joined = self
                    .scripts
                    .join(&mut c, self.me(), id, name, prefix, since, epoch);
                self.checked(joined.await)
            }
            Err(e) => Err(e),
        };
        let Ok(answer) = joined else {
            self.unpin(id).await;
            return Err(ErrorCode::Internal);
        };
        self.settle(id, ticket, &[(name, &answer.epoch, answer.ev)])
            .await?;
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
        let ticket = {
            let mut local = self.local.lock().await;
            member_of(&local, id, name)?;
            self.ticket(&mut local, id, &[name])?
        };
        let left = match self.link() {
            Ok(mut c) => {
                let node = &self.config.node;
                let left = self.scripts.leave(&mut c, node, id, name, &self.bounds);
                self.checked(left.await)
            }
            Err(e) => Err(e),
        };
        let left = match left {
            Ok(left) => left,
            Err(_) => {
                self.unpin(id).await;
                return Err(ErrorCode::Internal);
            }
        };
        if let Some(user) = self.local.lock().await.users.get_mut(&id) {
            user.rooms.remove(name);
        }
        let Some((ev, epoch)) = left else {
            self.unpin(id).await;
            return Err(ErrorCode::NotMember);
        };
        self.settle(id, ticket, &[(name, &epoch, ev)]).await
    }

    /// Says `text` in a room: the broker numbers it and publishes it; the
    /// reply (the seq) follows once this node delivered it to the sender.
    pub(crate) async fn say(&self, id: ConnId, name: &str, text: &str) -> Result<u64, ErrorCode> {
        let (from, ticket) = {
            let mut local = self.local.lock().await;
            let from = member_of(&local, id, name)?;
            (from, self.ticket(&mut local, id, &[name])?)
        };
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: name.to_owned(),
            seq: 0,
            from: from.to_string(),
            text: text.to_owned(),
            ts: unix_ms(),
        }));
        let said = match (split_at_seq(&frame), self.link()) {
            (Some((head, tail)), Ok(mut c)) => {
                let node = &self.config.node;
                let said = self
                    .scripts
                    .say(&mut c, node, id, name, head, tail, &self.bounds);
                self.checked(said.await).map_err(|_| ErrorCode::Internal)
            }
            _ => Err(ErrorCode::Internal),
        };
        let (seq, ev, epoch) = match said {
            Ok(Some(said)) => said,
            Ok(None) => {
                self.unpin(id).await;
                return Err(ErrorCode::NotMember);
            }
            Err(code) => {
                self.unpin(id).await;
                return Err(code);
            }
        };
        self.settle(id, ticket, &[(name, &epoch, ev)]).await?;
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
    pub(crate) async fn rooms(&self) -> Result<Vec<RoomCount>, ErrorCode> {
        let listed = match self.link() {
            Ok(mut c) => self.checked(scripts::rooms(&mut c).await),
            Err(e) => Err(e),
        };
        let mut rooms: Vec<RoomCount> = listed
            .map_err(|_| ErrorCode::Internal)?
            .into_iter()
            .map(|(room, members)| RoomCount {
                room,
                members: usize::try_from(members).unwrap_or(usize::MAX),
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        Ok(rooms)
    }

    /// A room's members on every node, sorted.
    pub(crate) async fn who(&self, name: &str) -> Result<Vec<String>, ErrorCode> {
        let listed = match self.link() {
            Ok(mut c) => self.checked(scripts::who(&mut c, name).await),
            Err(e) => Err(e),
        };
        let mut members = listed.map_err(|_| ErrorCode::Internal)?;
        members.sort_unstable();
        Ok(members)
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

    /// Pins `rooms` for connection `id`'s request, before its script runs
    /// (see `local.rs`), and notes the session and subscription it runs
    /// in.
    fn ticket(&self, local: &mut Local, id: ConnId, rooms: &[&str]) -> Result<Ticket, ErrorCode> {
        let session = local.pin(id, rooms).ok_or(ErrorCode::Internal)?;
        Ok(Ticket {
            session,
            generation: self.generation.load(Ordering::SeqCst),
        })
    }

    /// Lets go of what a request pinned whose script failed.
    async fn unpin(&self, id: ConnId) {
        self.local.lock().await.unpin(id);
    }

    /// After a request's script: waits until this node has delivered each
    /// event the script caused (`(room, epoch, ev)`), so the reply follows
    /// the requester's own events. An event that will never be delivered
    /// here (its room's order was lost, the broker session ended, or it did
    /// not come within [`DELIVERY_DEADLINE`]) closes the connection with
    /// 1013: its client reconnects and recovers with `since`.
    async fn settle(
        &self,
        id: ConnId,
        ticket: Ticket,
        events: &[(&str, &str, u64)],
    ) -> Result<(), ErrorCode> {
        let waits = {
            let mut local = self.local.lock().await;
            let mut waits = Vec::new();
            let mut stale = false;
            for &(room, epoch, ev) in events {
                match local.wait_for(ticket.session, room, epoch, ev) {
                    Ok(Some(wait)) => waits.push(wait),
                    Ok(None) => {}
                    Err(Stale) => stale = true,
                }
                if self.generation.load(Ordering::SeqCst) != ticket.generation {
                    // The subscription was made again while the script
                    // ran: its event may have fallen in the gap. (The
                    // channel is unbounded; its receiver lives in `self`.)
                    let _ = self.resync.0.try_send(Arc::from(room));
                }
            }
            local.unpin(id);
            if stale {
                close_with_1013(&local, id);
                return Err(ErrorCode::Internal);
            }
            waits
        };
        for wait in waits {
            if !matches!(timeout(DELIVERY_DEADLINE, wait).await, Some(Ok(true))) {
                close_with_1013(&*self.local.lock().await, id);
                return Err(ErrorCode::Internal);
            }
        }
        Ok(())
    }

    /// This node's name and the token of its life, as the scripts that add
    /// state take them.
    fn me(&self) -> (&str, &str) {
        (&self.config.node, &self.token)
    }
}

/// What a request pinned its rooms under.
struct Ticket {
    /// The broker session (see `Local::lose_all`).
    session: u64,
    /// The bus subscription (see `Cluster::generation`).
    generation: u64,
}

/// How long a request waits for its own event to come back over the bus
/// before it gives up on its connection. Generous: under overload the
/// delivery task may wait for writers (guarantee 4) a long while; the
/// bound only keeps a lost event from holding a connection for ever.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// The connection's nick, if it is in `room` (else `not_member`, without
/// asking the broker).
fn member_of(local: &Local, id: ConnId, room: &str) -> Result<Arc<str>, ErrorCode> {
    let user = local.users.get(&id).ok_or(ErrorCode::Internal)?;
    if !user.rooms.contains(room) {
        return Err(ErrorCode::NotMember);
    }
    Ok(user.nick.clone())
}

/// Closes a connection whose room order this node lost: what was queued
/// goes out, then 1013.
fn close_with_1013(local: &Local, id: ConnId) {
    if let Some(user) = local.users.get(&id) {
        user.outbox.close(CloseReason::TryAgainLater);
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
