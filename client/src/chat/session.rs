//! One connection's conversation: typed lines become requests, server
//! frames become printed lines, until input ends or the connection drops.
//!
//! One loop waits on two things at once — the next typed line and the next
//! frame from the server — so printing never waits on typing and vice
//! versa. Requests are sent without waiting; their replies are matched by
//! id when they arrive. At end of input the client waits for every
//! outstanding reply, then closes with 1000.
//!
//! What outlives a connection (the rooms and their last seq, the nick we
//! want) is in [`Chat`], which a reconnect hands to the next connection.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::process::ExitCode;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use futures::future::{Either, select};
use natter::{Client, CloseInfo};
use natter_protocol::message::JoinOk;
use natter_protocol::{Id, Reply, Request, ServerMessage, Welcome};

use super::commands::{self, Action};
use super::completion::SharedNames;
use super::input::{Input, Output, RoomPrompt, Typed};
use super::render::{self, Render};
use super::rooms::Rooms;

/// Longest wait for outstanding replies once input has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection's conversation ended.
#[derive(Debug)]
pub enum Ended {
    /// Input ended (or /quit) and the client closed: exit with this code.
    Done(ExitCode),
    /// The connection dropped; how the server closed it, if it said.
    Lost(Option<CloseInfo>),
}

/// The chat's state across connections, and where it prints.
pub struct Chat {
    /// Rooms we are in, with the seq and epoch a rejoin needs.
    pub rooms: Rooms,
    /// The nick to ask for when (re)connecting: the one given with
    /// `--nick`, or the last one `/nick` got.
    pub wanted_nick: Option<String>,
    /// The nick the server gave us on this connection.
    pub nick: String,
    pub out: Output,
    pub render: Render,
    /// Whether /help also lists the editor's keys.
    interactive: bool,
    prompt: RoomPrompt,
    names: SharedNames,
    /// Requests of this connection awaiting a reply.
    outstanding: HashSet<Id>,
    /// Joins in flight and the room that was current before each, so a
    /// refused join can put it back. Lines typed right after `/join` go to
    /// the new room, as the user expects.
    joins: HashMap<Id, Option<String>>,
    pacer: Pacer,
}

impl Chat {
    pub fn new(
        out: Output,
        render: Render,
        interactive: bool,
        prompt: RoomPrompt,
        names: SharedNames,
        wanted_nick: Option<String>,
    ) -> Chat {
        Chat {
            rooms: Rooms::default(),
            wanted_nick,
            nick: String::new(),
            out,
            render,
            interactive,
            prompt,
            names,
            outstanding: HashSet::new(),
            joins: HashMap::new(),
            pacer: Pacer::new(0),
        }
    }

    /// Starts a connection's bookkeeping from its `welcome`.
    pub fn connected(&mut self, welcome: &Welcome) {
        self.nick = welcome.nick.clone();
        self.outstanding.clear();
        self.joins.clear();
        self.pacer = Pacer::new(welcome.limits.rate_per_sec);
    }

    pub fn note(&self, text: &str) {
        self.out.line(self.render.note(text));
    }

    pub fn status(&self, text: &str) {
        self.out.line(self.render.status(text));
    }

    pub fn error(&self, text: &str) {
        self.out.line(self.render.error(text));
    }

    /// Publishes the current room to the prompt and the names to Tab
    /// completion, after anything that may have changed them.
    pub fn publish(&self) {
        self.prompt.set(self.rooms.current.as_deref());
        *self.names.lock().unwrap_or_else(PoisonError::into_inner) = self.rooms.completion_names();
    }

