//! How the chat client prints what the server says: one line per event,
//! with colours when a person is watching.
//!
//! The words of every line are the same with and without colour, so piped
//! output (what scripts read) is exactly what it was before colours came:
//! colour only wraps parts of a line in escape codes. Colour is used only
//! when stdout is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>), and not on a `TERM=dumb` terminal.

use std::io::IsTerminal;

use chrono::{Local, TimeZone};
use natter_protocol::{ChatMessage, Presence, PresenceKind, WhisperEvent};
use nu_ansi_term::{Color, Style};

/// Nick colours: distinct on dark and light backgrounds, and none of them
/// red (errors) or magenta (whispers), so a nick never looks like either.
const NICK_COLOURS: [Color; 8] = [
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Cyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightCyan,
];

/// Whether this process should print colours: stdout is a terminal,
/// `NO_COLOR` is unset or empty, and the terminal is not `dumb`.
pub fn wants_colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    std::io::stdout().is_terminal() && !no_color && !dumb
}

/// Formats events as lines; `colour` decides whether styles are applied.
#[derive(Debug, Clone, Copy)]
pub struct Render {
    colour: bool,
}

impl Render {
    /// A renderer that paints when `colour` is true (see [`wants_colour`]).
    pub fn new(colour: bool) -> Render {
        Render { colour }
    }

    /// Whether it paints: the line editor colours its prompt to match.
    pub fn colour(&self) -> bool {
        self.colour
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            style.paint(text).to_string()
        } else {
            text.to_owned()
        }
    }

    /// A nick in its own colour, the same every time for the same nick
    /// (compared case-insensitively, as the server compares nicks).
    fn nick(&self, nick: &str) -> String {
        self.paint(nick_colour(nick).bold(), nick)
    }

    /// `[12:00:01] #lobby <alice> hello`
    pub fn message(&self, m: &ChatMessage) -> String {
        format!(
            "[{}] #{} <{}> {}",
            clock(m.ts),
            m.room,
            self.nick(&m.from),
            m.text
        )
    }

    /// `[12:00:01] *alice* psst`, in magenta so a whisper stands out from
    /// room talk.
    pub fn whisper(&self, w: &WhisperEvent) -> String {
        let line = format!("[{}] *{}* {}", clock(w.ts), w.from, w.text);
        self.paint(Color::Magenta.bold(), &line)
    }

    /// `[12:00:01] #lobby * alice joined`, dimmed: presence is background.
    pub fn presence(&self, p: &Presence) -> String {
        let what = match (p.event, &p.old) {
            (PresenceKind::Join, _) => format!("{} joined", p.nick),
            (PresenceKind::Leave, _) => format!("{} left", p.nick),
            (PresenceKind::Rename, Some(old)) => format!("{old} is now {}", p.nick),
            (PresenceKind::Rename, None) => format!("someone is now {}", p.nick),
        };
        let line = format!("[{}] #{} * {}", now(), p.room, what);
        self.paint(Style::new().dimmed(), &line)
    }

    /// `[12:00:01] -- text`: the client speaking (replies, help).
    pub fn note(&self, text: &str) -> String {
        format!("[{}] -- {}", now(), text)
    }

    /// A note that something went wrong, in red.
    pub fn error(&self, text: &str) -> String {
        self.paint(Color::Red.normal(), &self.note(text))
    }

    /// A note about the connection (lost, retrying, back), in yellow.
    pub fn status(&self, text: &str) -> String {
        self.paint(Color::Yellow.normal(), &self.note(text))
    }
}

/// FNV-1a over the lower-cased nick: stable across runs and machines
/// (std's hasher is seeded per process), so alice is always the same
/// colour.
fn nick_colour(nick: &str) -> Color {
    let mut hash: u32 = 0x811c_9dc5;
    for b in nick.bytes() {
        hash ^= u32::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NICK_COLOURS[hash as usize % NICK_COLOURS.len()]
}

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

/// What `/help` prints.
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

/// The keys of the interactive input line, shown by /help on a terminal.
pub const KEYS: &str = "\
keys:
  Tab               complete a command, a nick of the current room, a room
  Up / Down         previous / next line of this session
  Ctrl-R            search the lines of this session
  Ctrl-A / Ctrl-E   start / end of the line; Ctrl-W deletes a word
  Ctrl-C            clear the line; Ctrl-D (on an empty line) or /quit leaves";

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            seq: 1,
            from: "alice".into(),
            text: "hi".into(),
            ts: 0,
        }
    }

    #[test]
    fn without_colour_there_are_no_escape_codes() {
        let plain = Render::new(false);
        assert!(!plain.message(&message()).contains('\x1b'));
        assert!(plain.message(&message()).ends_with("#lobby <alice> hi"));
        assert!(!plain.error("boom").contains('\x1b'));
    }

    #[test]
    fn with_colour_the_words_are_the_same() {
        let coloured = Render::new(true).message(&message());
        assert!(coloured.contains('\x1b'));
        assert!(coloured.contains("alice") && coloured.ends_with("> hi"));
    }

    #[test]
    fn a_nick_keeps_its_colour_whatever_its_case() {
        assert_eq!(nick_colour("Alice"), nick_colour("alice"));
        let colours: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|n| format!("{:?}", nick_colour(n)))
            .collect();
        assert!(colours.len() > 1, "every nick got the same colour");
    }
}
