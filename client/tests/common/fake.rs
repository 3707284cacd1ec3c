//! A deliberately misbehaving chat server for the load tester's tests: it
//! speaks just enough of PROTOCOL.md for `natter load fanout` (`welcome`,
//! `join` and `say` with their `ok` replies, `message` events to the
//! room's members) and does to some subscriber's copy of a message what
//! the test's picker says: drop it, send it twice, or hold it back behind
//! its publisher's next one. Shared by `load_accounting.rs` (one fault, on
//! the first subscriber) and `load_workers.rs` (a fault per worker, chosen
//! by the subscriber's source address).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{Either, select};
use natter_protocol::{
    ChatMessage, ErrorCode, JoinOk, Limits, OkReply, PROTOCOL_VERSION, Reply, Request,
    ServerMessage, Welcome, decode_request, encode_error,
};
use natter_runtime::{TcpListener, TcpStream};

/// What the server does wrong to one member's copy of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It never reaches the member.
    Drop,
    /// It reaches the member twice in a row.
    Duplicate,
    /// It reaches the member after the same publisher's next message.
    Swap,
}

/// One connection's place in a room.
pub struct Member {
    pub conn: u64,
    /// Its source address (the workers of a run each have their own).
    pub peer: IpAddr,
    out: UnboundedSender<String>,
}

/// A message held back from one member (the `Swap` fault).
struct Held {
    target: u64,
    /// The connection that said it: it is released after that
    /// connection's next message.
    from: u64,
    seq: u64,
    frame: String,
}

/// A room as the picker sees it.
#[derive(Default)]
pub struct Room {
    pub seq: u64,
    pub members: Vec<Member>,
    /// Connections that have said something: the publishers. A member not
    /// in here once every publisher spoke is a subscriber.
    pub sayers: HashSet<u64>,
    held: Option<Held>,
}

impl Room {
    /// Whether a swapped message is still held back (one at a time).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }
}

/// Chooses the fault, if any, for member `target`'s copy of message `seq`
/// (the sayer is already among `sayers`). At most one fault is done per
/// message; the picker keeps its own count of what it has done.
type Picker = Box<dyn FnMut(&Room, u64, u64) -> Option<Fault> + Send>;

struct State {
    /// The test's name, in the `welcome`.
    name: &'static str,
    rooms: Mutex<HashMap<String, Room>>,
    picker: Mutex<Picker>,
    /// Faults done so far.
    injected: AtomicU64,
}

/// The running fake server, on 127.0.0.1 (port 0).
pub struct FakeServer {
    pub url: String,
    state: Arc<State>,
    /// Dropping it stops the accept loop.
    _stop: futures::channel::oneshot::Sender<()>,
}

impl FakeServer {
    pub fn start(
        name: &'static str,
        picker: impl FnMut(&Room, u64, u64) -> Option<Fault> + Send + 'static,
    ) -> FakeServer {
        let listener = natter_runtime::bind("127.0.0.1:0", 128).expect("fake server binds");
        let addr = listener.local_addr().expect("listener has an address");
        let state = Arc::new(State {
            name,
            rooms: Mutex::default(),
            picker: Mutex::new(Box::new(picker)),
            injected: AtomicU64::new(0),
        });
        let (stop, stopped) = futures::channel::oneshot::channel();
        natter_runtime::spawn(accept_loop(listener, state.clone(), stopped));
        FakeServer {
            url: format!("ws://{addr}/ws"),
            state,
            _stop: stop,
        }
    }

    /// How many faults were done.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }
}

/// Accepts connections until `stopped` fires (its sender is dropped) or
/// accepting fails (the test then fails on the refused connection).
async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut stopped: futures::channel::oneshot::Receiver<()>,
) {
    let mut next_conn = 0u64;
    loop {
        let accept = pin!(listener.accept());
        match select(accept, &mut stopped).await {
            Either::Left((Ok((stream, peer)), _)) => {
                next_conn += 1;
                natter_runtime::spawn(serve(stream, peer.ip(), next_conn, state.clone()));
            }
            Either::Left((Err(_), _)) | Either::Right(_) => return,
        }
    }
}

