//! What one node knows locally when it serves in a cluster: its own
//! connections, the rooms they are in, and how far it has delivered each
//! of those rooms' order. Everything shared (nicks, members on every
//! node, seqs, history) lives in the broker; this is only what it takes
//! to hand each bus event to the right local queues, in order.
//!
//! Two parties change it, under the node's one lock: the delivery task
//! (applying bus events, in each room's order) and the connection tasks.
//! A request that will cause a room event **pins** the room first
//! ([`Local::pin`]), before its script runs, so the room is followed from
//! before the event exists: the delivery task cannot pass the event by
//! unseen, and the request can then wait for it ([`Local::wait_for`]).
//! Where a followed room stands in its order is unknown until the delivery
//! task sees its first event after the pin; only the delivery task (or a
//! repair) ever sets it.

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
    /// those a local request has pinned or waits on.
    rooms: HashMap<Arc<str>, Followed>,
    /// Markers this node published and waits to see come back (see
    /// `bus::Kind::Marker`), by number.
    markers: HashMap<u64, oneshot::Sender<bool>>,
    /// Bumped each time the broker is lost ([`Local::lose_all`]): a request
    /// pinned in an earlier session must not wait for an event that went
    /// with that session's subscription.
    session: u64,
}

/// One local connection.
pub(crate) struct User {
    /// Its nick, as spelled (the broker decides it).
    pub(crate) nick: Arc<str>,
    /// Where its frames go.
    pub(crate) outbox: Arc<Outbox>,
    /// The rooms it is in, or is joining (added before the join's script
    /// runs, so a disconnect always names every room the broker may hold
    /// it in), checked against `--max-rooms-per-connection` here.
    pub(crate) rooms: BTreeSet<String>,
    /// Whispers that arrived before its `welcome` went out (the broker
    /// knows a nick before this node has sent the welcome): queued after
    /// it. `None` once welcomed.
    pub(crate) early: Option<Vec<Frame>>,
    /// The rooms its request in flight pinned, unpinned when it has its
    /// event or fails — or, if the request is dropped with its connection,
    /// when the connection is removed.
    pinned: Vec<Arc<str>>,
}

impl User {
    /// A connection just upgraded, not welcomed yet.
    pub(crate) fn new(outbox: Arc<Outbox>) -> User {
        User {
            nick: Arc::from(""),
            outbox,
            rooms: BTreeSet::new(),
            early: Some(Vec::new()),
            pinned: Vec::new(),
        }
    }
}

/// A room whose order this node follows.
#[derive(Default)]
struct Followed {
    /// Its local members.
    members: HashMap<ConnId, Arc<Outbox>>,
    /// The incarnation followed and the last event delivered here (the
    /// next must be one more); `None` until the first event after the room
    /// was pinned.
    at: Option<(Arc<str>, u64)>,
    /// Requests in flight that will cause an event here.
    pins: usize,
    /// Requests waiting for their event: its epoch and number, and whom to
    /// tell (`false`: it will never be delivered; the room was lost).
    waiters: Vec<(Arc<str>, u64, oneshot::Sender<bool>)>,
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
    /// The room this node's members heard is gone (forgotten and created
    /// again): the caller closes them ([`Local::lose_room`]).
    Lost,
}

