//! The server URL with the nick to ask for.

/// The URL with `nick=` set to `nick` (replacing any the URL carried, so a
/// reconnect asks for the nick `/nick` last got); unchanged without a nick.
pub fn with_nick(url: &str, nick: Option<&str>) -> String {
    let Some(nick) = nick else {
        return url.to_owned();
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("nick="))
        .map(str::to_owned)
        .collect();
    let encoded: String = nick
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    params.push(format!("nick={encoded}"));
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nick_is_added_or_replaced() {
        assert_eq!(with_nick("ws://h/ws", None), "ws://h/ws");
        assert_eq!(
            with_nick("ws://h/ws", Some("al ice")),
            "ws://h/ws?nick=al%20ice"
        );
        assert_eq!(
            with_nick("ws://h/ws?nick=old&x=1", Some("new")),
            "ws://h/ws?x=1&nick=new"
        );
    }
}
