//! The broker's side of every cluster operation: one Lua script each
//! (`lua/`), run atomically by Redis, and a typed call for each here.
//!
//! Why scripts: a room's order must be decided in one place and one step.
//! A script numbers a message, keeps it in history and publishes it
//! without anything in between, so the order of the bus is the order of
//! the seqs, whichever node each sender is on. Redis caches a script by
//! its SHA-1; the client sends `EVALSHA` and falls back to the source once.

use natter_protocol::ErrorCode;
use natter_runtime::redis::aio::MultiplexedConnection;
use natter_runtime::redis::{self, RedisError, Script, Value};

use crate::conn_id::ConnId;

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BrokerError {
    /// The broker cannot be reached (refused, reset, timed out): the node
    /// is cut off until it reconnects.
    #[error("cannot reach the broker: {0}")]
    Down(String),
    /// The node's lease expired (it was reaped): it must register again
    /// before it adds anything.
    #[error("this node's lease in the broker expired")]
    NoLease,
    /// Another process started with this node's `--node-id` took its
    /// lease: this one must stop.
    #[error("another process took over this node's id")]
    TakenOver,
    /// The broker answered something this node does not understand (a
    /// different natter's keys, a script error): a bug, not an outage.
    #[error("unexpected answer from the broker: {0}")]
    Unexpected(String),
}

impl From<RedisError> for BrokerError {
    fn from(e: RedisError) -> BrokerError {
        if e.code() == Some("NOLEASE") {
            BrokerError::NoLease
        } else if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
        {
            BrokerError::Down(e.to_string())
        } else {
            BrokerError::Unexpected(e.to_string())
        }
    }
}

fn unexpected(what: &str, value: &Value) -> BrokerError {
    BrokerError::Unexpected(format!("{what}: {value:?}"))
}

/// Events kept per room for nodes that missed some (see `lua/repair.lua`):
/// enough for a subscription to be re-established under a heavy burst
/// (a fifth of a second at 5 000 says/s into one room), and bounded in
/// memory: at most this many events of at most `--max-message-bytes`
/// per room with members (a room that empties keeps 16).
pub(crate) const EVENTS_KEPT: usize = 1024;
/// Memberships a reaping script ends per call, so that reaping a node with
/// thousands of members never blocks Redis (and every other node) for
/// long.
const REAP_STEP: usize = 500;
/// Messages a `join` without `since` carries (as on one server).
const REPLY_HISTORY: usize = 20;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// Every script, compiled once per node (hashing the source).
pub(crate) struct Scripts {
    register: Script,
    renew: Script,
    reap_dead: Script,
    reap_node: Script,
    connect: Script,
    disconnect: Script,
    rename: Script,
    join: Script,
    leave: Script,
    say: Script,
    whisper: Script,
    repair: Script,
}

/// A join as the broker answered it.
pub(crate) struct JoinAnswer {
    /// The join's event (or the room's latest, for a re-join): the reply
    /// goes out once this node has delivered it.
    pub(crate) ev: u64,
    /// The room's last seq.
    pub(crate) seq: u64,
    /// The room's epoch.
    pub(crate) epoch: String,
    /// Whether `history` is all the client asked for.
    pub(crate) complete: bool,
    /// Members on every node, unsorted.
    pub(crate) members: Vec<String>,
    /// The history, oldest first.
    pub(crate) history: Vec<String>,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// Renewed.
    Yes,
    /// It had lapsed (the node may have been reaped): register again.
    Expired,
    /// Another life of the same `--node-id` holds it.
    TakenOver,
}

/// The answer to `repair`.
pub(crate) enum Repair {
    /// Every event after the one asked for, in order (maybe none).
    Events(Vec<Vec<u8>>),
    /// Some are no longer kept (or the room was forgotten).
    Lost,
}