/// A request whose room was lost, or whose session ended, while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

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
        let Some(room) = self.rooms.get_mut(event.room) else {
            return Applied::Skipped;
        };
        let applied = match &room.at {
            Some((epoch, applied)) if **epoch == *event.epoch => *applied,
            // A new incarnation where nobody here heard the old one (only
            // requests wait): follow the new one from this event.
            Some(_) if room.members.is_empty() => room.start_at(event),
            Some(_) => return Applied::Lost,
            None => room.start_at(event),
        };
        if event.ev <= applied {
            return Applied::Skipped;
        }
        if event.ev > applied + 1 {
            return Applied::Gap { after: applied };
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
        room.at = Some((Arc::from(event.epoch), event.ev));
        room.resolve();
        if room.is_idle() {
            self.rooms.remove(event.room);
        }
        Applied::Delivered
    }

    fn whisper(&mut self, post: &mut Post<'_>, to: Option<ConnId>, frame: &str) -> Applied {
        let Some((id, user)) = to.and_then(|c| self.users.get_mut(&c).map(|u| (c, u))) else {
            return Applied::Skipped;
        };
        let frame = Frame::from(frame.to_owned());
        match &mut user.early {
            Some(early) => early.push(frame),
            None => post.send(id, &user.outbox, &frame, Cause::Other),
        }
        Applied::Delivered
    }

    /// Pins `rooms` for a request of connection `id` about to run its
    /// script, and returns the session it runs in. `None`: the connection
    /// is gone (its broker session was lost).
    pub(crate) fn pin(&mut self, id: ConnId, rooms: &[&str]) -> Option<u64> {
        let user = self.users.get_mut(&id)?;
        for &name in rooms {
            let name: Arc<str> = Arc::from(name);
            self.rooms.entry(name.clone()).or_default().pins += 1;
            user.pinned.push(name);
        }
        Some(self.session)
    }

    /// Releases what connection `id` pinned (its request has its answer).
    pub(crate) fn unpin(&mut self, id: ConnId) {
        let pinned = match self.users.get_mut(&id) {
            Some(user) => std::mem::take(&mut user.pinned),
            None => return,
        };
        self.release(&pinned);
    }

    fn release(&mut self, pinned: &[Arc<str>]) {
        for name in pinned {
            if let Some(room) = self.rooms.get_mut(name) {
                room.pins = room.pins.saturating_sub(1);
                if room.is_idle() {
                    self.rooms.remove(name);
                }
            }
        }
    }

    /// For a request (of `session`) whose script produced event `ev` of
    /// incarnation `epoch` in `room`, which it pinned: `Ok(None)` if that
    /// event has been delivered here already, else a receiver that says
    /// when it is (`true`) or that it never will be (`false`).
    pub(crate) fn wait_for(
        &mut self,
        session: u64,
        room: &str,
        epoch: &str,
        ev: u64,
    ) -> Result<Option<oneshot::Receiver<bool>>, Stale> {
        if session != self.session {
            return Err(Stale);
        }
        // Pinned, so followed — unless the room was lost meanwhile.
        let followed = self.rooms.get_mut(room).ok_or(Stale)?;
        if let Some((at, applied)) = &followed.at
            && **at == *epoch
            && *applied >= ev
        {
            return Ok(None);
        }
        let (tell, told) = oneshot::channel();
        followed.waiters.push((Arc::from(epoch), ev, tell));
        Ok(Some(told))
    }

    /// Waits for marker `number` to come back over the bus.
    pub(crate) fn wait_for_marker(&mut self, number: u64) -> oneshot::Receiver<bool> {
        let (tell, told) = oneshot::channel();
        self.markers.insert(number, tell);
        told
    }

    /// What to check against the broker after the subscription was lost:
    /// each followed room, the incarnation it follows (empty: not known
    /// yet) and the last event delivered — or, for a room whose position
    /// is not known yet, just before the earliest event a request waits
    /// for. Rooms pinned with nothing known and nobody waiting are left
    /// out: their requests see the new session number and ask.
    pub(crate) fn to_check(&self) -> Vec<(Arc<str>, Arc<str>, u64)> {
        self.rooms
            .iter()
            .filter_map(|(name, room)| match &room.at {
                Some((epoch, applied)) => Some((name.clone(), epoch.clone(), *applied)),
                None => room
                    .waiters
                    .iter()
                    .min_by_key(|(_, ev, _)| *ev)
                    .map(|(epoch, ev, _)| (name.clone(), epoch.clone(), ev - 1)),
            })
            .collect()
    }

    /// Where `room` stands, for a repair a request asked for: its epoch
    /// (empty if not known) and last event delivered.
    pub(crate) fn position(&self, room: &str) -> Option<(Arc<str>, u64)> {
        let followed = self.rooms.get(room)?;
        match &followed.at {
            Some(at) => Some(at.clone()),
            None => followed
                .waiters
                .iter()
                .min_by_key(|(_, ev, _)| *ev)
                .map(|(epoch, ev, _)| (epoch.clone(), ev - 1)),
        }
    }

    /// A room's missing events cannot be recovered: its local members are
    /// closed with 1013 (they reconnect and recover with `since`), and
    /// the requests waiting on it fail (their connections close too).
    /// Returns how many members were closed.
    pub(crate) fn lose_room(&mut self, room: &str) -> usize {
        let Some(mut followed) = self.rooms.remove(room) else {
            return 0;
        };
        for outbox in followed.members.values() {
            outbox.close(CloseReason::TryAgainLater);
        }
        followed.fail();
        followed.members.len()
    }

    /// The broker is lost: every local connection is closed with 1013 and
    /// forgotten, every waiting request fails, and the session ends.
    /// Returns how many connections were closed.
    pub(crate) fn lose_all(&mut self) -> usize {
        self.session += 1;
        for user in self.users.values() {
            user.outbox.close(CloseReason::TryAgainLater);
        }
        for followed in self.rooms.values_mut() {
            followed.fail();
        }
        self.rooms.clear();
        // Dropped senders: those waits fail.
        self.markers.clear();
        std::mem::take(&mut self.users).len()
    }

    /// Forgets a connection that is going: it leaves every room's local
    /// members at once (nothing more is queued for it) and lets go of what
    /// it pinned. Returns the rooms it was in (or joining), for the broker.
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
        self.release(&user.pinned);
        Some(user.rooms.into_iter().collect())
    }

    /// Rooms followed, and local memberships (for `/metrics`).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let memberships = self.rooms.values().map(|r| r.members.len()).sum();
        (self.rooms.len(), memberships)
    }
}

