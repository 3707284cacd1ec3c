//! `natter chat`: an interactive line client that also works with piped
//! stdin.
//!
//! One loop merges two streams — lines from stdin and frames from the
//! server — so printing never waits on typing and vice versa. Requests are
//! sent without waiting; their replies are matched by id when they arrive.
//! At end of input the client waits for every outstanding reply, then
//! closes with 1000.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::{StreamExt, stream};
use natter::{Client, ConnectOptions};
use natter_protocol::message::JoinOk;
use natter_protocol::{Id, Reply, Request, ServerMessage};

use crate::display;

#[derive(Args)]
pub struct ChatArgs {
    /// Server URL.
    #[arg(default_value = "ws://127.0.0.1:7878/ws")]
    url: String,
    /// Nick to ask for (the server picks a guest nick if it is taken).
    #[arg(long)]
    nick: Option<String>,
    /// Room to join on connect.
    #[arg(long)]
    room: Option<String>,
}

/// Longest wait for outstanding replies once input has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

enum Input {
    Line(String),
    Eof,
    Server(ServerMessage),
    ServerGone,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let url = with_nick(&args.url, args.nick.as_deref());
    let client = Client::connect(&url, &ConnectOptions::default())
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let welcome = client.welcome().clone();
    println!(
        "{}",
        display::note(&format!(
            "connected to {} as {} ({})",
            args.url, welcome.nick, welcome.server
        ))
    );
    if let Some(code) = welcome.nick_error {
        println!(
            "{}",
            display::note(&format!(
                "the nick you asked for was refused ({code}); you are {}",
                welcome.nick
            ))
        );
    }
    let mut chat = Chat {
        client: &client,
        current: None,
        outstanding: HashSet::new(),
        joins: HashMap::new(),
        pacer: Pacer::new(welcome.limits.rate_per_sec),
    };
    if let Some(room) = &args.room {
        // Joined before reading input, so the first typed line has a room.
        let join = Request::Join {
            room: room.clone(),
            since: None,
            epoch: None,
        };
        match client.request(join).await {
            Ok(reply) => chat.on_ok(reply),
            Err(e) => eprintln!("natter: could not join #{room}: {e}"),
        }
    }

    let lines = natter_runtime::stdin_lines()
        .filter_map(|line| futures::future::ready(line.ok()))
        .map(Input::Line)
        .chain(stream::once(futures::future::ready(Input::Eof)));
    let server = client
        .incoming()
        .map(Input::Server)
        .chain(stream::once(futures::future::ready(Input::ServerGone)));
    let mut inputs = std::pin::pin!(stream::select(lines, server));
    let mut input_done = false;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let next = match drain_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match natter_runtime::timeout(left, inputs.next()).await {
                    Some(next) => next,
                    None => {
                        eprintln!(
                            "natter: gave up waiting for {} replies",
                            chat.outstanding.len()
                        );
                        client.close().await;
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            None => inputs.next().await,
        };
        match next {
            Some(Input::Line(line)) if !input_done => {
                if !chat.on_line(line.trim_end()).await? {
                    input_done = true;
                }
            }
            Some(Input::Line(_)) => {}
            Some(Input::Eof) => input_done = true,
            Some(Input::Server(message)) => chat.on_server(message),
            Some(Input::ServerGone) | None => {
                match client.close_info() {
                    Some(info) if info.code == 1001 => {
                        eprintln!("natter: server shut down ({info})")
                    }
                    Some(info) => eprintln!("natter: connection closed by the server: {info}"),
                    None => eprintln!("natter: connection lost"),
                }
                return Ok(ExitCode::from(2));
            }
        }
        if input_done {
            if chat.outstanding.is_empty() {
                client.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
        }
    }
}

struct Chat<'a> {
    client: &'a Client,
    current: Option<String>,
    outstanding: HashSet<Id>,
    /// Joins in flight and the room that was current before each, so a
    /// refused join can put it back. Lines typed right after `/join` go to
    /// the new room, as the user expects.
    joins: HashMap<Id, Option<String>>,
    pacer: Pacer,
}

