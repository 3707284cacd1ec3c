//! What a typed line asks for: text to say, or a `/command`. Parsing only,
//! no I/O, so every command's reading of its arguments is tested here.

use natter_protocol::Request;

/// The commands, for `/help` and for Tab completion.
pub const COMMANDS: &[&str] = &[
    "/join", "/leave", "/nick", "/msg", "/who", "/rooms", "/help", "/quit",
];

/// What one typed line means.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// A blank line: nothing to do.
    Nothing,
    /// Say this text in the current room.
    Say(String),
    /// Send this request (join, leave, nick, msg, who, rooms).
    Send(Request),
    /// Print the help.
    Help,
    /// Leave the chat.
    Quit,
    /// A command used wrongly: print its usage.
    Usage(&'static str),
    /// A command that does not exist.
    Unknown(String),
}

/// Reads one typed line; `current` is the current room, the default for
/// `/leave` and `/who`.
pub fn parse(line: &str, current: Option<&str>) -> Action {
    let line = line.trim_end();
    if line.trim().is_empty() {
        return Action::Nothing;
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Action::Say(line.to_owned());
    };
    let (command, rest) = cmd
        .split_once(' ')
        .map_or((cmd, ""), |(c, r)| (c, r.trim()));
    let current_or = |arg: &str| -> Option<String> {
        if arg.is_empty() {
            current.map(str::to_owned)
        } else {
            Some(arg.trim_start_matches('#').to_owned())
        }
    };
    let request = match command {
        "quit" | "exit" => return Action::Quit,
        "help" => return Action::Help,
        "join" if !rest.is_empty() => Request::Join {
            room: rest.trim_start_matches('#').to_owned(),
            since: None,
            epoch: None,
        },
        "join" => return Action::Usage("/join ROOM"),
        "leave" => match current_or(rest) {
            Some(room) => Request::Leave { room },
            None => return Action::Usage("/leave ROOM"),
        },
        "nick" if !rest.is_empty() => Request::Nick {
            nick: rest.to_owned(),
        },
        "nick" => return Action::Usage("/nick NAME"),
        "msg" => match rest.split_once(' ') {
            Some((to, text)) => Request::Whisper {
                to: to.to_owned(),
                text: text.to_owned(),
            },
            None => return Action::Usage("/msg NICK TEXT"),
        },
        "who" => match current_or(rest) {
            Some(room) => Request::Who { room },
            None => return Action::Usage("/who ROOM"),
        },
        "rooms" => Request::Rooms,
        other => return Action::Unknown(other.to_owned()),
    };
    Action::Send(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_said_and_commands_are_read() {
        assert_eq!(parse("  ", None), Action::Nothing);
        assert_eq!(
            parse("hello /there", None),
            Action::Say("hello /there".into())
        );
        assert_eq!(
            parse("/join #lobby", None),
            Action::Send(Request::Join {
                room: "lobby".into(),
                since: None,
                epoch: None
            })
        );
        assert_eq!(
            parse("/leave", Some("lobby")),
            Action::Send(Request::Leave {
                room: "lobby".into()
            })
        );
        assert_eq!(parse("/leave", None), Action::Usage("/leave ROOM"));
        assert_eq!(
            parse("/msg bob hi there", None),
            Action::Send(Request::Whisper {
                to: "bob".into(),
                text: "hi there".into()
            })
        );
        assert_eq!(parse("/msg bob", None), Action::Usage("/msg NICK TEXT"));
        assert_eq!(
            parse("/frobnicate", None),
            Action::Unknown("frobnicate".into())
        );
        assert_eq!(parse("/quit", None), Action::Quit);
    }
}
