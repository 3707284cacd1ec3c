//! Logging a repeated event once per key per window, in bounded memory.
//!
//! A refused origin or an address over its connection cap is worth one log
//! line, but a page that retries, or a client that loops, would otherwise
//! write one per request: the log would become the attack's amplifier. So
//! each key (an origin, an address) is logged at most once per window.
//!
//! The keys come from clients, so the map of recently logged keys is
//! capped: at most [`MAX_KEYS`] keys of at most [`MAX_KEY_BYTES`] bytes
//! (about 300 KiB in all). When it is full of keys logged within the
//! window, a new key is not remembered; the caller is told so once per
//! window and logs a summary line instead (many distinct keys are
//! themselves the news). A `std::sync::Mutex`, not an async one: it is held
//! for a map look-up, never across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most.
pub(crate) const MAX_KEYS: usize = 1024;
/// Longest key kept; longer ones are cut (at a character boundary).
pub(crate) const MAX_KEY_BYTES: usize = 256;

/// What the caller should log for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// The first time in the window for this key: log it.
    Log,
    /// Logged already within the window: stay quiet.
    Quiet,
    /// The map is full of recent keys: log a summary line (returned once
    /// per window; after that, `Quiet`).
    Overflow,
}

/// Remembers when each key was last logged.
pub(crate) struct LogLimit {
    window: Duration,
    state: Mutex<State>,
}

struct State {
    logged: HashMap<String, Instant>,
    /// When the last `Overflow` was returned.
    overflow_at: Option<Instant>,
}

impl LogLimit {
    pub(crate) fn new(window: Duration) -> LogLimit {
        LogLimit {
            window,
            state: Mutex::new(State {
                logged: HashMap::new(),
                overflow_at: None,
            }),
        }
    }

    /// Records one occurrence of `key` at `now`; says whether to log it.
    pub(crate) fn note(&self, key: &str, now: Instant) -> Note {
        let key = truncate(key);
        let recent = |at: &Instant| now.saturating_duration_since(*at) < self.window;
        // A panic elsewhere while holding the lock cannot leave the map in a
        // broken state (each step is one map operation), so use it anyway.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = state.logged.get_mut(key) {
            if recent(at) {
                return Note::Quiet;
            }
            *at = now;
            return Note::Log;
        }
        if state.logged.len() >= MAX_KEYS {
            // Only when full: one pass over at most MAX_KEYS entries.
            state.logged.retain(|_, at| recent(at));
        }
        if state.logged.len() < MAX_KEYS {
            state.logged.insert(key.to_owned(), now);
            return Note::Log;
        }
        if state.overflow_at.as_ref().is_some_and(recent) {
            return Note::Quiet;
        }
        state.overflow_at = Some(now);
        Note::Overflow
    }
}

/// `key` cut to at most [`MAX_KEY_BYTES`], at a character boundary.
pub(crate) fn truncate(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn once_per_key_per_window() {
        let limit = LogLimit::new(MINUTE);
        let t0 = Instant::now();
        assert_eq!(limit.note("a", t0), Note::Log);
        assert_eq!(limit.note("a", t0 + Duration::from_secs(1)), Note::Quiet);
        assert_eq!(limit.note("b", t0 + Duration::from_secs(1)), Note::Log);
        assert_eq!(limit.note("a", t0 + Duration::from_secs(59)), Note::Quiet);
        assert_eq!(limit.note("a", t0 + MINUTE), Note::Log);
        assert_eq!(limit.note("a", t0 + MINUTE), Note::Quiet);
    }

    #[test]
    fn the_map_is_capped_and_overflow_is_reported_once_per_window() {
        let limit = LogLimit::new(MINUTE);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert_eq!(limit.note(&format!("k{i}"), t0), Note::Log);
        }
        assert_eq!(limit.note("new", t0), Note::Overflow);
        assert_eq!(limit.note("newer", t0), Note::Quiet);
        assert_eq!(limit.note("k0", t0), Note::Quiet);
        assert!(limit.state.lock().unwrap().logged.len() <= MAX_KEYS);
        // Once the window has passed, old keys make room again.
        let later = t0 + MINUTE;
        assert_eq!(limit.note("new", later), Note::Log);
        assert_eq!(limit.state.lock().unwrap().logged.len(), 1);
    }

    #[test]
    fn long_keys_are_cut() {
        let limit = LogLimit::new(MINUTE);
        let t0 = Instant::now();
        let long = "é".repeat(MAX_KEY_BYTES);
        assert_eq!(limit.note(&long, t0), Note::Log);
        // Same first bytes, different tail: the same key once cut.
        let other = format!("{}x", &long[..MAX_KEY_BYTES]);
        assert_eq!(limit.note(&other, t0), Note::Quiet);
        let state = limit.state.lock().unwrap();
        assert!(state.logged.keys().all(|k| k.len() <= MAX_KEY_BYTES));
    }
}
