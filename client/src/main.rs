//! `natter`: the bundled chat client and the load tester.

mod chat;
mod load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "natter", version, about = "Client for the natter chat server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat interactively: each line you type is said in the current room.
    ///
    /// Commands: /join ROOM, /leave [ROOM], /nick NAME, /msg NICK TEXT,
    /// /who [ROOM], /rooms, /help, /quit.
    ///
    /// On a terminal, events print above a prompt showing the current room
    /// (`#lobby> `) and the line being typed stays intact. Keys: Tab
    /// completes commands, nicks of the current room and rooms; Up/Down
    /// walk this session's lines and Ctrl-R searches them; Ctrl-C clears the
    /// line; Ctrl-D on an empty line leaves. Nicks are coloured unless
    /// NO_COLOR is set. When the connection drops the client reconnects
    /// (with backoff), rejoins its rooms and prints what it missed.
    ///
    /// With stdin piped, every line is sent in turn; the client waits for
    /// the replies, closes cleanly and exits 0; no colours, no reconnecting
    /// (exit 1 when it cannot connect, 2 when the connection drops).
    Chat(chat::ChatArgs),
    /// Load-test a server: fanout, conns, ramp, churn.
    ///
    /// Every test uses only protocol messages, so it works against any
    /// server speaking the natter protocol; start the server with --rate 0
    /// (and a --max-connections large enough for the test). Each run is
    /// bounded by a hard deadline, prints a summary on stdout (or one JSON
    /// object with --json) and exits 0 for a clean run, 1 when the server
    /// misbehaved (loss, duplicates, reordering, unexpected closes, failed
    /// connections, missing replies), 2 for usage or connection errors.
    /// `natter load TEST --help` explains each test's options.
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(args) => natter_runtime::block_on(chat::run(args)),
        Command::Load(args) => Ok(natter_runtime::block_on(load::run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natter: {e:#}");
            ExitCode::from(1)
        }
    }
}
