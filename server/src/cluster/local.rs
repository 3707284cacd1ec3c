//! What one node knows locally when it serves in a cluster: its own
//! connections, the rooms they are in, and how far it has delivered each
//! of those rooms' order. Everything shared (nicks, members on every
//! node, seqs, history) lives in the broker; this is only what it takes
//! to hand each bus event to the right local queues, in order.
//!
//! Two parties change it, under the node's one lock: the delivery task
//! (applying bus events, in each room's order) and the connection tasks
//! (after a script returned, to wait for its event: [`Local::wait_for`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::channel::oneshot;

use crate::broadcast::Post;
use crate::close_reason::CloseReason;
use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::outbox::{Cause, Outbox};

use super::bus::{Event, Kind};

/// The node's local state (behind the cluster's lock).
#[derive(Default)]
pub(crate) struct Local {
    /// This node's connections past their handshake.
    pub(crate) users: HashMap<ConnId, User>,
    /// Rooms whose order this node follows: those with local members, and
    /// those a local request waits on.
    rooms: HashMap<Arc<str>, Followed>,
    /// Markers this node published and waits to see come back (see
    /// `bus::Kind::Marker`), by number.
    markers: HashMap<u64, oneshot::Sender<bool>>,
}

/// One local connection.
pub(crate) struct User {
    /// Its nick, as spelled (the broker decides it; kept for whispers to
    /// oneself and the `who` of nobody).
    pub(crate) nick: Arc<str>,
    /// Where its frames go.
    pub(crate) outbox: Arc<Outbox>,
    /// The rooms it is in (so a disconnect can name them, and
    /// `--max-rooms-per-connection` is checked without the broker).
    pub(crate) rooms: BTreeSet<String>,
    /// Whispers that arrived before its `welcome` went out (the broker
    /// knows a nick before this node has sent the welcome): queued after
    /// it. `None` once welcomed.
    pub(crate) early: Option<Vec<Frame>>,
}

/// A room whose order this node follows.
struct Followed {
    /// Its local members.
    members: HashMap<ConnId, Arc<Outbox>>,
    /// The last event delivered here: the next one must be `applied + 1`.
    applied: u64,
    /// Requests waiting for an event (theirs) to be delivered: the number,
    /// and whom to tell (`false`: it never will be; the room was lost).
    waiters: Vec<(u64, oneshot::Sender<bool>)>,
}

/// What became of one bus event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Delivered to this node's members of its room (or whisper).
    Delivered,
    /// Not for this node, or already delivered (a repair overlaps the bus).
    Skipped,
    /// Events between the last delivered (`after`) and this one are
    /// missing: the caller repairs the room from the broker's log.
    Gap {
        /// The last event delivered in order.
        after: u64,
    },
}

impl Local {
    /// Hands one bus event to this node's members, in its room's order.
    /// `me` is this node's id.
    pub(crate) fn apply(&mut self, post: &mut Post<'_>, event: &Event<'_>, me: &str) -> Applied {
        let subject = (event.node == me).then_some(event.conn);
        match event.kind {
            Kind::Whisper => return self.whisper(post, subject, event.frame),
            Kind::Marker => {
                let Some(tell) = subject.and_then(|n| self.markers.remove(&n)) else {
                    return Applied::Skipped;
                };
                let _ = tell.send(true);
                return Applied::Delivered;
            }
            _ => {}
        }
        let room = match self.rooms.get_mut(event.room) {
            Some(room) => room,
            // A room is followed from a local member's own `join` on.
            None if event.kind == Kind::Join
                && subject.is_some_and(|c| self.users.contains_key(&c)) =>
            {
                self.rooms
                    .entry(Arc::from(event.room))
                    .or_insert_with(|| Followed::after(event.ev - 1))
            }
            None => return Applied::Skipped,
        };
        if event.ev <= room.applied {
            return Applied::Skipped;
        }
        if event.ev > room.applied + 1 {
            return Applied::Gap {
                after: room.applied,
            };
        }
        let subject = subject.unwrap_or(0);
        if event.kind == Kind::Join
            && let Some(user) = self.users.get(&subject)
        {
            room.members.insert(subject, user.outbox.clone());
        }
        let frame = Frame::from(event.frame.to_owned());
        post.broadcast(room.members.iter(), &frame, subject);
        if event.kind == Kind::Leave {
            room.members.remove(&subject);
        }
        room.applied = event.ev;
        room.resolve(true);
        if room.is_idle() {
            self.rooms.remove(event.room);
        }
        Applied::Delivered
    }