/// One connection: answers requests in order and forwards what the rooms
/// queue for it, until the client closes.
async fn serve(stream: TcpStream, peer: IpAddr, conn: u64, state: Arc<State>) {
    let Ok(ws) = async_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut frames) = ws.split();
    let (out, mut queued) = unbounded::<String>();
    let nick = format!("guest-{conn}");
    let welcome = ServerMessage::Welcome(Welcome {
        nick: nick.clone(),
        protocol: PROTOCOL_VERSION,
        server: format!("natter-fake ({} test)", state.name),
        limits: Limits {
            rate_per_sec: 0,
            ..Limits::default()
        },
        nick_error: None,
    });
    let _ = out.unbounded_send(welcome.to_json());
    loop {
        match select(frames.next(), queued.next()).await {
            Either::Left((Some(Ok(Message::Text(text))), _)) => {
                let reply = handle(&state, conn, peer, &nick, &out, &text);
                let _ = out.unbounded_send(reply);
            }
            // Keep reading after a close: tungstenite answers it on the
            // next read, which then ends the stream.
            Either::Left((Some(Ok(_)), _)) => {}
            Either::Left((None | Some(Err(_)), _)) => break,
            Either::Right((Some(frame), _)) => {
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            Either::Right((None, _)) => break, // cannot happen: we hold `out`
        }
    }
    let mut rooms = state.rooms.lock().unwrap();
    for room in rooms.values_mut() {
        room.members.retain(|m| m.conn != conn);
    }
}

/// Handles one request; returns the reply. Events go to the members'
/// queues before the reply is queued.
fn handle(
    state: &State,
    conn: u64,
    peer: IpAddr,
    nick: &str,
    out: &UnboundedSender<String>,
    text: &str,
) -> String {
    let envelope = match decode_request(text) {
        Ok(envelope) => envelope,
        Err(e) => return encode_error(e.id.as_ref(), e.code, &e.message),
    };
    let id = envelope.id;
    let reply = match envelope.request {
        Request::Join { room, .. } => {
            let mut rooms = state.rooms.lock().unwrap();
            let r = rooms.entry(room.clone()).or_default();
            if !r.members.iter().any(|m| m.conn == conn) {
                r.members.push(Member {
                    conn,
                    peer,
                    out: out.clone(),
                });
            }
            Reply::Join(JoinOk {
                room,
                members: Vec::new(),
                seq: r.seq,
                epoch: "fake".into(),
                history: Vec::new(),
                complete: r.seq == 0,
            })
        }
        Request::Say { room, text } => {
            let mut rooms = state.rooms.lock().unwrap();
            let Some(r) = rooms.get_mut(&room) else {
                return encode_error(id.as_ref(), ErrorCode::NotMember, "not in that room");
            };
            let seq = say(state, r, conn, nick, &room, text);
            Reply::Say { room, seq }
        }
        _ => {
            return encode_error(
                id.as_ref(),
                ErrorCode::BadRequest,
                "the fake server knows only join and say",
            );
        }
    };
    ServerMessage::Ok(OkReply { id, reply }).to_json()
}

/// Numbers a message and sends it to every member of the room, doing at
/// most one fault (the picker's) on one member's copy. Runs under the rooms
/// lock, so every member's queue gets the room's messages in order.
fn say(state: &State, r: &mut Room, conn: u64, nick: &str, room: &str, text: String) -> u64 {
    r.seq += 1;
    let seq = r.seq;
    r.sayers.insert(conn);
    let frame = ServerMessage::Message(ChatMessage {
        room: room.to_owned(),
        seq,
        from: nick.to_owned(),
        text,
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
    .to_json();
    let mut picker = state.picker.lock().unwrap();
    let mut faulted = false;
    let conns: Vec<u64> = r.members.iter().map(|m| m.conn).collect();
    for target in conns {
        let fault = if faulted {
            None
        } else {
            picker(r, target, seq)
        };
        let Some(out) = r
            .members
            .iter()
            .find(|m| m.conn == target)
            .map(|m| m.out.clone())
        else {
            continue;
        };
        if let Some(fault) = fault {
            faulted = true;
            state.injected.fetch_add(1, Ordering::SeqCst);
            match fault {
                Fault::Drop => {}
                Fault::Duplicate => {
                    let _ = out.unbounded_send(frame.clone());
                    let _ = out.unbounded_send(frame.clone());
                }
                Fault::Swap => {
                    r.held = Some(Held {
                        target,
                        from: conn,
                        seq,
                        frame: frame.clone(),
                    });
                }
            }
            continue;
        }
        let _ = out.unbounded_send(frame.clone());
        // The held message follows its publisher's next one.
        let release = r
            .held
            .as_ref()
            .is_some_and(|h| h.target == target && h.from == conn && h.seq != seq);
        if release && let Some(h) = r.held.take() {
            let _ = out.unbounded_send(h.frame);
        }
    }
    seq
}