impl Chat<'_> {
    /// Handles one typed line; false means "quit".
    async fn on_line(&mut self, line: &str) -> anyhow::Result<bool> {
        if line.trim().is_empty() {
            return Ok(true);
        }
        let (command, rest) = match line.strip_prefix('/') {
            Some(cmd) => cmd
                .split_once(' ')
                .map_or((cmd, ""), |(c, r)| (c, r.trim())),
            None => {
                let Some(room) = self.current.clone() else {
                    println!("{}", display::note("join a room first: /join ROOM"));
                    return Ok(true);
                };
                let say = Request::Say {
                    room,
                    text: line.to_owned(),
                };
                self.send(say).await?;
                return Ok(true);
            }
        };
        let current_or = |arg: &str| -> Option<String> {
            if arg.is_empty() {
                self.current.clone()
            } else {
                Some(arg.to_owned())
            }
        };
        let request = match command {
            "quit" | "exit" => return Ok(false),
            "help" => {
                println!("{}", display::HELP);
                return Ok(true);
            }
            "join" if !rest.is_empty() => Request::Join {
                room: rest.to_owned(),
                since: None,
                epoch: None,
            },
            "leave" => match current_or(rest) {
                Some(room) => Request::Leave { room },
                None => return self.usage("/leave ROOM"),
            },
            "nick" if !rest.is_empty() => Request::Nick {
                nick: rest.to_owned(),
            },
            "msg" => match rest.split_once(' ') {
                Some((to, text)) => Request::Whisper {
                    to: to.to_owned(),
                    text: text.to_owned(),
                },
                None => return self.usage("/msg NICK TEXT"),
            },
            "who" => match current_or(rest) {
                Some(room) => Request::Who { room },
                None => return self.usage("/who ROOM"),
            },
            "rooms" => Request::Rooms,
            "join" => return self.usage("/join ROOM"),
            "nick" => return self.usage("/nick NAME"),
            other => {
                println!(
                    "{}",
                    display::note(&format!("unknown command /{other}; try /help"))
                );
                return Ok(true);
            }
        };
        let joining = match &request {
            Request::Join { room, .. } => {
                if natter_protocol::names::validate_room(room).is_err() {
                    let why = "a room is 1-64 characters of a-z 0-9 _ - .";
                    println!("{}", display::note(&format!("cannot join {room:?}: {why}")));
                    return Ok(true);
                }
                Some(room.clone())
            }
            _ => None,
        };
        let id = self.send(request).await?;
        if let Some(room) = joining {
            let previous = self.current.replace(room);
            self.joins.insert(id, previous);
        }
        Ok(true)
    }

    fn usage(&self, text: &str) -> anyhow::Result<bool> {
        println!("{}", display::note(&format!("usage: {text}")));
        Ok(true)
    }

    async fn send(&mut self, request: Request) -> anyhow::Result<Id> {
        self.pacer.wait().await;
        let id = self
            .client
            .send(request)
            .await
            .context("sending to the server")?;
        self.outstanding.insert(id.clone());
        Ok(id)
    }

    fn on_server(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Message(m) => println!("{}", display::message(&m)),
            ServerMessage::Presence(p) => println!("{}", display::presence(&p)),
            ServerMessage::Whisper(w) => println!("{}", display::whisper(&w)),
            ServerMessage::Shutdown { reason } => {
                println!(
                    "{}",
                    display::note(&format!("the server is going down ({reason})"))
                )
            }
            ServerMessage::Welcome(_) => {}
            ServerMessage::Error(e) => {
                if let Some(id) = &e.id {
                    self.outstanding.remove(id);
                    if let Some(previous) = self.joins.remove(id) {
                        self.current = previous;
                    }
                }
                println!(
                    "{}",
                    display::note(&format!("error: {} ({})", e.message, e.code.as_str()))
                );
            }
            ServerMessage::Ok(ok) => {
                if let Some(id) = &ok.id {
                    self.outstanding.remove(id);
                    self.joins.remove(id);
                }
                self.on_ok(ok.reply);
            }
        }
    }

    fn on_ok(&mut self, reply: Reply) {
        let line = match reply {
            Reply::Join(JoinOk {
                room,
                members,
                history,
                complete,
                ..
            }) => {
                for m in &history {
                    println!("{}", display::message(m));
                }
                let more = if complete {
                    ""
                } else {
                    " (older messages not shown)"
                };
                self.current = Some(room.clone());
                format!("now in #{room} with {}{more}", members.join(", "))
            }
            Reply::Leave { room } => {
                if self.current.as_deref() == Some(room.as_str()) {
                    self.current = None;
                }
                format!("left #{room}")
            }
            Reply::Say { .. } => return,
            Reply::Nick { nick } => format!("you are now {nick}"),
            Reply::Whisper { to } => format!("whispered to {to}"),
            Reply::Who { room, members } => format!("#{room}: {}", members.join(", ")),
            Reply::Rooms { rooms } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|r| format!("#{} ({})", r.room, r.members))
                    .collect();
                if list.is_empty() {
                    "no rooms with members".into()
                } else {
                    list.join(", ")
                }
            }
        };
        println!("{}", display::note(&line));
    }
}

/// Keeps a typing (or piping) user under the server's rate limit, so a
/// pasted or piped burst is sent steadily instead of being refused.
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate_per_sec: u32) -> Pacer {
        Pacer {
            interval: (rate_per_sec > 0)
                .then(|| Duration::from_secs_f64(1.0 / f64::from(rate_per_sec))),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        if self.next > now {
            natter_runtime::sleep(self.next - now).await;
        }
        self.next = self.next.max(now) + interval;
    }
}

/// Adds `?nick=` to the URL unless it already carries one.
fn with_nick(url: &str, nick: Option<&str>) -> String {
    match nick {
        None => url.to_owned(),
        Some(nick) if url.contains("nick=") => {
            let _ = nick;
            url.to_owned()
        }
        Some(nick) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let encoded: String = nick
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{url}{sep}nick={encoded}")
        }
    }
}
