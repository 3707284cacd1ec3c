//! A single pass over a message's bytes for the two JSON rules serde_json
//! does not enforce everywhere: the nesting limit and lone surrogates.
//!
//! serde_json validates `\u` escapes only when it builds a string, not when
//! it skips a value we ignore, and its own depth limit differs from ours by
//! a level. One cheap scan makes both rules hold anywhere in the message,
//! including fields the server never looks at.

/// Deepest nesting accepted; the outermost object is level 1.
pub const MAX_DEPTH: usize = 127;

/// Returns why the text is not acceptable JSON, if the scan can tell.
///
/// Everything else about JSON syntax is left to serde_json.
pub(crate) fn check(text: &str) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("JSON nested 128 levels deep or more");
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => i = skip_string(bytes, i + 1)?,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Skips a string body starting after its opening quote; returns the index
/// of the closing quote (or the end, leaving the syntax error to serde).
fn skip_string(bytes: &[u8], mut i: usize) -> Result<usize, &'static str> {
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok(i),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex4(bytes, i + 2);
                i += 6;
                match unit {
                    Some(0xD800..=0xDBFF) => {
                        let low = if bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u')
                        {
                            hex4(bytes, i + 2)
                        } else {
                            None
                        };
                        match low {
                            Some(0xDC00..=0xDFFF) => i += 6,
                            _ => return Err("lone surrogate escape in a string"),
                        }
                    }
                    Some(0xDC00..=0xDFFF) => return Err("lone surrogate escape in a string"),
                    _ => {}
                }
                continue;
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    let s = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        // level 1 is the outer object; the rest are arrays in field "x"
        format!(
            "{{\"x\":{}{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    }

    #[test]
    fn depth_limit_is_exact() {
        assert!(check(&nested(127)).is_ok());
        assert!(check(&nested(128)).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!("{{\"x\":\"{}\"}}", "[".repeat(500));
        assert!(check(&s).is_ok());
    }

    #[test]
    fn surrogates() {
        assert!(check(r#"{"x":"\ud83d\ude00"}"#).is_ok());
        assert!(check(r#"{"x":"\ud83d"}"#).is_err());
        assert!(check(r#"{"x":"\ude00"}"#).is_err());
        assert!(check(r#"{"x":"\ud83d\u0041"}"#).is_err());
        assert!(check(r#"{"x":"\\ud83d"}"#).is_ok());
    }
}