    fn whisper(&mut self, post: &mut Post<'_>, to: Option<ConnId>, frame: &str) -> Applied {
        let Some(user) = to.and_then(|c| self.users.get_mut(&c).map(|u| (c, u))) else {
            return Applied::Skipped;
        };
        let (id, user) = user;
        let frame = Frame::from(frame.to_owned());
        match &mut user.early {
            Some(early) => early.push(frame),
            None => post.send(id, &user.outbox, &frame, Cause::Other),
        }
        Applied::Delivered
    }

    /// For a request whose script produced event `ev` in `room`: `None` if
    /// it has been delivered here already, else a receiver that says when
    /// it is (`true`) or that it never will be (`false`). A room nobody
    /// here follows yet (a join whose event is still on its way) is
    /// followed from just before `ev`.
    pub(crate) fn wait_for(&mut self, room: &str, ev: u64) -> Option<oneshot::Receiver<bool>> {
        let followed = self
            .rooms
            .entry(Arc::from(room))
            .or_insert_with(|| Followed::after(ev.saturating_sub(1)));
        if followed.applied >= ev {
            return None;
        }
        let (tell, told) = oneshot::channel();
        followed.waiters.push((ev, tell));
        Some(told)
    }

    /// Waits for marker `number` to come back over the bus.
    pub(crate) fn wait_for_marker(&mut self, number: u64) -> oneshot::Receiver<bool> {
        let (tell, told) = oneshot::channel();
        self.markers.insert(number, tell);
        told
    }

    /// The rooms followed and the last event delivered in each: what a
    /// node checks against the broker after its subscription was lost.
    pub(crate) fn followed(&self) -> Vec<(Arc<str>, u64)> {
        self.rooms
            .iter()
            .map(|(name, room)| (name.clone(), room.applied))
            .collect()
    }

    /// The last event delivered in `room`, if it is followed.
    pub(crate) fn applied(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|r| r.applied)
    }

    /// A room's missing events cannot be recovered: its local members are
    /// closed with 1013 (they reconnect and recover with `since`), and
    /// the requests waiting on it fail. Returns how many were closed.
    pub(crate) fn lose_room(&mut self, room: &str) -> usize {
        let Some(mut followed) = self.rooms.remove(room) else {
            return 0;
        };
        for outbox in followed.members.values() {
            outbox.close(CloseReason::TryAgainLater);
        }
        followed.resolve(false);
        followed.members.len()
    }

    /// The broker is lost: every local connection is closed with 1013 and
    /// forgotten, every waiting request fails. Returns how many were closed.
    pub(crate) fn lose_all(&mut self) -> usize {
        for user in self.users.values() {
            user.outbox.close(CloseReason::TryAgainLater);
        }
        for followed in self.rooms.values_mut() {
            followed.resolve(false);
        }
        self.rooms.clear();
        // Dropped senders: those waits fail.
        self.markers.clear();
        std::mem::take(&mut self.users).len()
    }

    /// Forgets a connection that is going: it leaves every room's local
    /// members at once (nothing more is queued for it). Returns the rooms
    /// it was in, for the broker.
    pub(crate) fn remove_user(&mut self, id: ConnId) -> Option<Vec<String>> {
        let user = self.users.remove(&id)?;
        for name in &user.rooms {
            if let Some(room) = self.rooms.get_mut(name.as_str()) {
                room.members.remove(&id);
                if room.is_idle() {
                    self.rooms.remove(name.as_str());
                }
            }
        }
        Some(user.rooms.into_iter().collect())
    }

    /// Rooms followed, and local memberships (for `/metrics`).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let memberships = self.rooms.values().map(|r| r.members.len()).sum();
        (self.rooms.len(), memberships)
    }
}

impl Followed {
    fn after(applied: u64) -> Followed {
        Followed {
            members: HashMap::new(),
            applied,
            waiters: Vec::new(),
        }
    }

    /// Tells the waiters whose event is delivered (`true`), or all of them
    /// that it never will be (`false`).
    fn resolve(&mut self, delivered: bool) {
        let applied = self.applied;
        let mut i = 0;
        while i < self.waiters.len() {
            if !delivered || self.waiters[i].0 <= applied {
                let (_, tell) = self.waiters.swap_remove(i);
                // The request may have gone (its connection closed).
                let _ = tell.send(delivered);
            } else {
                i += 1;
            }
        }
    }

    /// No local member and nobody waiting: the node can stop following.
    fn is_idle(&self) -> bool {
        self.members.is_empty() && self.waiters.is_empty()
    }
}
