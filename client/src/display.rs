//! How the chat client prints what the server says.

use chrono::{Local, TimeZone};
use natter_protocol::{ChatMessage, Presence, PresenceKind, WhisperEvent};

fn clock(ts: u64) -> String {
    i64::try_from(ts)
        .ok()
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Local::now)
        .format("%H:%M:%S")
        .to_string()
}

fn now() -> String {
    Local::now().format("%H:%M:%S").to_string()
}

pub fn message(m: &ChatMessage) -> String {
    format!("[{}] #{} <{}> {}", clock(m.ts), m.room, m.from, m.text)
}

pub fn whisper(w: &WhisperEvent) -> String {
    format!("[{}] *{}* {}", clock(w.ts), w.from, w.text)
}

pub fn presence(p: &Presence) -> String {
    let what = match (p.event, &p.old) {
        (PresenceKind::Join, _) => format!("{} joined", p.nick),
        (PresenceKind::Leave, _) => format!("{} left", p.nick),
        (PresenceKind::Rename, Some(old)) => format!("{old} is now {}", p.nick),
        (PresenceKind::Rename, None) => format!("someone is now {}", p.nick),
    };
    format!("[{}] #{} * {}", now(), p.room, what)
}

pub fn note(text: &str) -> String {
    format!("[{}] -- {}", now(), text)
}

pub const HELP: &str = "\
commands:
  TEXT              say TEXT in the current room
  /join ROOM        join ROOM and make it current
  /leave [ROOM]     leave ROOM (default: the current room)
  /nick NAME        change your nick
  /msg NICK TEXT    whisper TEXT to NICK
  /who [ROOM]       list the members of ROOM (default: current)
  /rooms            list rooms with members
  /help             this help
  /quit             leave";
