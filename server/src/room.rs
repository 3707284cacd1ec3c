//! One room (its members, its numbering — seq, epoch — and its history),
//! and [`Rooms`], the registry's table of every retained room.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::outbox::Outbox;
use crate::room_log::StoredRoom;

/// Messages in a join reply when the client gives no (usable) `since`.
pub(crate) const DEFAULT_HISTORY_REPLY: usize = 20;

pub(crate) struct Room {
    /// Members and their queues, so a broadcast needs no second lookup.
    /// Changed only through [`Rooms`], which keeps its indexes in step.
    members: HashMap<ConnId, Arc<Outbox>>,
    /// The seq of the room's latest message that members have been sent
    /// (0: none yet): what a join reply reports and `since` is judged by.
    pub(crate) last_seq: u64,
    /// The last seq handed out. Ahead of `last_seq` only while messages
    /// wait for a durable log's commit (see `crate::registry`).
    assigned: u64,
    /// Tells this room apart from a later room of the same name (after an
    /// eviction) within this process, so a commit reported late is never
    /// published into the wrong incarnation.
    pub(crate) incarnation: u64,
    /// Names this incarnation of the numbering; new whenever the room is
    /// created (again), so a client can tell its `since` no longer applies.
    pub(crate) epoch: String,
    /// The most recent messages, oldest first, as the encoded `message`
    /// events that were broadcast (shared, not copied).
    history: VecDeque<(u64, Frame)>,
    /// `--history`: how many messages are kept.
    history_cap: usize,
    /// Registry clock reading when the room last lost its last member: its
    /// key in [`Rooms`]'s index of empty rooms. That leave is an empty
    /// room's most recent activity (no message or join can follow it while
    /// it stays empty), so the contract's "least recently active" empty room
    /// is the one with the oldest `emptied_at`.
    emptied_at: u64,
}
/// What a join reply tells about history.
pub(crate) struct HistorySlice {
    /// The encoded `message` events, oldest first.
    pub(crate) frames: Vec<Frame>,
    /// The reply's `complete`: nothing the client asked for was dropped.
    pub(crate) complete: bool,
}

impl Room {
    pub(crate) fn new(epoch: String, history_cap: usize, incarnation: u64) -> Room {
        Room {
            members: HashMap::new(),
            last_seq: 0,
            assigned: 0,
            incarnation,
            epoch,
            history: VecDeque::with_capacity(history_cap.min(16)),
            history_cap,
            emptied_at: 0,
        }
    }

    /// A room as a durable log kept it: its numbering continues.
    pub(crate) fn restored(stored: StoredRoom, history_cap: usize, incarnation: u64) -> Room {
        let mut room = Room::new(stored.epoch, history_cap, incarnation);
        room.last_seq = stored.last_seq;
        room.assigned = stored.last_seq;
        for (seq, frame) in stored.history {
            room.remember(seq, frame);
        }
        room
    }

    /// The members and their queues.
    pub(crate) fn members(&self) -> &HashMap<ConnId, Arc<Outbox>> {
        &self.members
    }

    /// Takes the next seq for a new message.
    pub(crate) fn take_seq(&mut self) -> u64 {
        self.assigned += 1;
        self.assigned
    }

    /// Gives back the seq just taken, for a message that will never be
    /// shown (its log refused it), so the numbering stays gap-free.
    pub(crate) fn give_back_seq(&mut self, seq: u64) {
        if self.assigned == seq {
            self.assigned -= 1;
        }
    }

    /// Message `seq` is going out to the members now: it becomes the
    /// room's last seq and joins the history.
    pub(crate) fn publish(&mut self, seq: u64, frame: Frame) {
        self.last_seq = seq;
        self.remember(seq, frame);
    }

    /// Keeps `frame` (message `seq`) in history, forgetting the oldest.
    fn remember(&mut self, seq: u64, frame: Frame) {
        if self.history_cap == 0 {
            return;
        }
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back((seq, frame));
    }

