//! Tab completion of commands, nicks of the current room and room names.
//!
//! The session publishes the names it knows into [`Names`] after every
//! change; the line editor's thread reads them when Tab is pressed. A
//! std mutex, held only to copy a few short lists, on both sides.

use std::sync::{Arc, Mutex, PoisonError};

use reedline::{Completer, Span, Suggestion};

use super::commands::COMMANDS;

/// What can be completed right now.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Members of the current room.
    pub nicks: Vec<String>,
    /// Rooms we are in and rooms `/rooms` listed.
    pub rooms: Vec<String>,
}

/// The names, shared between the session (writer) and the line editor
/// (reader).
pub type SharedNames = Arc<Mutex<Names>>;

/// Commands whose first argument is a room.
const ROOM_COMMANDS: &[&str] = &["/join", "/leave", "/who"];

/// The completions of the word that ends at byte `pos` of `line`: where
/// that word starts, and the words it may become (sorted, no duplicates).
pub fn candidates(line: &str, pos: usize, names: &Names) -> (usize, Vec<String>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(' ').map_or(0, |i| i + 1);
    let word = &before[start..];
    let first = before.split(' ').next().unwrap_or("");
    let is_first_word = start == 0;
    let is_second_word = !is_first_word && before[..start].trim_end() == first;
    let prefix_of = |w: &str, candidate: &str| {
        candidate.len() >= w.len()
            && candidate.as_bytes()[..w.len()].eq_ignore_ascii_case(w.as_bytes())
    };
    let mut out: Vec<String> = if is_first_word && word.starts_with('/') {
        COMMANDS.iter().map(|c| (*c).to_owned()).collect()
    } else if (is_second_word && ROOM_COMMANDS.contains(&first)) || word.starts_with('#') {
        let bare = word.trim_start_matches('#');
        let hash = if word.starts_with('#') { "#" } else { "" };
        names
            .rooms
            .iter()
            .filter(|r| prefix_of(bare, r))
            .map(|r| format!("{hash}{r}"))
            .collect()
    } else {
        names.nicks.clone()
    };
    out.retain(|c| prefix_of(word, c));
    out.sort();
    out.dedup();
    (start, out)
}

/// reedline's view of [`candidates`].
pub struct ChatCompleter {
    names: SharedNames,
}

impl ChatCompleter {
    pub fn new(names: SharedNames) -> ChatCompleter {
        ChatCompleter { names }
    }
}

impl Completer for ChatCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> Vec<Suggestion> {
        let names = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (start, words) = candidates(line, pos, &names);
        words
            .into_iter()
            .map(|value| Suggestion {
                value,
                span: Span::new(start, pos),
                append_whitespace: true,
                ..Suggestion::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            nicks: vec!["alice".into(), "Albert".into(), "bob".into()],
            rooms: vec!["lobby".into(), "rust".into()],
        }
    }

    #[test]
    fn commands_nicks_and_rooms_complete() {
        let n = names();
        assert_eq!(candidates("/jo", 3, &n), (0, vec!["/join".into()]));
        assert_eq!(candidates("/join r", 7, &n), (6, vec!["rust".into()]));
        assert_eq!(candidates("see #lo", 7, &n), (4, vec!["#lobby".into()]));
        assert_eq!(
            candidates("/msg al", 7, &n),
            (5, vec!["Albert".into(), "alice".into()])
        );
        assert_eq!(candidates("hi bo", 5, &n), (3, vec!["bob".into()]));
        assert_eq!(candidates("hi zed", 6, &n), (3, Vec::<String>::new()));
    }
}