impl Followed {
    /// Follows the incarnation of `event` from just before it. Requests
    /// waiting on the incarnation followed until now will never get their
    /// event (all of its events came before this one); any other waiter
    /// may be on this incarnation or a later one, and keeps waiting.
    fn start_at(&mut self, event: &Event<'_>) -> u64 {
        let applied = event.ev - 1;
        let previous = self.at.replace((Arc::from(event.epoch), applied));
        if let Some((gone, _)) = previous {
            let mut i = 0;
            while i < self.waiters.len() {
                if self.waiters[i].0 == gone {
                    let (_, _, tell) = self.waiters.swap_remove(i);
                    let _ = tell.send(false);
                } else {
                    i += 1;
                }
            }
        }
        applied
    }

    /// Tells the waiters whose event has been delivered.
    fn resolve(&mut self) {
        let Some((epoch, applied)) = &self.at else {
            return;
        };
        let mut i = 0;
        while i < self.waiters.len() {
            let (e, ev, _) = &self.waiters[i];
            if e == epoch && ev <= applied {
                let (_, _, tell) = self.waiters.swap_remove(i);
                // The request may have gone (its connection closed).
                let _ = tell.send(true);
            } else {
                i += 1;
            }
        }
    }

    /// Tells every waiter its event will not be delivered.
    fn fail(&mut self) {
        for (_, _, tell) in self.waiters.drain(..) {
            let _ = tell.send(false);
        }
    }

    /// No local member, no request pinning it or waiting: the node can
    /// stop following.
    fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pins == 0 && self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    //! The races a request and the delivery task can run (found in review):
    //! each test plays one ordering of bus events and request steps.

    use async_lock::Mutex;

    use super::*;
    use crate::backlog::Backlog;
    use crate::broadcast::Locked;

    const ME: &str = "n1";

    fn payload(kind: &str, room: &str, epoch: &str, ev: u64, node: &str, conn: ConnId) -> String {
        format!("{kind}\n{room}\n{epoch}\n{ev}\n{node}\n{conn}\n{{\"ev\":{ev}}}")
    }

    /// Applies one payload under the lock, as the delivery task does.
    fn deliver(local: &Mutex<Local>, payload: &str) -> Applied {
        natter_runtime::block_on(async {
            let mut locked = Locked::lock(local).await;
            let (local, mut post) = locked.parts();
            let event = super::super::bus::parse(payload.as_bytes()).unwrap();
            local.apply(&mut post, &event, ME)
        })
    }

    fn with_users(ids: &[ConnId]) -> (Mutex<Local>, Vec<Arc<Outbox>>) {
        let mut local = Local::default();
        let mut outboxes = Vec::new();
        for &id in ids {
            let outbox = Outbox::new(64, 4, Arc::new(Backlog::default()));
            let mut user = User::new(outbox.clone());
            user.early = None;
            local.users.insert(id, user);
            outboxes.push(outbox);
        }
        (Mutex::new(local), outboxes)
    }