    /// The history a `join` reply carries (see protocol/README.md).
    pub(crate) fn history_since(&self, since: Option<u64>, epoch: Option<&str>) -> HistorySlice {
        let oldest_kept = self
            .history
            .front()
            .map_or(self.last_seq + 1, |(seq, _)| *seq);
        let usable_since =
            since.filter(|&n| n <= self.last_seq && epoch.is_none_or(|e| e == self.epoch));
        match usable_since {
            Some(n) => HistorySlice {
                frames: self.frames_after(n),
                // Nothing after n was dropped: the first one we hold is n+1,
                // or there is nothing after n at all.
                complete: n >= self.last_seq || oldest_kept <= n + 1,
            },
            None => {
                let start = self.last_seq.saturating_sub(DEFAULT_HISTORY_REPLY as u64);
                let frames = self.frames_after(start);
                let first = self.last_seq + 1 - frames.len() as u64;
                HistorySlice {
                    frames,
                    // Given without a usable `since`: complete only when the
                    // reply is the room's whole numbering from seq 1.
                    complete: since.is_none() && first == 1,
                }
            }
        }
    }

    fn frames_after(&self, n: u64) -> Vec<Frame> {
        self.history
            .iter()
            .filter(|(seq, _)| *seq > n)
            .map(|(_, frame)| frame.clone())
            .collect()
    }
}

/// Every retained room, with two indexes kept in step with each membership
/// change so that no request scans all rooms under the registry lock:
/// - `empty`: the rooms without members, oldest `emptied_at` first, so
///   eviction takes the first entry (`O(log n)`), and
/// - `occupied`: the rooms with members and their member counts, in name
///   order, so the `rooms` listing is a copy in order, with no sort.
///
/// The bound (`--max-rooms`) is on empty rooms only, and is restored the
/// moment a room empties: occupied rooms never count and are never evicted.
/// With a bound of 0 a room is forgotten as soon as its last member goes.
pub(crate) struct Rooms {
    /// Every retained room, by name.
    by_name: HashMap<Arc<str>, Room>,
    /// `(emptied_at, name)` of each room with no members. Rooms emptied at
    /// the same clock reading (one disconnect) go by name.
    empty: BTreeSet<(u64, Arc<str>)>,
    /// Name → member count of each room with members.
    occupied: BTreeMap<Arc<str>, usize>,
    /// Room memberships, summed over rooms (kept, not summed, so that a
    /// `/metrics` scrape costs nothing per room under the lock).
    memberships: usize,
    /// `--max-rooms`: empty rooms retained at most.
    max_empty: usize,
}

impl Rooms {
    pub(crate) fn new(max_empty: usize) -> Rooms {
        Rooms {
            by_name: HashMap::new(),
            empty: BTreeSet::new(),
            occupied: BTreeMap::new(),
            memberships: 0,
            max_empty,
        }
    }

    /// Adds a room read back from a durable log, with no members, as the
    /// most recently emptied so far (callers go least recently active
    /// first). Past `--max-rooms`, the oldest go, as on any exit.
    pub(crate) fn restore(&mut self, name: &str, mut room: Room, now: u64) -> Vec<Arc<str>> {
        let key: Arc<str> = Arc::from(name);
        room.emptied_at = now;
        self.by_name.insert(key.clone(), room);
        self.empty.insert((now, key));
        self.evict_past_bound()
    }