/// Settings every script call carries.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    /// `--history`.
    pub(crate) history: usize,
    /// `--max-rooms`.
    pub(crate) max_rooms: usize,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            register: script!("register.lua"),
            renew: script!("renew.lua"),
            reap_dead: script!("reap_dead.lua"),
            reap_node: script!("reap_node.lua"),
            connect: script!("connect.lua"),
            disconnect: script!("disconnect.lua"),
            rename: script!("rename.lua"),
            join: script!("join.lua"),
            leave: script!("leave.lua"),
            say: script!("say.lua"),
            whisper: script!("whisper.lua"),
            repair: script!("repair.lua"),
        }
    }

    /// Takes the lease for this life of the node (`token`).
    pub(crate) async fn register(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<(), BrokerError> {
        let mut call = self.register.arg(node);
        call.arg(token).arg(lease_ms);
        let _: i64 = call.invoke_async(c).await?;
        Ok(())
    }

    /// Extends this life's lease.
    pub(crate) async fn renew(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<Renewed, BrokerError> {
        let mut call = self.renew.arg(node);
        call.arg(token).arg(lease_ms);
        let renewed: i64 = call.invoke_async(c).await?;
        Ok(match renewed {
            1 => Renewed::Yes,
            2 => Renewed::TakenOver,
            _ => Renewed::Expired,
        })
    }

    /// The nodes whose lease expired.
    pub(crate) async fn dead_nodes(
        &self,
        c: &mut MultiplexedConnection,
    ) -> Result<Vec<String>, BrokerError> {
        Ok(self.reap_dead.invoke_async(c).await?)
    }

    /// Ends every membership `node` holds and forgets it, a step at a time
    /// (each membership ends once: its `leave` goes with it). With
    /// `only_if_dead`, stops if the node holds a lease again. Returns the
    /// memberships ended.
    pub(crate) async fn reap_node(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        b: &Bounds,
        only_if_dead: bool,
    ) -> Result<u64, BrokerError> {
        let mut ended = 0;
        loop {
            let mut call = self.reap_node.arg(node);
            call.arg(b.max_rooms)
                .arg(EVENTS_KEPT)
                .arg(REAP_STEP)
                .arg(if only_if_dead { "1" } else { "0" });
            let (step, done): (u64, i64) = call.invoke_async(c).await?;
            ended += step;
            if done == 1 {
                return Ok(ended);
            }
        }
    }

    /// Gives a connection its nick (`wanted`, valid, or a guest's) and
    /// says whether the wanted one was taken.
    pub(crate) async fn connect(
        &self,
        c: &mut MultiplexedConnection,
        (node, token): (&str, &str),
        conn: ConnId,
        wanted: Option<&str>,
    ) -> Result<(String, bool), BrokerError> {
        let mut call = self.connect.arg(node);
        call.arg(token).arg(conn).arg(wanted.unwrap_or(""));
        let (nick, refusal): (String, String) = call.invoke_async(c).await?;
        Ok((nick, refusal == ErrorCode::NickTaken.as_str()))
    }

    /// A connection is gone: it leaves `rooms`, its nick is freed.
    pub(crate) async fn disconnect(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        conn: ConnId,
        rooms: &[String],
        b: &Bounds,
    ) -> Result<(), BrokerError> {
        let mut call = self.disconnect.arg(node);
        call.arg(conn).arg(b.max_rooms).arg(EVENTS_KEPT).arg(rooms);
        let _: i64 = call.invoke_async(c).await?;
        Ok(())
    }

    /// Renames a connection; the `(room, event, epoch)` of each `rename`
    /// sent.
    pub(crate) async fn rename(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        conn: ConnId,
        nick: &str,
        rooms: &[String],
    ) -> Result<Result<Vec<(String, u64, String)>, ErrorCode>, BrokerError> {
        let mut call = self.rename.arg(node);
        call.arg(conn).arg(nick).arg(EVENTS_KEPT).arg(rooms);
        let answer: Vec<Value> = call.invoke_async(c).await?;
        let status: Option<String> = answer.first().and_then(text);
        match status.as_deref() {
            Some("ok") => answer[1..]
                .chunks(3)
                .map(|triple| match triple {
                    [room, ev, epoch] => Ok((
                        text(room).unwrap_or_default(),
                        number(ev)?,
                        text(epoch).unwrap_or_default(),
                    )),
                    _ => Err(unexpected("rename", &Value::Array(answer.clone()))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Ok),
            Some("taken") => Ok(Err(ErrorCode::NickTaken)),
            Some("gone") => Err(BrokerError::NoLease),
            _ => Err(unexpected("rename", &Value::Array(answer))),
        }
    }

    /// Joins a room (see `lua/join.lua`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn join(
        &self,
        c: &mut MultiplexedConnection,
        (node, token): (&str, &str),
        conn: ConnId,
        room: &str,
        epoch_prefix: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<JoinAnswer, BrokerError> {
        let mut call = self.join.arg(node);
        call.arg(token)
            .arg(conn)
            .arg(room)
            .arg(epoch_prefix)
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            // "=" and the epoch given (which may be empty), or nothing.
            .arg(epoch.map(|e| format!("={e}")).unwrap_or_default())
            .arg(REPLY_HISTORY)
            .arg(EVENTS_KEPT);
        let answer: Vec<Value> = call.invoke_async(c).await?;
        let bad = || unexpected("join", &Value::Array(answer.clone()));
        match answer.first().and_then(text).as_deref() {
            Some("ok") => {}
            Some("gone") => return Err(BrokerError::NoLease),
            _ => return Err(bad()),
        }
        let [_, ev, seq, epoch, complete, count, rest @ ..] = answer.as_slice() else {
            return Err(bad());
        };
        let count = usize::try_from(number(count)?).map_err(|_| bad())?;
        if rest.len() < count {
            return Err(bad());
        }
        let (members, history) = rest.split_at(count);
        Ok(JoinAnswer {
            ev: number(ev)?,
            seq: number(seq)?,
            epoch: text(epoch).ok_or_else(bad)?,
            complete: number(complete)? == 1,
            members: members.iter().filter_map(text).collect(),
            history: history.iter().filter_map(text).collect(),
        })
    }

    /// Leaves a room: the leave's event and the room's epoch, or `None`
    /// for not a member.
    pub(crate) async fn leave(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        conn: ConnId,
        room: &str,
        b: &Bounds,
    ) -> Result<Option<(u64, String)>, BrokerError> {
        let mut call = self.leave.arg(node);
        call.arg(conn).arg(room).arg(b.max_rooms).arg(EVENTS_KEPT);
        let answer: Value = call.invoke_async(c).await?;
        match &answer {
            Value::Int(0) => Ok(None),
            Value::Array(pair) if pair.len() == 2 => Ok(Some((
                number(&pair[0])?,
                text(&pair[1]).ok_or_else(|| unexpected("leave", &answer))?,
            ))),
            _ => Err(unexpected("leave", &answer)),
        }
    }

    /// Says a message whose event is `head` + seq + `tail`: `(seq, event,
    /// epoch)`, or `None` for not a member.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn say(
        &self,
        c: &mut MultiplexedConnection,
        node: &str,
        conn: ConnId,
        room: &str,
        head: &str,
        tail: &str,
        b: &Bounds,
    ) -> Result<Option<(u64, u64, String)>, BrokerError> {
        let mut call = self.say.arg(node);
        call.arg(conn)
            .arg(room)
            .arg(head)
            .arg(tail)
            .arg(b.history)
            .arg(EVENTS_KEPT);
        let answer: Value = call.invoke_async(c).await?;
        match &answer {
            Value::Int(0) => Ok(None),
            Value::Array(said) if said.len() == 3 => Ok(Some((
                number(&said[0])?,
                number(&said[1])?,
                text(&said[2]).ok_or_else(|| unexpected("say", &answer))?,
            ))),
            _ => Err(unexpected("say", &answer)),
        }
    }

    /// Sends a whisper to whoever holds `nick_key`: their nick as spelled,
    /// or `None` for nobody.
    pub(crate) async fn whisper(
        &self,
        c: &mut MultiplexedConnection,
        nick_key: &str,
        frame: &str,
    ) -> Result<Option<String>, BrokerError> {
        let answer: Value = self
            .whisper
            .arg(nick_key)
            .arg(frame)
            .invoke_async(c)
            .await?;
        match &answer {
            Value::Int(0) => Ok(None),
            other => text(other)
                .map(Some)
                .ok_or_else(|| unexpected("whisper", other)),
        }
    }

    /// A room's events after `after` of incarnation `epoch` (empty: not
    /// known).
    pub(crate) async fn repair(
        &self,
        c: &mut MultiplexedConnection,
        room: &str,
        epoch: &str,
        after: u64,
    ) -> Result<Repair, BrokerError> {
        let mut call = self.repair.arg(room);
        call.arg(epoch).arg(after);
        let answer: Vec<Value> = call.invoke_async(c).await?;
        match answer.first().and_then(text).as_deref() {
            Some("ok") => Ok(Repair::Events(
                answer[2..]
                    .iter()
                    .filter_map(|v| match v {
                        Value::BulkString(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect(),
            )),
            Some("lost") => Ok(Repair::Lost),
            _ => Err(unexpected("repair", &Value::Array(answer))),
        }
    }
}

/// Rooms with members on any node, and how many (unsorted).
pub(crate) async fn rooms(
    c: &mut MultiplexedConnection,
) -> Result<Vec<(String, u64)>, BrokerError> {
    Ok(redis::cmd("HGETALL")
        .arg("natter:active")
        .query_async(c)
        .await?)
}

/// A room's members on every node (unsorted).
pub(crate) async fn who(
    c: &mut MultiplexedConnection,
    room: &str,
) -> Result<Vec<String>, BrokerError> {
    Ok(redis::cmd("HVALS")
        .arg(format!("natter:mem:{room}"))
        .query_async(c)
        .await?)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(v: &Value) -> Result<u64, BrokerError> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(|_| unexpected("a count", v)),
        _ => Err(unexpected("a number", v)),
    }
}
