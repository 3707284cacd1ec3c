//! What makes a nick, a room name or a message text acceptable.

use crate::error::ErrorCode;

pub const MAX_NICK_CHARS: usize = 32;
pub const MAX_ROOM_CHARS: usize = 64;

/// A nick is 1–32 of `A-Z a-z 0-9 _ -`.
pub fn validate_nick(nick: &str) -> Result<(), ErrorCode> {
    let ok = (1..=MAX_NICK_CHARS).contains(&nick.len())
        && nick
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidNick)
    }
}

/// The form under which nicks are compared: uniqueness is case-insensitive.
///
/// Nicks are ASCII by construction, so ASCII folding is the whole story;
/// look-alike letters from other scripts never pass [`validate_nick`].
pub fn nick_key(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// A room is 1–64 of `a-z 0-9 _ - .`; upper case is rejected, not folded,
/// so that a room has exactly one spelling.
pub fn validate_room(room: &str) -> Result<(), ErrorCode> {
    let ok = (1..=MAX_ROOM_CHARS).contains(&room.len())
        && room.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        });
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidRoom)
    }
}

/// A text is 1..=`max_bytes` bytes with at least one non-whitespace char.
///
/// The length is checked first: an over-long text of only spaces is
/// `text_too_long`, the answer that tells the client what to fix first.
pub fn validate_text(text: &str, max_bytes: usize) -> Result<(), ErrorCode> {
    if text.len() > max_bytes {
        return Err(ErrorCode::TextTooLong);
    }
    if text.chars().all(char::is_whitespace) {
        return Err(ErrorCode::EmptyText);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks() {
        assert!(validate_nick("alice").is_ok());
        assert!(validate_nick("A_b-9").is_ok());
        assert!(validate_nick(&"a".repeat(32)).is_ok());
        assert_eq!(validate_nick(""), Err(ErrorCode::InvalidNick));
        assert_eq!(validate_nick(&"a".repeat(33)), Err(ErrorCode::InvalidNick));
        assert_eq!(validate_nick("al ice"), Err(ErrorCode::InvalidNick));
        // Cyrillic 'а' looks like Latin 'a'.
        assert_eq!(validate_nick("\u{0430}lice"), Err(ErrorCode::InvalidNick));
        assert_eq!(nick_key("AlIcE"), "alice");
    }

    #[test]
    fn rooms() {
        assert!(validate_room("lobby").is_ok());
        assert!(validate_room("a.b-c_9").is_ok());
        assert_eq!(validate_room("Lobby"), Err(ErrorCode::InvalidRoom));
        assert_eq!(validate_room(""), Err(ErrorCode::InvalidRoom));
        assert_eq!(validate_room(&"r".repeat(65)), Err(ErrorCode::InvalidRoom));
    }

    #[test]
    fn texts() {
        assert!(validate_text("hi", 4096).is_ok());
        assert!(validate_text(" x ", 4096).is_ok());
        assert_eq!(validate_text("", 4096), Err(ErrorCode::EmptyText));
        assert_eq!(
            validate_text(" \t\n\u{3000}", 4096),
            Err(ErrorCode::EmptyText)
        );
        assert_eq!(validate_text("abc", 2), Err(ErrorCode::TextTooLong));
        assert_eq!(validate_text("   ", 2), Err(ErrorCode::TextTooLong));
        assert!(validate_text("\u{0}", 4096).is_ok());
    }
}