    /// Marks an empty room active now (a message published into it after
    /// its last member left, while the message waited for its commit), so
    /// it is evicted after rooms less recently active.
    pub(crate) fn touch_empty(&mut self, name: &str, now: u64) {
        let Some((key, room)) = self.by_name.get_key_value(name) else {
            return;
        };
        if !room.members.is_empty() {
            return;
        }
        let key = key.clone();
        self.empty.remove(&(room.emptied_at, key.clone()));
        self.empty.insert((now, key));
        if let Some(room) = self.by_name.get_mut(name) {
            room.emptied_at = now;
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Room> {
        self.by_name.get(name)
    }

    /// The room to say into; its members cannot be changed through it.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Room> {
        self.by_name.get_mut(name)
    }

    /// Makes `id` a member of `name`, creating the room with `create` when
    /// it is not retained. An empty room leaves the empty index, so it can
    /// no longer be evicted.
    pub(crate) fn enter(
        &mut self,
        name: &str,
        id: ConnId,
        outbox: Arc<Outbox>,
        create: impl FnOnce() -> Room,
    ) -> &mut Room {
        let key: Arc<str> = match self.by_name.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => Arc::from(name),
        };
        let room = self.by_name.entry(key.clone()).or_insert_with(create);
        if room.members.is_empty() {
            self.empty.remove(&(room.emptied_at, key.clone()));
        }
        if room.members.insert(id, outbox).is_none() {
            *self.occupied.entry(key).or_insert(0) += 1;
            self.memberships += 1;
        }
        room
    }

    /// Ends `id`'s membership of `name`. When that empties the room, it is
    /// indexed as empty at `now` and the least recently active empty rooms
    /// are evicted until at most `--max-rooms` remain (this one first when
    /// the bound is 0). Returns the rooms evicted.
    pub(crate) fn exit(&mut self, name: &str, id: ConnId, now: u64) -> Vec<Arc<str>> {
        let Some(room) = self.by_name.get_mut(name) else {
            return Vec::new();
        };
        if room.members.remove(&id).is_none() {
            return Vec::new();
        }
        self.memberships -= 1;
        if !room.members.is_empty() {
            if let Some(count) = self.occupied.get_mut(name) {
                *count -= 1;
            }
            return Vec::new();
        }
        room.emptied_at = now;
        let key = match self.occupied.remove_entry(name) {
            Some((key, _)) => key,
            None => Arc::from(name),
        };
        self.empty.insert((now, key));
        self.evict_past_bound()
    }

    /// Evicts the least recently active empty rooms until at most
    /// `--max-rooms` remain; returns their names.
    fn evict_past_bound(&mut self) -> Vec<Arc<str>> {
        let mut evicted = Vec::new();
        while self.empty.len() > self.max_empty {
            let Some((_, victim)) = self.empty.pop_first() else {
                break;
            };
            log::debug!(
                "evicting empty room {victim:?}: more than {} empty rooms",
                self.max_empty
            );
            self.by_name.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }

    /// The rooms with members and their member counts, in name order.
    /// Cheap under the lock: a copy of the index (reference counts, no
    /// string copies).
    pub(crate) fn listing(&self) -> Vec<(Arc<str>, usize)> {
        self.occupied
            .iter()
            .map(|(name, &count)| (name.clone(), count))
            .collect()
    }

    /// Retained rooms, with or without members.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Room memberships, summed over rooms.
    pub(crate) fn memberships(&self) -> usize {
        self.memberships
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with(n: u64, cap: usize) -> Room {
        let mut r = Room::new("e1".into(), cap, 1);
        for _ in 0..n {
            let seq = r.take_seq();
            r.publish(seq, Frame::from(format!("m{seq}")));
        }
        r
    }

    #[test]
    fn fresh_join_gets_last_twenty() {
        let r = room_with(30, 100);
        let h = r.history_since(None, None);
        assert_eq!(h.frames.len(), 20);
        assert_eq!(h.frames[0].as_str(), "m11");
        assert!(!h.complete);
        let r = room_with(5, 100);
        let h = r.history_since(None, None);
        assert_eq!((h.frames.len(), h.complete), (5, true));
        let r = room_with(0, 100);
        assert!(r.history_since(None, None).complete);
    }

    #[test]
    fn since_within_history_is_complete() {
        let r = room_with(150, 100);
        let h = r.history_since(Some(60), Some("e1"));
        assert_eq!((h.frames.len(), h.complete), (90, true));
        let h = r.history_since(Some(49), Some("e1"));
        assert_eq!((h.frames.len(), h.complete), (100, false));
        let h = r.history_since(Some(150), None);
        assert_eq!((h.frames.len(), h.complete), (0, true));
    }

    #[test]
    fn wrong_epoch_or_future_since_is_incomplete() {
        let r = room_with(10, 100);
        let h = r.history_since(Some(3), Some("other"));
        assert_eq!((h.frames.len(), h.complete), (10, false));
        let h = r.history_since(Some(11), Some("e1"));
        assert_eq!((h.frames.len(), h.complete), (10, false));
    }
}

#[cfg(test)]
mod rooms_tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use super::*;
    use crate::backlog::Backlog;

    /// What `Rooms` should hold, computed the slow way: a scan of every
    /// room for each eviction, as the registry used to do.
    #[derive(Default)]
    struct Model {
        /// name → (members, emptied_at, epoch)
        rooms: BTreeMap<String, (BTreeSet<ConnId>, u64, String)>,
    }

    impl Model {
        fn exit(&mut self, name: &str, id: ConnId, now: u64, max: usize) {
            let Some(room) = self.rooms.get_mut(name) else {
                return;
            };
            if !room.0.remove(&id) || !room.0.is_empty() {
                return;
            }
            room.1 = now;
            loop {
                let empty: Vec<(u64, String)> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| r.0.is_empty())
                    .map(|(n, r)| (r.1, n.clone()))
                    .collect();
                if empty.len() <= max {
                    break;
                }
                let oldest = empty.into_iter().min().map(|(_, n)| n);
                if let Some(n) = oldest {
                    self.rooms.remove(&n);
                }
            }
        }
    }

