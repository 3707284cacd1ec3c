//! `natter chat` as a person uses it: the real binary in a pseudo-terminal
//! (expectrl), against the real server in process, with a second client
//! (the library) playing the other person.
//!
//! A pseudo-terminal is not a terminal emulator: nobody answers the
//! editor's "where is the cursor?" query (`ESC[6n`), and crossterm gives up
//! on it after two seconds. [`Term`] answers it (the cursor is on the
//! bottom row, where the client puts its prompt) and keeps a transcript of
//! everything printed, with escape sequences stripped, to search.
//!
//! Every wait is bounded by [`WAIT`] (generous: the binary is a debug
//! build and the machine is shared), and the pty is polled every
//! [`POLL`]: there is nothing to await on a pty from a sync test.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use futures::StreamExt;

use common::{Running, start_server_with};
use expectrl::Session;
use natter::{Client, ConnectOptions};
use natter_protocol::{Reply, Request, ServerMessage};
use natter_server::Config;

/// Longest wait for anything the client should print or do.
const WAIT: Duration = Duration::from_secs(30);
/// How often the pty is read while waiting.
const POLL: Duration = Duration::from_millis(10);
/// The pseudo-terminal's size.
const COLS: u16 = 120;
const ROWS: u16 = 30;

/// The real server, in process, on `listen` (port 0 for a free one).
fn start_server(listen: &str) -> Running {
    start_server_with(Config {
        listen: listen.into(),
        rate: 0,
        ..Config::local()
    })
}

/// The other person: a library client in `room`.
fn peer(url: &str, nick: &str, room: &str) -> Client {
    natter_runtime::block_on(async {
        let url = format!("{url}?nick={nick}");
        let client = Client::connect(&url, &ConnectOptions::default())
            .await
            .expect("the peer connects");
        assert_eq!(client.welcome().nick, nick);
        let join = Request::Join {
            room: room.into(),
            since: None,
            epoch: None,
        };
        client.request(join).await.expect("the peer joins");
        client
    })
}

fn say(client: &Client, room: &str, text: &str) {
    let say = Request::Say {
        room: room.into(),
        text: text.into(),
    };
    let reply = natter_runtime::block_on(natter_runtime::timeout(WAIT, client.request(say)));
    assert!(matches!(reply, Some(Ok(Reply::Say { .. }))), "{reply:?}");
}

/// Waits until `client` receives a room message `text` from `from`.
fn wait_for_message(client: &Client, from: &str, text: &str) {
    let found = natter_runtime::block_on(natter_runtime::timeout(WAIT, async {
        while let Some(message) = client.next().await {
            if let ServerMessage::Message(m) = message
                && m.from == from
                && m.text == text
            {
                return true;
            }
        }
        false
    }));
    assert_eq!(found, Some(true), "{from} never said {text:?}");
}

/// `natter chat` in a pseudo-terminal.
struct Term {
    session: Session,
    /// Everything printed, escape sequences stripped.
    text: String,
    /// Raw bytes not yet scanned for cursor queries.
    pending: Vec<u8>,
}

impl Term {
    fn spawn(args: &[&str]) -> Term {
        let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
        command
            .arg("chat")
            .args(args)
            .env("NO_COLOR", "1")
            .env("TERM", "xterm")
            .env("RUST_LOG", "warn");
        let mut session = Session::spawn(command).expect("natter starts in a pty");
        session
            .get_process_mut()
            .set_window_size(COLS, ROWS)
            .expect("the pty takes a size");
        Term {
            session,
            text: String::new(),
            pending: Vec::new(),
        }
    }