    /// Serves one connection until input ends or the connection drops.
    pub async fn serve(&mut self, client: &Client, input: &Input) -> Ended {
        let mut input_done = false;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let next = if input_done {
                let left = drain_deadline
                    .get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT)
                    .saturating_duration_since(Instant::now());
                match natter_runtime::timeout(left, client.next()).await {
                    Some(message) => Either::Right(message),
                    None => {
                        let left = self.outstanding.len();
                        self.out
                            .error_line(format!("natter: gave up waiting for {left} replies"));
                        client.close().await;
                        return Ended::Done(ExitCode::from(1));
                    }
                }
            } else {
                match select(pin!(input.next()), pin!(client.next())).await {
                    Either::Left((typed, _)) => Either::Left(typed),
                    Either::Right((message, _)) => Either::Right(message),
                }
            };
            match next {
                Either::Left(Typed::Line(line)) => match self.on_line(client, &line).await {
                    Ok(true) => {}
                    Ok(false) => input_done = true,
                    Err(lost) => return lost,
                },
                Either::Left(Typed::Eof) => input_done = true,
                Either::Right(Some(message)) => self.on_server(message),
                Either::Right(None) => return Ended::Lost(client.close_info()),
            }
            if input_done && self.outstanding.is_empty() {
                client.close().await;
                return Ended::Done(ExitCode::SUCCESS);
            }
        }
    }

    /// Handles one typed line; `Ok(false)` means "quit", `Err` that the
    /// connection is gone.
    async fn on_line(&mut self, client: &Client, line: &str) -> Result<bool, Ended> {
        let request = match commands::parse(line, self.rooms.current.as_deref()) {
            Action::Nothing => return Ok(true),
            Action::Quit => return Ok(false),
            Action::Help => {
                self.out.line(render::HELP.to_owned());
                if self.interactive {
                    self.out.line(render::KEYS.to_owned());
                }
                return Ok(true);
            }
            Action::Usage(usage) => {
                self.note(&format!("usage: {usage}"));
                return Ok(true);
            }
            Action::Unknown(other) => {
                self.note(&format!("unknown command /{other}; try /help"));
                return Ok(true);
            }
            Action::Say(text) => {
                let Some(room) = self.rooms.current.clone() else {
                    self.note("join a room first: /join ROOM");
                    return Ok(true);
                };
                Request::Say { room, text }
            }
            Action::Send(request) => request,
        };
        let joining = match &request {
            Request::Join { room, .. } => {
                if natter_protocol::names::validate_room(room).is_err() {
                    let why = "a room is 1-64 characters of a-z 0-9 _ - .";
                    self.note(&format!("cannot join {room:?}: {why}"));
                    return Ok(true);
                }
                Some(room.clone())
            }
            _ => None,
        };
        let id = self.send(client, request).await?;
        if let Some(room) = joining {
            let previous = self.rooms.current.replace(room);
            self.joins.insert(id, previous);
            self.publish();
        }
        Ok(true)
    }

    async fn send(&mut self, client: &Client, request: Request) -> Result<Id, Ended> {
        self.pacer.wait().await;
        match client.send(request).await {
            Ok(id) => {
                self.outstanding.insert(id.clone());
                Ok(id)
            }
            Err(e) => {
                log::info!("sending failed: {e}");
                Err(Ended::Lost(client.close_info()))
            }
        }
    }

    fn on_server(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Message(m) => {
                if self.rooms.is_new(&m) {
                    self.out.line(self.render.message(&m));
                }
            }
            ServerMessage::Presence(p) => {
                self.rooms.presence(&p);
                self.out.line(self.render.presence(&p));
                self.publish();
            }
            ServerMessage::Whisper(w) => self.out.line(self.render.whisper(&w)),
            ServerMessage::Shutdown { reason } => {
                self.status(&format!("the server is going down ({reason})"))
            }
            ServerMessage::Welcome(_) => {}
            ServerMessage::Error(e) => {
                if let Some(id) = &e.id {
                    self.outstanding.remove(id);
                    if let Some(previous) = self.joins.remove(id) {
                        self.rooms.current = previous;
                        self.publish();
                    }
                }
                self.error(&format!("error: {} ({})", e.message, e.code.as_str()));
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

    /// Prints a first join's history and records the room (also used for
    /// `--room` at start).
    pub fn on_join(&mut self, ok: JoinOk) {
        for m in &ok.history {
            self.out.line(self.render.message(m));
        }
        self.rooms.joined(&ok);
        let more = if ok.complete {
            ""
        } else {
            " (older messages not shown)"
        };
        self.rooms.current = Some(ok.room.clone());
        self.publish();
        self.note(&format!(
            "now in #{} with {}{more}",
            ok.room,
            ok.members.join(", ")
        ));
    }

    pub fn on_ok(&mut self, reply: Reply) {
        let line = match reply {
            Reply::Join(ok) => return self.on_join(ok),
            Reply::Leave { room } => {
                self.rooms.left(&room);
                self.publish();
                format!("left #{room}")
            }
            Reply::Say { .. } => return,
            Reply::Nick { nick } => {
                self.nick = nick.clone();
                self.wanted_nick = Some(nick.clone());
                format!("you are now {nick}")
            }
            Reply::Whisper { to } => format!("whispered to {to}"),
            Reply::Who { room, members } => format!("#{room}: {}", members.join(", ")),
            Reply::Rooms { rooms } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|r| format!("#{} ({})", r.room, r.members))
                    .collect();
                self.rooms.listed(rooms.into_iter().map(|r| r.room));
                self.publish();
                if list.is_empty() {
                    "no rooms with members".into()
                } else {
                    list.join(", ")
                }
            }
        };
        self.note(&line);
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
