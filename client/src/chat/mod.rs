//! `natter chat`: the interactive terminal client, which also works with
//! piped stdin for scripts.
//!
//! The parts, one file each:
//! - `input`: the line editor that keeps the typed line intact under
//!   incoming events (or plain lines when piped), and where lines print;
//! - `render`: how events look, colours included;
//! - `commands`: what a typed line asks for;
//! - `completion`: Tab completion of commands, nicks and rooms;
//! - `session`: one connection's conversation;
//! - `rooms`: the rooms we are in and the last seq seen in each;
//! - `reconnect` (when and how long to wait) and `recover` (reconnect,
//!   rejoin with `since`, print what was missed);
//! - `url`: the server URL with the nick asked for.

mod commands;
mod completion;
mod input;
mod reconnect;
mod recover;
mod render;
mod rooms;
mod session;
mod url;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use natter::{Client, CloseInfo, ConnectOptions};
use natter_protocol::{Reply, Request};

use completion::SharedNames;
use input::RoomPrompt;
use recover::Reconnected;
use render::Render;
use session::{Chat, Ended};

/// `natter chat`'s options (clap shows each doc line in `--help`).
#[derive(Args)]
pub struct ChatArgs {
    /// Server URL: ws://HOST:PORT/ws, or wss://HOST:PORT/ws for TLS.
    #[arg(default_value = "ws://127.0.0.1:7878/ws")]
    url: String,
    /// Nick to ask for (the server picks a guest nick if it is taken).
    /// After a reconnect the client asks for the nick it had again.
    #[arg(long)]
    nick: Option<String>,
    /// Room to join on connect.
    #[arg(long)]
    room: Option<String>,
    /// For wss://: trust only the CA certificates in this PEM file (a
    /// server with a private certificate) instead of the public web roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Exit (status 2) when the connection drops instead of reconnecting.
    /// Reconnecting is for interactive use: with stdin or stdout not a
    /// terminal the client always exits 2 when the connection drops, as
    /// scripts expect.
    #[arg(long)]
    no_reconnect: bool,
}

/// Runs `natter chat` to the end: the exit code, or an error (exit 1) when
/// the first connection cannot be made or `--ca` cannot be used.
pub async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let interactive = input::is_interactive();
    let render = Render::new(render::wants_colour());
    let mut options = ConnectOptions::default();
    if let Some(ca) = &args.ca {
        let config = natter::tls::client_config(Some(ca)).context("--ca")?;
        options.tls = Some(config);
    }
    // Connected before the line editor starts, so that a server that
    // cannot be reached gets one error line and no prompt.
    let url = url::with_nick(&args.url, args.nick.as_deref());
    let client = Client::connect(&url, &options)
        .await
        .map_err(|e| anyhow::anyhow!(recover::describe(&e)))
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let prompt = RoomPrompt::default();
    let names = SharedNames::default();
    let (input, out) = input::start(interactive, render.colour(), prompt.clone(), names.clone());
    let mut chat = Chat::new(out, render, interactive, prompt, names, args.nick.clone());
    let result = converse(&mut chat, client, &input, &args, &options, interactive).await;
    chat.out.finish();
    result
}

/// Greets, joins `--room`, then serves connection after connection until the user
/// leaves or a drop is not worth (or not allowed) retrying.
async fn converse(
    chat: &mut Chat,
    mut client: Client,
    input: &input::Input,
    args: &ChatArgs,
    options: &ConnectOptions,
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let welcome = client.welcome().clone();
    chat.connected(&welcome);
    chat.wanted_nick = Some(welcome.nick.clone());
    chat.note(&format!(
        "connected to {} as {} ({})",
        args.url, welcome.nick, welcome.server
    ));
    if let Some(code) = welcome.nick_error {
        chat.note(&format!(
            "the nick you asked for was refused ({code}); you are {}",
            welcome.nick
        ));
    }
    if let Some(room) = &args.room {
        // Joined before reading input, so the first typed line has a room.
        let join = Request::Join {
            room: room.clone(),
            since: None,
            epoch: None,
        };
        match client.request(join).await {
            Ok(Reply::Join(ok)) => chat.on_join(ok),
            Ok(other) => chat.on_ok(other),
            Err(e) => chat
                .out
                .error_line(format!("natter: could not join #{room}: {e}")),
        }
    }
    chat.publish();
    let reconnecting = interactive && !args.no_reconnect;
    loop {
        let info = match chat.serve(&client, input).await {
            Ended::Done(code) => return Ok(code),
            Ended::Lost(info) => info,
        };
        chat.out.error_line(lost_line(info.as_ref()));
        if !reconnecting {
            return Ok(ExitCode::from(2));
        }
        if !reconnect::close_is_retryable(info.as_ref()) {
            chat.out.error_line(
                "natter: not reconnecting: the server closed for a reason a retry would meet again"
                    .into(),
            );
            return Ok(ExitCode::from(2));
        }
        client = match recover::reconnect(chat, input, &args.url, options).await {
            Reconnected::Back(client) => client,
            Reconnected::Quit => return Ok(ExitCode::SUCCESS),
            Reconnected::GaveUp(why) => {
                chat.out.error_line(format!("natter: {why}"));
                return Ok(ExitCode::from(2));
            }
        };
    }
}

/// The one line that says how the connection ended (the wording piped
/// users have always seen).
fn lost_line(info: Option<&CloseInfo>) -> String {
    match info {
        Some(info) if info.code == 1001 => format!("natter: server shut down ({info})"),
        Some(info) => format!("natter: connection closed by the server: {info}"),
        None => "natter: connection lost".into(),
    }
}