    /// Reads what is there, answers cursor queries, extends the transcript.
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.session.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => break, // WouldBlock: nothing more for now
            }
        }
        const QUERY: &[u8] = b"\x1b[6n";
        while let Some(at) = find(&self.pending, QUERY) {
            let answer = format!("\x1b[{ROWS};1R");
            self.session
                .write_all(answer.as_bytes())
                .expect("answering the cursor query");
            let before: Vec<u8> = self.pending.drain(..at + QUERY.len()).collect();
            self.text.push_str(&strip(&before[..at]));
        }
        // Keep a tail that may be the start of a split query.
        let keep = self.pending.len().min(QUERY.len() - 1);
        let done: Vec<u8> = self.pending.drain(..self.pending.len() - keep).collect();
        self.text.push_str(&strip(&done));
    }

    /// Waits until `needle` is printed after byte `from` of the transcript;
    /// returns where it ends.
    fn wait_for(&mut self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pump();
            if let Some(at) = self.text.get(from..).and_then(|t| t.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not printed within {WAIT:?}; the screen said:\n{}",
                self.text
            );
            std::thread::sleep(POLL);
        }
    }

    fn type_text(&mut self, text: &str) {
        self.session.send(text).expect("typing");
    }

    /// Waits for the process to exit; its exit status.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pump();
            match self.session.get_process().status() {
                Ok(expectrl::WaitStatus::Exited(_, code)) => return code,
                Ok(expectrl::WaitStatus::StillAlive) | Err(_) => {}
                Ok(other) => panic!("natter ended with {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "natter did not exit:\n{}",
                self.text
            );
            std::thread::sleep(POLL);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The text of terminal output: CSI and two-byte escapes removed, carriage
/// returns dropped.
fn strip(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters, then a final byte in @..~; any
                // other escape is two bytes (ESC 7, ESC 8, ...).
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn typed_text_survives_an_incoming_message_and_is_sent_whole() {
    let server = start_server("127.0.0.1:0");
    let url = server.handle.url();
    let alice = peer(&url, "alice", "lobby");
    let mut term = Term::spawn(&[&url, "--nick", "bob", "--room", "lobby"]);
    let mark = term.wait_for("now in #lobby", 0);
    let mark = term.wait_for("#lobby> ", mark);

    term.type_text("I am typing a long sent");
    let mark = term.wait_for("I am typing a long sent", mark);
    say(&alice, "lobby", "interrupting you!");
    let mark = term.wait_for("<alice> interrupting you!", mark);
    // The editor redraws the prompt with the half-typed line under it.
    term.wait_for("#lobby> I am typing a long sent", mark);

    term.type_text("ence\r");
    wait_for_message(&alice, "bob", "I am typing a long sentence");

    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
    server.stop();
}

#[test]
fn tab_completes_a_nick_of_the_current_room() {
    let server = start_server("127.0.0.1:0");
    let url = server.handle.url();
    let carol = peer(&url, "carol-the-long", "lobby");
    let mut term = Term::spawn(&[&url, "--nick", "bob", "--room", "lobby"]);
    let mark = term.wait_for("now in #lobby", 0);
    term.wait_for("#lobby> ", mark);

    term.type_text("/msg carol\t");
    term.type_text("psst\r");
    let whisper = natter_runtime::block_on(natter_runtime::timeout(WAIT, async {
        while let Some(message) = carol.next().await {
            if let ServerMessage::Whisper(w) = message {
                return Some(w);
            }
        }
        None
    }));
    let whisper = whisper.flatten().expect("carol got a whisper");
    assert_eq!(
        (whisper.from.as_str(), whisper.text.as_str()),
        ("bob", "psst")
    );

    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
    server.stop();
}

#[test]
fn after_a_restart_on_the_same_port_it_reconnects_and_says_what_it_missed() {
    let first = start_server("127.0.0.1:0");
    let url = first.handle.url();
    let addr = first.handle.local_addr().to_string();
    let mut term = Term::spawn(&[&url, "--nick", "bob", "--room", "lobby"]);
    let mark = term.wait_for("now in #lobby", 0);

    first.stop();
    let mark = term.wait_for("server shut down", mark);
    let mark = term.wait_for("reconnecting", mark);

    let second = start_server(&addr);
    let alice = peer(&url, "alice", "lobby");
    say(&alice, "lobby", "said while you were away");
    let mark = term.wait_for("reconnected as bob", mark);
    // A restart without durable history: a new epoch, so the client says
    // history was lost, and shows what the new room holds.
    term.wait_for("<alice> said while you were away", mark);
    term.wait_for("missed messages in #lobby", mark);

    // And it is back in the room for real: what it says arrives.
    term.type_text("back again\r");
    wait_for_message(&alice, "bob", "back again");
    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
    second.stop();
}

#[test]
fn after_a_restart_with_durable_history_it_recovers_without_a_gap() {
    let data = tempfile::tempdir().expect("a data directory");
    let durable = |listen: &str| Config {
        listen: listen.into(),
        rate: 0,
        data_dir: Some(data.path().to_owned()),
        ..Config::local()
    };
    let first = start_server_with(durable("127.0.0.1:0"));
    let url = first.handle.url();
    let addr = first.handle.local_addr().to_string();
    let mut term = Term::spawn(&[&url, "--nick", "bob", "--room", "lobby"]);
    let mark = term.wait_for("now in #lobby", 0);
    let alice = peer(&url, "alice", "lobby");
    say(&alice, "lobby", "said before the restart");
    let mark = term.wait_for("<alice> said before the restart", mark);
    drop(alice);

    first.stop();
    let mark = term.wait_for("server shut down", mark);
    let mark = term.wait_for("reconnecting", mark);

    let second = start_server_with(durable(&addr));
    let alice = peer(&url, "alice", "lobby");
    say(&alice, "lobby", "said while you were away");
    let mark = term.wait_for("reconnected as bob", mark);
    // The same epoch and every message kept: the client shows only what
    // it had not seen, and says nothing was missed.
    let mark = term.wait_for("<alice> said while you were away", mark);
    term.wait_for("1 message(s) while you were away, none missed", mark);
    assert!(
        !term.text.contains("missed messages"),
        "a durable restart reported a gap:\n{}",
        term.text
    );
    assert_eq!(
        term.text.matches("said before the restart").count(),
        1,
        "a message seen before the restart was shown again:\n{}",
        term.text
    );

    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
    second.stop();
}

/// A server that greets every connection and closes it at once with
/// `code` and `reason`; counts the connections it saw (at most 16).
fn start_closing_server(code: u16, reason: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = natter_runtime::bind("127.0.0.1:0", 16).expect("the fake server binds");
    let addr = listener.local_addr().expect("its address");
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    natter_runtime::spawn(async move {
        for _ in 0..16 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = async_tungstenite::accept_async(socket).await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let welcome = r#"{"type":"welcome","nick":"bob","protocol":1,"server":"fake 0",
                "limits":{"max_message_bytes":65536,"max_text_bytes":4096,"rate_per_sec":0,
                "burst":40,"max_rooms_per_connection":32}}"#;
            let close = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            let _ = ws.send(Message::text(welcome)).await;
            let _ = ws.send(Message::Close(Some(close))).await;
            // Read until the client's answering close ends the stream.
            let _ =
                natter_runtime::timeout(WAIT, async { while ws.next().await.is_some() {} }).await;
        }
    });
    (format!("ws://{addr}/ws"), seen)
}