    fn lock(local: &Mutex<Local>) -> async_lock::MutexGuard<'_, Local> {
        natter_runtime::block_on(local.lock())
    }

    #[test]
    fn two_joins_racing_on_a_new_room_both_become_members() {
        let (local, outboxes) = with_users(&[1, 2]);
        let s1 = lock(&local).pin(1, &["r"]).unwrap();
        let s2 = lock(&local).pin(2, &["r"]).unwrap();
        // Y's script answered first (ev 6), X's join is ev 5.
        let y = lock(&local).wait_for(s2, "r", "e", 6).unwrap().unwrap();
        lock(&local).unpin(2);
        assert_eq!(
            deliver(&local, &payload("j", "r", "e", 5, ME, 1)),
            Applied::Delivered
        );
        assert_eq!(
            deliver(&local, &payload("j", "r", "e", 6, ME, 2)),
            Applied::Delivered
        );
        assert_eq!(natter_runtime::block_on(y), Ok(true));
        // X's answer comes last: its event is already delivered.
        assert!(lock(&local).wait_for(s1, "r", "e", 5).unwrap().is_none());
        lock(&local).unpin(1);
        // Each heard its own join; X heard Y's too.
        assert_eq!((outboxes[0].len(), outboxes[1].len()), (2, 1));
        assert_eq!(lock(&local).counts(), (1, 2));
    }

    #[test]
    fn a_leave_delivered_before_its_request_waits_is_done() {
        let (local, _) = with_users(&[1]);
        let s = lock(&local).pin(1, &["r"]).unwrap();
        deliver(&local, &payload("j", "r", "e", 1, ME, 1));
        lock(&local).unpin(1);
        let s2 = lock(&local).pin(1, &["r"]).unwrap();
        assert_eq!(s, s2);
        assert_eq!(
            deliver(&local, &payload("l", "r", "e", 2, ME, 1)),
            Applied::Delivered
        );
        // Still followed while pinned, so the request finds its event.
        assert!(lock(&local).wait_for(s2, "r", "e", 2).unwrap().is_none());
        lock(&local).unpin(1);
        assert_eq!(lock(&local).counts(), (0, 0));
    }

    #[test]
    fn a_room_created_again_is_followed_from_its_new_first_event() {
        let (local, outboxes) = with_users(&[1]);
        let s = lock(&local).pin(1, &["r"]).unwrap();
        let joined = lock(&local).wait_for(s, "r", "new", 1).unwrap().unwrap();
        lock(&local).unpin(1);
        // A late event of the room before it was forgotten comes first.
        assert_eq!(
            deliver(&local, &payload("l", "r", "old", 2, "n2", 9)),
            Applied::Delivered
        );
        // The new room's first event is X's join: not taken for old news.
        assert_eq!(
            deliver(&local, &payload("j", "r", "new", 1, ME, 1)),
            Applied::Delivered
        );
        assert_eq!(natter_runtime::block_on(joined), Ok(true));
        assert_eq!(outboxes[0].len(), 1);
        assert_eq!(
            deliver(&local, &payload("m", "r", "new", 2, "n2", 9)),
            Applied::Delivered
        );
        assert_eq!(outboxes[0].len(), 2);
        // Members here heard "new": an event of yet another incarnation
        // means their room is gone.
        assert_eq!(
            deliver(&local, &payload("m", "r", "newer", 1, "n2", 9)),
            Applied::Lost
        );
    }

    #[test]
    fn a_gap_is_reported_and_a_repeat_skipped() {
        let (local, _) = with_users(&[1]);
        lock(&local).pin(1, &["r"]).unwrap();
        deliver(&local, &payload("j", "r", "e", 3, ME, 1));
        lock(&local).unpin(1);
        assert_eq!(
            deliver(&local, &payload("m", "r", "e", 3, "n2", 9)),
            Applied::Skipped
        );
        assert_eq!(
            deliver(&local, &payload("m", "r", "e", 5, "n2", 9)),
            Applied::Gap { after: 3 }
        );
        assert_eq!(
            deliver(&local, &payload("m", "r", "e", 4, "n2", 9)),
            Applied::Delivered
        );
    }

    #[test]
    fn a_lost_broker_fails_every_wait_and_stales_requests_in_flight() {
        let (local, outboxes) = with_users(&[1, 2]);
        let s = lock(&local).pin(1, &["r"]).unwrap();
        let waiting = lock(&local).wait_for(s, "r", "e", 1).unwrap().unwrap();
        let s2 = lock(&local).pin(2, &["q"]).unwrap();
        assert_eq!(lock(&local).lose_all(), 2);
        assert_eq!(natter_runtime::block_on(waiting), Ok(false));
        assert!(matches!(lock(&local).wait_for(s2, "q", "e", 1), Err(Stale)));
        assert!(
            outboxes
                .iter()
                .all(|o| o.reason() == Some(CloseReason::TryAgainLater))
        );
    }
}
