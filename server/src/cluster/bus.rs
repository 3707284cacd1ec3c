//! What travels on the broker's bus (`natter:bus`): one payload per room
//! event or whisper, published by the scripts (`lua/prelude.lua` `emit`,
//! `lua/whisper.lua`), read by every node's delivery task.
//!
//! A payload is six header lines and the frame to deliver, as clients get
//! it, so a node copies it once into a shared frame and parses no JSON:
//!
//! ```text
//! kind \n room \n epoch \n ev \n node \n conn \n frame
//! ```
//!
//! The epoch names the room's incarnation: a room forgotten (`--max-rooms`)
//! and created again numbers its events from 1 again, and a node must not
//! take the new room's event 3 for the old one's.
//!
//! (`bus_marker` below writes the one payload a node publishes itself.)

use crate::conn_id::ConnId;

/// The channel every script publishes on (and `lua/prelude.lua` names).
pub(crate) const BUS: &str = "natter:bus";

/// What an event does, besides being delivered to the room's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `message` (the subject is its sender).
    Message,
    /// The subject joins: it becomes a member before the frame goes out,
    /// so it hears its own `join`.
    Join,
    /// The subject leaves: it hears its own `leave`, then stops being one.
    Leave,
    /// The subject took another nick.
    Rename,
    /// A whisper for the subject alone; no room, no event number.
    Whisper,
    /// A marker a node publishes to itself (the subject's `conn` is its
    /// number): once it arrives, every event published before it has too.
    /// What a graceful shutdown waits for before saying goodbye.
    Marker,
}

/// One parsed payload, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    /// What it does.
    pub(crate) kind: Kind,
    /// Its room (empty for a whisper).
    pub(crate) room: &'a str,
    /// The room's incarnation (empty for a whisper or a marker).
    pub(crate) epoch: &'a str,
    /// Its number in the room's order: 1, 2, 3, … (0 for a whisper).
    pub(crate) ev: u64,
    /// The node of the connection it is about: the sender, joiner, leaver,
    /// renamed member, or a whisper's recipient.
    pub(crate) node: &'a str,
    /// That connection, on that node.
    pub(crate) conn: ConnId,
    /// The frame members get.
    pub(crate) frame: &'a str,
}

/// Reads a payload; `None` for anything that is not one (logged by the
/// caller: it would be a bug, or another program writing to the bus).
pub(crate) fn parse(payload: &[u8]) -> Option<Event<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(7, '\n');
    let kind = match parts.next()? {
        "m" => Kind::Message,
        "j" => Kind::Join,
        "l" => Kind::Leave,
        "r" => Kind::Rename,
        "w" => Kind::Whisper,
        "k" => Kind::Marker,
        _ => return None,
    };
    Some(Event {
        kind,
        room: parts.next()?,
        epoch: parts.next()?,
        ev: parts.next()?.parse().ok()?,
        node: parts.next()?,
        conn: parts.next()?.parse().ok()?,
        frame: parts.next()?,
    })
}

/// The payload of marker `number` for `node` (see [`Kind::Marker`]).
pub(crate) fn marker(node: &str, number: u64) -> String {
    format!("k\n\n\n0\n{node}\n{number}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_scripts_write() {
        let p = b"m\nlobby\nab12.3\n7\nn1\n42\n{\"type\":\"message\",\"text\":\"a\\nb\"}";
        let e = parse(p).unwrap();
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(
            (e.room, e.epoch, e.ev, e.node, e.conn),
            ("lobby", "ab12.3", 7, "n1", 42)
        );
        assert_eq!(e.frame, "{\"type\":\"message\",\"text\":\"a\\nb\"}");
        let w = parse(b"w\n\n\n0\nn2\n5\n{}").unwrap();
        assert_eq!((w.kind, w.room, w.ev, w.conn), (Kind::Whisper, "", 0, 5));
        let k = marker("n3", 9);
        let k = parse(k.as_bytes()).unwrap();
        assert_eq!(
            (k.kind, k.node, k.conn, k.frame),
            (Kind::Marker, "n3", 9, "")
        );
    }

    #[test]
    fn refuses_what_is_not_a_payload() {
        for bad in [
            &b"x\nr\n1\nn\n1\n{}"[..],
            b"m\nr\n1\nn\n{}",
            b"m\nr\none\nn\n1\n{}",
            b"\xff",
        ] {
            assert_eq!(parse(bad), None);
        }
    }
}