#[test]
fn a_close_for_policy_ends_the_client_without_reconnecting() {
    let (url, seen) = start_closing_server(1008, "flooding");
    let mut term = Term::spawn(&[&url, "--nick", "bob"]);
    let mark = term.wait_for("close code 1008: flooding", 0);
    term.wait_for("not reconnecting", mark);
    assert_eq!(term.wait_exit(), 2, "{}", term.text);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "it connected again:\n{}",
        term.text
    );
}

#[test]
fn try_again_later_is_retried_until_the_user_quits() {
    let (url, seen) = start_closing_server(1013, "try again later");
    let mut term = Term::spawn(&[&url, "--nick", "bob"]);
    let mark = term.wait_for("close code 1013", 0);
    let mark = term.wait_for("reconnected as bob", mark);
    term.wait_for("reconnecting", mark);
    assert!(seen.load(Ordering::SeqCst) >= 2, "{}", term.text);
    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
}

/// A TCP proxy in front of the server that can cut every connection
/// through it (the network dropping) and refuse new ones for a while.
struct Proxy {
    url: String,
    /// While set, new connections are closed at once.
    refusing: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to cut them.
    live: Arc<Mutex<Vec<natter_runtime::TcpStream>>>,
}

impl Proxy {
    fn start(backend: std::net::SocketAddr) -> Proxy {
        let listener = natter_runtime::bind("127.0.0.1:0", 16).expect("the proxy binds");
        let addr = listener.local_addr().expect("its address");
        let refusing = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<natter_runtime::TcpStream>>> = Arc::default();
        let (refuse, conns) = (refusing.clone(), live.clone());
        natter_runtime::spawn(async move {
            // Bounded: a test makes a handful of connections (and the
            // client's reconnect tries while refused).
            for _ in 0..64 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = natter_runtime::connect(backend).await else {
                    continue;
                };
                conns
                    .lock()
                    .expect("the proxy's list")
                    .extend([client.clone(), server.clone()]);
                natter_runtime::spawn(forward(client.clone(), server.clone()));
                natter_runtime::spawn(forward(server, client));
            }
        });
        Proxy {
            url: format!("ws://{addr}/ws"),
            refusing,
            live,
        }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::reopen`].
    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for socket in self.live.lock().expect("the proxy's list").drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    fn reopen(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

async fn forward(from: natter_runtime::TcpStream, mut to: natter_runtime::TcpStream) {
    let _ = futures::io::copy(from, &mut to).await;
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
fn after_a_network_drop_it_rejoins_with_since_and_names_the_first_seq_it_could_not_get() {
    // History of 2: of the five messages said while the client is away,
    // the server keeps only the last two.
    let server = start_server_with(Config {
        rate: 0,
        history: 2,
        ..Config::local()
    });
    let proxy = Proxy::start(server.handle.local_addr());
    let alice = peer(&server.handle.url(), "alice", "lobby");
    let mut term = Term::spawn(&[&proxy.url, "--nick", "bob", "--room", "lobby"]);
    let mark = term.wait_for("now in #lobby", 0);
    say(&alice, "lobby", "m1");
    let mark = term.wait_for("<alice> m1", mark);

    proxy.cut();
    let mark = term.wait_for("connection", mark);
    // The server notices bob is gone before anything is said: what
    // follows is said while bob is not in the room at all.
    let gone = Instant::now() + WAIT;
    while natter_runtime::block_on(server.handle.stats())
        .registry
        .memberships
        != 1
    {
        assert!(Instant::now() < gone, "the server never saw bob leave");
        std::thread::sleep(POLL);
    }
    for text in ["m2", "m3", "m4", "m5", "m6"] {
        say(&alice, "lobby", text);
    }
    proxy.reopen();

    let mark = term.wait_for("reconnected as bob", mark);
    let shown = term.wait_for("<alice> m6", mark);
    term.wait_for("missed messages in #lobby before seq 5", mark);
    assert!(
        term.text[mark..shown].contains("<alice> m5"),
        "{}",
        term.text
    );
    assert!(!term.text[mark..].contains("<alice> m4"), "{}", term.text);
    assert!(
        !term.text[mark..].contains("<alice> m1"),
        "m1 shown twice: {}",
        term.text
    );

    term.type_text("/quit\r");
    assert_eq!(term.wait_exit(), 0, "{}", term.text);
    server.stop();
}
