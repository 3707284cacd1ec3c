//! `natter`: the bundled chat client (and, later, load tester).

mod chat;
mod display;

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
    /// /who [ROOM], /rooms, /help, /quit. With stdin piped, every line is
    /// sent in turn; the client waits for the replies, closes cleanly and
    /// exits 0.
    Chat(chat::ChatArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(args) => natter_runtime::block_on(chat::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natter: {e:#}");
            ExitCode::from(1)
        }
    }
}
