//! Getting back after a dropped connection: wait (with backoff), connect
//! again asking for our nick, rejoin every room with `since`/`epoch`, and
//! print what was said meanwhile and whether anything was lost for good.

use std::pin::pin;

use futures::future::{Either, select};
use natter::{Client, ClientError, ConnectOptions};
use natter_protocol::{Reply, Request};

use super::input::{Input, Typed};
use super::reconnect::{self, Backoff};
use super::rooms::Gap;
use super::session::Chat;
use super::url;

/// How a reconnect attempt ended.
pub enum Reconnected {
    /// Connected again, rooms rejoined.
    Back(Client),
    /// The user typed /quit or ended input while we waited.
    Quit,
    /// Out of tries, or a refusal retrying cannot change.
    GaveUp(String),
}

/// Retries until connected, the user quits, or the tries run out.
pub async fn reconnect(
    chat: &mut Chat,
    input: &Input,
    base_url: &str,
    options: &ConnectOptions,
) -> Reconnected {
    let mut backoff = Backoff::default();
    loop {
        let Some(delay) = backoff.next_delay() else {
            return Reconnected::GaveUp(format!(
                "gave up reconnecting after {} tries",
                backoff.attempts()
            ));
        };
        // One line when it starts, then one every few tries: enough to show
        // it is still trying without filling the screen.
        if backoff.attempts() == 1 || backoff.attempts() % 5 == 0 {
            chat.status(&format!(
                "reconnecting in {:.1} s (try {} of {})",
                delay.as_secs_f64(),
                backoff.attempts(),
                reconnect::MAX_ATTEMPTS
            ));
        }
        if wait_or_quit(chat, input, delay).await {
            return Reconnected::Quit;
        }
        let target = url::with_nick(base_url, chat.wanted_nick.as_deref());
        let client = match Client::connect(&target, options).await {
            Ok(client) => client,
            Err(e) if reconnect::connect_error_is_retryable(&e) => {
                log::info!("reconnect failed: {}", describe(&e));
                if backoff.attempts() % 5 == 0 {
                    chat.status(&format!("still disconnected: {}", describe(&e)));
                }
                continue;
            }
            Err(e) => return Reconnected::GaveUp(describe(&e)),
        };
        chat.connected(client.welcome());
        greet(chat, &client);
        match rejoin(chat, &client).await {
            Ok(()) => return Reconnected::Back(client),
            Err(e) => {
                chat.status(&format!("the connection dropped again: {e}"));
                continue;
            }
        }
    }
}

/// Waits `delay`, reading typed lines meanwhile: true when the user wants
/// to quit. Other lines cannot be sent and are not kept: saying so is
/// better than sending them late into a conversation that moved on.
async fn wait_or_quit(chat: &Chat, input: &Input, delay: std::time::Duration) -> bool {
    let mut sleep = pin!(natter_runtime::sleep(delay));
    loop {
        match select(sleep.as_mut(), pin!(input.next())).await {
            Either::Left(((), _)) => return false,
            Either::Right((Typed::Eof, _)) => return true,
            Either::Right((Typed::Line(line), _)) => {
                let line = line.trim();
                if line == "/quit" || line == "/exit" {
                    return true;
                }
                if !line.is_empty() {
                    chat.error(&format!("not connected, not sent: {line}"));
                }
            }
        }
    }
}

/// Says we are back, and whether we got our nick back.
fn greet(chat: &Chat, client: &Client) {
    let welcome = client.welcome();
    match (&welcome.nick_error, &chat.wanted_nick) {
        (Some(code), Some(wanted)) => chat.error(&format!(
            "reconnected, but the nick {wanted} was refused ({code}); you are {}",
            welcome.nick
        )),
        _ => chat.status(&format!("reconnected as {}", welcome.nick)),
    }
}

/// Rejoins every room we were in, asking for what came after the last
/// message seen, and prints it. A room the server now refuses is dropped
/// with a note; a dropped connection is an error (the caller retries).
async fn rejoin(chat: &mut Chat, client: &Client) -> Result<(), ClientError> {
    for request in chat.rooms.rejoin_requests() {
        let Request::Join { room, .. } = &request else {
            continue;
        };
        let room = room.clone();
        let ok = match client.request(request).await {
            Ok(Reply::Join(ok)) => ok,
            Ok(other) => {
                log::warn!("unexpected reply to a rejoin: {other:?}");
                continue;
            }
            Err(e @ ClientError::Request { .. }) => {
                chat.error(&format!("could not rejoin #{room}: {e}"));
                chat.rooms.left(&room);
                continue;
            }
            Err(e) => return Err(e),
        };
        let fresh: Vec<_> = ok
            .history
            .iter()
            .filter(|m| chat.rooms.is_new_in(m, &ok.epoch))
            .collect();
        for m in &fresh {
            chat.out.line(chat.render.message(m));
        }
        match chat.rooms.rejoined(&ok) {
            Gap::None => chat.status(&format!(
                "back in #{room}; {} message(s) while you were away, none missed",
                fresh.len()
            )),
            Gap::Missed { before } => {
                chat.error(&format!("missed messages in #{room} before seq {before}"))
            }
            Gap::NewEpoch => chat.error(&format!(
                "missed messages in #{room}: the server restarted without its history \
                 of the room, so what was said before that is gone"
            )),
        }
    }
    if chat
        .rooms
        .current
        .as_ref()
        .is_some_and(|c| !chat.rooms.names().any(|r| r == c))
    {
        let first = chat.rooms.names().next().cloned();
        chat.rooms.current = first;
    }
    chat.publish();
    Ok(())
}

/// The error with its cause: the library's message leaves out the OS
/// error of an unreachable server, which is the useful part here.
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { addr, source } => format!("cannot reach {addr}: {source}"),
        other => other.to_string(),
    }
}
