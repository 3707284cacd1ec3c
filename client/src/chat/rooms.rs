//! The rooms this client is in, and for each the last seq it has seen and
//! the epoch of that numbering: what a reconnect needs to rejoin with
//! `since`/`epoch` and to tell the user exactly what was missed
//! (PROTOCOL.md, guarantee 3).

use std::collections::{BTreeMap, BTreeSet};

use natter_protocol::message::JoinOk;
use natter_protocol::{ChatMessage, Presence, PresenceKind, Request};

use super::completion::Names;

/// One room we are in.
#[derive(Debug, Clone)]
struct Room {
    /// The numbering `seq` belongs to; a different epoch on rejoin means
    /// the server lost the room's history (a restart without durable
    /// history, or the room was evicted).
    epoch: String,
    /// The highest seq seen (from history or live), so a rejoin asks for
    /// everything after it and a live message at or below it is a repeat.
    seq: u64,
    /// Members, kept from the join reply and presence, for Tab completion.
    members: BTreeSet<String>,
}

/// What a rejoin found.
#[derive(Debug, PartialEq)]
pub enum Gap {
    /// Nothing was missed (every message after our last seq came back).
    None,
    /// Messages after our last seq were dropped from history: the first
    /// one the server still had is `before`.
    Missed { before: u64 },
    /// The room's numbering started over: whatever was said between our
    /// last message and the restart is gone.
    NewEpoch,
}

/// Every room we are in, the current one, and rooms seen in `/rooms`.
#[derive(Debug, Default)]
pub struct Rooms {
    joined: BTreeMap<String, Room>,
    /// Where typed text goes.
    pub current: Option<String>,
    /// Rooms `/rooms` listed, for completing `/join`.
    listed: BTreeSet<String>,
}

impl Rooms {
    /// Records a first join (no `since`); returns the history to print.
    pub fn joined(&mut self, ok: &JoinOk) {
        let seq = ok.history.iter().map(|m| m.seq).fold(ok.seq, u64::max);
        self.joined.insert(
            ok.room.clone(),
            Room {
                epoch: ok.epoch.clone(),
                seq,
                members: ok.members.iter().cloned().collect(),
            },
        );
    }

    /// Records a rejoin after a reconnect and says what was missed. The
    /// history messages to print are those the caller filters with
    /// [`Rooms::is_new`] *before* calling this.
    pub fn rejoined(&mut self, ok: &JoinOk) -> Gap {
        let before = self.joined.get(&ok.room).cloned();
        let gap = match before {
            Some(room) if room.epoch != ok.epoch => Gap::NewEpoch,
            Some(_) if !ok.complete => Gap::Missed {
                before: ok.history.first().map_or(ok.seq + 1, |m| m.seq),
            },
            _ => Gap::None,
        };
        if gap == Gap::NewEpoch {
            // The old numbering means nothing now; start from this one.
            self.joined.remove(&ok.room);
        }
        let keep = self.joined.get(&ok.room).map_or(0, |r| r.seq);
        self.joined(ok);
        if let Some(room) = self.joined.get_mut(&ok.room) {
            room.seq = room.seq.max(keep);
        }
        gap
    }

    /// Forgets a room we left.
    pub fn left(&mut self, room: &str) {
        self.joined.remove(room);
        if self.current.as_deref() == Some(room) {
            self.current = None;
        }
    }

    /// Whether a room message is one we have not printed yet (and notes
    /// its seq). A repeat happens only at a rejoin's seam.
    pub fn is_new(&mut self, m: &ChatMessage) -> bool {
        match self.joined.get_mut(&m.room) {
            Some(room) if m.seq <= room.seq => false,
            Some(room) => {
                room.seq = m.seq;
                true
            }
            None => true,
        }
    }

    /// Whether a rejoin's history message is new to us, judged against the
    /// epoch we knew: after a new epoch every message is.
    pub fn is_new_in(&self, m: &ChatMessage, epoch: &str) -> bool {
        match self.joined.get(&m.room) {
            Some(room) if room.epoch == epoch => m.seq > room.seq,
            _ => true,
        }
    }

    /// Keeps the member lists current.
    pub fn presence(&mut self, p: &Presence) {
        let Some(room) = self.joined.get_mut(&p.room) else {
            return;
        };
        match p.event {
            PresenceKind::Join => {
                room.members.insert(p.nick.clone());
            }
            PresenceKind::Leave => {
                room.members.remove(&p.nick);
            }
            PresenceKind::Rename => {
                if let Some(old) = &p.old {
                    room.members.remove(old);
                }
                room.members.insert(p.nick.clone());
            }
        }
    }

    /// Remembers rooms a `/rooms` reply listed.
    pub fn listed(&mut self, rooms: impl IntoIterator<Item = String>) {
        self.listed.extend(rooms);
    }

    /// The rooms we are in, in name order.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.joined.keys()
    }

    /// The joins that take us back into every room after a reconnect,
    /// each asking for what came after the last message we saw.
    pub fn rejoin_requests(&self) -> Vec<Request> {
        self.joined
            .iter()
            .map(|(name, room)| Request::Join {
                room: name.clone(),
                since: Some(room.seq),
                epoch: Some(room.epoch.clone()),
            })
            .collect()
    }

    /// What Tab can complete now.
    pub fn completion_names(&self) -> Names {
        let nicks = self
            .current
            .as_ref()
            .and_then(|c| self.joined.get(c))
            .map(|r| r.members.iter().cloned().collect())
            .unwrap_or_default();
        let rooms = self
            .joined
            .keys()
            .chain(self.listed.iter())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Names { nicks, rooms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            seq,
            from: "alice".into(),
            text: format!("m{seq}"),
            ts: 0,
        }
    }

    fn ok(epoch: &str, seq: u64, history: Vec<ChatMessage>, complete: bool) -> JoinOk {
        JoinOk {
            room: "lobby".into(),
            members: vec!["alice".into()],
            seq,
            epoch: epoch.into(),
            history,
            complete,
        }
    }

    #[test]
    fn a_rejoin_asks_for_what_came_after_the_last_seen_message() {
        let mut rooms = Rooms::default();
        rooms.joined(&ok("e1", 3, vec![msg(2), msg(3)], false));
        assert!(rooms.is_new(&msg(4)));
        assert!(!rooms.is_new(&msg(4)), "a repeat is not new");
        assert_eq!(
            rooms.rejoin_requests(),
            vec![Request::Join {
                room: "lobby".into(),
                since: Some(4),
                epoch: Some("e1".into())
            }]
        );
    }

    #[test]
    fn a_rejoin_tells_complete_missed_and_new_epoch_apart() {
        let mut rooms = Rooms::default();
        rooms.joined(&ok("e1", 4, vec![], true));
        assert_eq!(
            rooms.rejoined(&ok("e1", 6, vec![msg(5), msg(6)], true)),
            Gap::None
        );
        assert_eq!(
            rooms.rejoined(&ok("e1", 20, vec![msg(15), msg(20)], false)),
            Gap::Missed { before: 15 }
        );
        assert!(rooms.is_new_in(&msg(3), "e2"));
        assert_eq!(
            rooms.rejoined(&ok("e2", 1, vec![msg(1)], true)),
            Gap::NewEpoch
        );
        assert!(!rooms.is_new(&msg(1)), "the new epoch's history was seen");
        assert!(rooms.is_new(&msg(2)));
    }
}