    #[test]
    fn the_index_agrees_with_a_scan_after_any_joins_and_leaves() {
        let outbox = Outbox::new(8, 2, Arc::new(Backlog::default()));
        let mut rng = fastrand::Rng::with_seed(10);
        for max in 0..4 {
            let mut rooms = Rooms::new(max);
            let mut model = Model::default();
            let mut next_epoch = 0u64;
            for now in 1..3000u64 {
                let name = format!("r{}", rng.usize(..7));
                let id = rng.u64(..4);
                if rng.bool() {
                    let mut created = None;
                    rooms.enter(&name, id, outbox.clone(), || {
                        next_epoch += 1;
                        created = Some(next_epoch.to_string());
                        Room::new(next_epoch.to_string(), 0, next_epoch)
                    });
                    let entry = model.rooms.entry(name.clone()).or_insert_with(|| {
                        let epoch = created.clone().expect("a new room was created");
                        (BTreeSet::new(), 0, epoch)
                    });
                    entry.0.insert(id);
                } else {
                    rooms.exit(&name, id, now);
                    model.exit(&name, id, now, max);
                }
                // Same rooms, same incarnations, same members.
                assert_eq!(rooms.len(), model.rooms.len(), "max {max}, step {now}");
                for (name, (members, _, epoch)) in &model.rooms {
                    let room = rooms.get(name).expect("retained in the model");
                    assert_eq!(&room.epoch, epoch, "{name}: max {max}, step {now}");
                    let got: BTreeSet<ConnId> = room.members().keys().copied().collect();
                    assert_eq!(&got, members, "{name}");
                }
                let empty = model.rooms.values().filter(|r| r.0.is_empty()).count();
                assert!(empty <= max, "{empty} empty rooms kept, max {max}");
                assert_eq!(rooms.empty.len(), empty);
                let listing: Vec<(String, usize)> = rooms
                    .listing()
                    .into_iter()
                    .map(|(n, c)| (n.to_string(), c))
                    .collect();
                let expected: Vec<(String, usize)> = model
                    .rooms
                    .iter()
                    .filter(|(_, r)| !r.0.is_empty())
                    .map(|(n, r)| (n.clone(), r.0.len()))
                    .collect();
                assert_eq!(listing, expected);
                let memberships: usize = model.rooms.values().map(|r| r.0.len()).sum();
                assert_eq!(rooms.memberships(), memberships);
            }
        }
    }
}
