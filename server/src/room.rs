//! One room: its members, its numbering (seq, epoch) and its history.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::outbox::Outbox;

/// Messages in a join reply when the client gives no (usable) `since`.
pub(crate) const DEFAULT_HISTORY_REPLY: usize = 20;

pub(crate) struct Room {
    /// Members and their queues, so a broadcast needs no second lookup.
    pub(crate) members: HashMap<ConnId, Arc<Outbox>>,
    /// The seq of the room's latest message (0: none yet).
    pub(crate) last_seq: u64,
    /// Names this incarnation of the numbering; new whenever the room is
    /// created (again), so a client can tell its `since` no longer applies.
    pub(crate) epoch: String,
    /// The most recent messages, oldest first, as the encoded `message`
    /// events that were broadcast (shared, not copied).
    history: VecDeque<(u64, Frame)>,
    /// `--history`: how many messages are kept.
    history_cap: usize,
    /// Registry clock reading of the last message or membership change;
    /// the least recent empty room is the one evicted.
    pub(crate) last_active: u64,
}

/// What a join reply tells about history.
pub(crate) struct HistorySlice {
    /// The encoded `message` events, oldest first.
    pub(crate) frames: Vec<Frame>,
    /// The reply's `complete`: nothing the client asked for was dropped.
    pub(crate) complete: bool,
}

impl Room {
    pub(crate) fn new(epoch: String, history_cap: usize, now: u64) -> Room {
        Room {
            members: HashMap::new(),
            last_seq: 0,
            epoch,
            history: VecDeque::with_capacity(history_cap.min(16)),
            history_cap,
            last_active: now,
        }
    }

    /// Takes the next seq for a message about to be broadcast.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Keeps `frame` (message `seq`) in history, forgetting the oldest.
    pub(crate) fn remember(&mut self, seq: u64, frame: Frame) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with(n: u64, cap: usize) -> Room {
        let mut r = Room::new("e1".into(), cap, 0);
        for _ in 0..n {
            let seq = r.next_seq();
            r.remember(seq, Frame::from(format!("m{seq}")));
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
