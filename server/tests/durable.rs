//! Durable history (PROTOCOL.md, guarantee 3, "Durable history") against
//! the real `natter-server` binary with `--data-dir DIR`: every room's seq,
//! epoch and retained history, and the set of retained rooms, live in the
//! store `DIR/natter.redb` and survive a restart.
//!
//! - a graceful restart (SIGTERM) keeps seq, epoch and history; `join`
//!   with and without `since` after it, and the next `say`;
//! - a crash (SIGKILL) in the middle of pipelined bursts from several
//!   connections loses no message that got an `ok` or was delivered as a
//!   `message` event, and leaves no gap; the same burst ended by SIGTERM;
//! - evictions (`--max-rooms`) are remembered across a restart;
//! - a store that cannot be used (locked by a running server, damaged, a
//!   regular file where the directory should be) stops the server before
//!   it listens, with one `natter-server: error:` line on stderr, and the
//!   store is left as it was;
//! - `NATTER_DATA_DIR` works like the option and the directory is created;
//!   without a data directory nothing is written.
//!
//! Each test has a data directory of its own under the system's temporary
//! directory, removed when the test ends.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use futures::channel::mpsc as mpsc_async;
use natter_runtime::{spawn, spawn_blocking, timeout};
use serde_json::{Value, json};

use common::chat::{
    Said, connect, epoch_of, history, join, join_since, leave, message, read_messages_to, say,
};
use common::{BOUND, MAX_FRAMES, ServerProcess, TempDir, Ws, run_to_exit, signal};

/// The room most tests use.
const ROOM: &str = "lobby";

/// The store's file inside the data directory.
const STORE_FILE: &str = "natter.redb";

/// Messages a `join` without `since` carries (guarantee 3).
const JOIN_HISTORY: usize = 20;

// ---------------------------------------------------------------------------
// Restart after SIGTERM
// ---------------------------------------------------------------------------

/// Durable history across a graceful restart (guarantees 3 and 5): two
/// members say 30 messages and are still connected when SIGTERM comes;
/// after a restart on the same `--data-dir` the room continues under the
/// same epoch: `join` gives seq 30 and the last 20 messages with their
/// original seq, from, text and ts (`complete: false`), `since: 0` with the
/// old epoch gives all 30 and `since: 25` the last 5 (`complete: true`:
/// nothing was dropped), a foreign epoch gives the last 20 with
/// `complete: false`, and the next `say` gets seq 31.
#[test]
fn a_restart_after_sigterm_keeps_seq_epoch_and_history() {
    const SAID: u64 = 30;
    let dir = TempDir::new("sigterm-restart");
    natter_runtime::block_on(async {
        let server = start(dir.path(), &[]);
        let mut alice = connect(&server, "alice").await;
        let mut bob = connect(&server, "bob").await;
        let joined = alice.ok(join(ROOM)).await;
        assert_eq!(joined["seq"], 0, "{joined}");
        assert_eq!(joined["complete"], true, "{joined}");
        let epoch = epoch_of(&joined);
        bob.ok(join(ROOM)).await;

        // Alice and Bob take turns; Alice keeps every message she hears.
        let mut heard = Vec::new();
        for i in 1..=SAID {
            let text = format!("message #{i}");
            let seq = if i % 2 == 1 {
                let (seq, events) = say(&mut alice, ROOM, &text).await;
                heard.extend(events);
                seq
            } else {
                say(&mut bob, ROOM, &text).await.0
            };
            assert_eq!(seq, i, "the ok of {text:?}");
        }
        read_messages_to(&mut alice, ROOM, SAID, &mut heard).await;
        let said: Vec<_> = heard
            .iter()
            .map(|m| (m.seq, m.from.as_str(), m.text.clone()))
            .collect();
        let expected: Vec<_> = (1..=SAID)
            .map(|i| {
                (
                    i,
                    if i % 2 == 1 { "alice" } else { "bob" },
                    format!("message #{i}"),
                )
            })
            .collect();
        assert_eq!(said, expected, "what Alice heard before the restart");

        // SIGTERM with both members connected: each gets `shutdown`, then
        // close 1001, and the process exits 0.
        let stopping = spawn_blocking(move || server.stop());
        for (nick, mut c) in [("alice", alice), ("bob", bob)] {
            let (close, frames) = c.read_until_close().await;
            assert_eq!(
                close.map(|(code, _)| code),
                Some(1001),
                "{nick}: {frames:?}"
            );
            assert_eq!(
                frames.last().map(|f| &f["type"]),
                Some(&json!("shutdown")),
                "{nick}: {frames:?}"
            );
        }
        let status = stopping.await;
        assert!(status.success(), "natter-server exited with {status}");

        // The same room, after the restart.
        let server = start(dir.path(), &[]);
        let mut fresh = connect(&server, "fresh").await;
        let reply = fresh.ok(join(ROOM)).await;
        assert_eq!(
            reply["seq"], SAID,
            "the room's seq after the restart: {reply}"
        );
        assert_eq!(epoch_of(&reply), epoch, "the epoch changed: {reply}");
        assert_eq!(history(&reply, ROOM), heard[heard.len() - JOIN_HISTORY..]);
        assert_eq!(reply["complete"], false, "30 messages, 20 given: {reply}");

        let mut since0 = connect(&server, "since0").await;
        let reply = since0.ok(join_since(ROOM, 0, &epoch)).await;
        assert_eq!(reply["seq"], SAID, "{reply}");
        assert_eq!(epoch_of(&reply), epoch, "{reply}");
        assert_eq!(history(&reply, ROOM), heard, "since 0 after the restart");
        assert_eq!(reply["complete"], true, "nothing was dropped: {reply}");

        let mut since25 = connect(&server, "since25").await;
        let reply = since25.ok(join_since(ROOM, 25, &epoch)).await;
        assert_eq!(
            history(&reply, ROOM),
            heard[25..],
            "since 25 after the restart"
        );
        assert_eq!(reply["complete"], true, "nothing was dropped: {reply}");

        let mut foreign = connect(&server, "foreign").await;
        let reply = foreign
            .ok(join_since(ROOM, 0, &format!("{epoch}-not-it")))
            .await;
        assert_eq!(epoch_of(&reply), epoch, "{reply}");
        assert_eq!(history(&reply, ROOM), heard[heard.len() - JOIN_HISTORY..]);
        assert_eq!(reply["complete"], false, "a foreign epoch: {reply}");

        // The numbering continues, for the sender and for the room.
        let (seq, _) = say(&mut fresh, ROOM, "after the restart").await;
        assert_eq!(seq, SAID + 1, "the first say after the restart");
        let mut after = Vec::new();
        read_messages_to(&mut since0, ROOM, SAID + 1, &mut after).await;
        let last = after
            .last()
            .expect("read_messages_to returns with a message");
        assert_eq!(
            (last.seq, last.from.as_str(), last.text.as_str()),
            (SAID + 1, "fresh", "after the restart")
        );
        assert_eq!(
            after.len(),
            1,
            "no other message after the restart: {after:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Bursts ended by SIGKILL or SIGTERM
// ---------------------------------------------------------------------------

/// Durable history through a crash (guarantee 3: a `say` gets its `ok`, and
/// its `message` event reaches the room, only once it is on stable
/// storage): four connections each pipeline 200 says into one room; once
/// 100 oks have arrived the server gets SIGKILL. After a restart on the
/// same directory, `join` with `since: 0` and the old epoch has every
/// message that got an `ok` or was delivered, with its text and sender,
/// the seqs 1..=last with no gap (messages not acknowledged may be there or
/// not), each connection's messages a prefix of what it sent, in order,
/// and the next `say` gets last + 1.
#[test]
fn sigkill_during_a_pipelined_burst_loses_no_acknowledged_message() {
    let dir = TempDir::new("burst-kill");
    natter_runtime::block_on(burst_then_restart(dir.path(), Stop::Kill));
}

/// The same burst as the SIGKILL test, ended by SIGTERM (guarantee 5 with
/// `--data-dir`): everything acknowledged before the `shutdown` event is
/// in the store after the restart, no reply or message follows the
/// `shutdown` event, and the process exits 0.
#[test]
fn sigterm_during_a_pipelined_burst_loses_no_acknowledged_message() {
    let dir = TempDir::new("burst-term");
    natter_runtime::block_on(burst_then_restart(dir.path(), Stop::Term));
}

// ---------------------------------------------------------------------------
// Eviction
// ---------------------------------------------------------------------------

/// Evictions are durable (guarantees 3 and 7): with `--max-rooms 1`, rooms
/// `a` and `b` each get a message and are emptied in that order, so `a` is
/// evicted when `b` empties. After a restart `b` still has its seq, epoch
/// and history, and `a` starts afresh: seq 0, a new epoch, no history,
/// `complete: true`.
#[test]
fn an_eviction_is_remembered_across_a_restart() {
    let dir = TempDir::new("evict");
    let args = ["--max-rooms", "1"];
    natter_runtime::block_on(async {
        let server = start(dir.path(), &args);
        let mut alice = connect(&server, "alice").await;
        let epoch_a = epoch_of(&alice.ok(join("a")).await);
        assert_eq!(say(&mut alice, "a", "in a").await.0, 1);
        let epoch_b = epoch_of(&alice.ok(join("b")).await);
        let (seq, mut heard_b) = say(&mut alice, "b", "in b").await;
        assert_eq!(seq, 1);
        read_messages_to(&mut alice, "b", 1, &mut heard_b).await;
        alice.ok(leave("a")).await;
        alice.ok(leave("b")).await;
        alice.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");

        let server = start(dir.path(), &args);
        let mut carol = connect(&server, "carol").await;
        let reply = carol.ok(join("b")).await;
        assert_eq!(reply["seq"], 1, "b was retained: {reply}");
        assert_eq!(epoch_of(&reply), epoch_b, "b was retained: {reply}");
        assert_eq!(history(&reply, "b"), heard_b, "b's history");
        assert_eq!(reply["complete"], true, "{reply}");

        let reply = carol.ok(join("a")).await;
        assert_eq!(reply["seq"], 0, "a was evicted before the restart: {reply}");
        assert_ne!(
            epoch_of(&reply),
            epoch_a,
            "a re-created needs a new epoch: {reply}"
        );
        assert_eq!(reply["history"], json!([]), "{reply}");
        assert_eq!(reply["complete"], true, "{reply}");
    });
}

/// With `--max-rooms 0` a room is forgotten as soon as it empties, and
/// stays forgotten after a restart: seq 0, a new epoch, no history.
#[test]
fn with_max_rooms_0_an_emptied_room_is_forgotten_across_a_restart() {
    let dir = TempDir::new("max-rooms-0");
    let args = ["--max-rooms", "0"];
    natter_runtime::block_on(async {
        let server = start(dir.path(), &args);
        let mut alice = connect(&server, "alice").await;
        let epoch = epoch_of(&alice.ok(join(ROOM)).await);
        assert_eq!(say(&mut alice, ROOM, "soon forgotten").await.0, 1);
        alice.ok(leave(ROOM)).await;
        alice.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");

        let server = start(dir.path(), &args);
        let mut carol = connect(&server, "carol").await;
        let reply = carol.ok(join(ROOM)).await;
        assert_eq!(
            reply["seq"], 0,
            "the room was forgotten when it emptied: {reply}"
        );
        assert_ne!(
            epoch_of(&reply),
            epoch,
            "a re-created room needs a new epoch: {reply}"
        );
        assert_eq!(reply["history"], json!([]), "{reply}");
        assert_eq!(reply["complete"], true, "{reply}");
    });
}

// ---------------------------------------------------------------------------
// A store that cannot be used
// ---------------------------------------------------------------------------

/// One store, one server: a second `natter-server` on a data directory in
/// use exits non-zero before listening, with one `natter-server: error:`
/// line that names the directory and says it is `locked`. The first
/// server keeps serving, and what it stores afterwards survives its
/// restart.
#[test]
fn a_second_server_on_the_same_data_dir_fails_and_the_first_keeps_working() {
    let dir = TempDir::new("locked");
    natter_runtime::block_on(async {
        let server = start(dir.path(), &[]);
        let mut alice = connect(&server, "alice").await;
        let epoch = epoch_of(&alice.ok(join(ROOM)).await);
        assert_eq!(say(&mut alice, ROOM, "before the second server").await.0, 1);

        let second = run_to_exit(data_dir_command(dir.path(), &[]));
        let line = second.error_line();
        assert!(line.contains("locked"), "not said to be locked: {line:?}");
        assert!(
            line.contains(path_str(dir.path())),
            "no data directory in {line:?}"
        );

        // The first server still serves, old and new clients alike.
        assert_eq!(say(&mut alice, ROOM, "after the second server").await.0, 2);
        let mut bob = connect(&server, "bob").await;
        let reply = bob.ok(join(ROOM)).await;
        assert_eq!(reply["seq"], 2, "{reply}");
        assert_eq!(history(&reply, ROOM).len(), 2, "{reply}");
        assert_eq!(say(&mut bob, ROOM, "from a new client").await.0, 3);
        alice.close().await;
        bob.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");

        // The failed start took nothing away.
        let server = start(dir.path(), &[]);
        let mut carol = connect(&server, "carol").await;
        let reply = carol.ok(join(ROOM)).await;
        assert_eq!(reply["seq"], 3, "{reply}");
        assert_eq!(epoch_of(&reply), epoch, "{reply}");
        let texts: Vec<_> = history(&reply, ROOM).into_iter().map(|m| m.text).collect();
        assert_eq!(
            texts,
            [
                "before the second server",
                "after the second server",
                "from a new client"
            ]
        );
    });
}

/// A damaged store is never taken for an empty one: with a few KiB of
/// garbage written over the middle of `natter.redb` (after a clean stop,
/// with 100 messages of 4000 bytes in it, so that the middle of the file
/// holds live data), the server exits non-zero before listening, with one
/// `natter-server: error:` line that names the directory and says
/// `damaged`, and the file is left byte for byte as it was.
#[test]
fn a_damaged_store_stops_the_server_and_is_left_as_it_was() {
    const MESSAGES: u64 = 100;
    const TEXT_BYTES: usize = 4000;
    const DAMAGE_BYTES: usize = 16 * 1024;
    let dir = TempDir::new("damaged");
    natter_runtime::block_on(async {
        let server = start(dir.path(), &[]);
        let mut alice = connect(&server, "alice").await;
        alice.ok(join(ROOM)).await;
        let mut noise = Noise::new(1);
        for i in 1..=MESSAGES {
            let text = format!("{i:03} {}", noise.letters(TEXT_BYTES - 4));
            assert_eq!(say(&mut alice, ROOM, &text).await.0, i);
        }
        alice.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");
    });

    let store = dir.path().join(STORE_FILE);
    let mut bytes = std::fs::read(&store).expect("read the store after a clean stop");
    assert!(
        bytes.len() >= 4 * DAMAGE_BYTES,
        "{} is only {} bytes with {MESSAGES} messages of {TEXT_BYTES} bytes in it",
        store.display(),
        bytes.len()
    );
    let start = bytes.len() / 2 - DAMAGE_BYTES / 2;
    let mut noise = Noise::new(2);
    for b in &mut bytes[start..start + DAMAGE_BYTES] {
        *b = noise.byte();
    }
    std::fs::write(&store, &bytes).expect("damage the store");

    let exited = run_to_exit(data_dir_command(dir.path(), &[]));
    let line = exited.error_line();
    assert!(line.contains("damaged"), "not said to be damaged: {line:?}");
    assert!(
        line.contains(path_str(dir.path())),
        "no data directory in {line:?}"
    );
    let after = std::fs::read(&store).expect("read the store again");
    assert!(
        after == bytes,
        "the damaged store was changed ({} bytes before, {} after)",
        bytes.len(),
        after.len()
    );
}

/// A data directory that is a regular file: the server exits non-zero
/// before listening, with one `natter-server: error:` line that names the
/// path, and the file is left as it was.
#[test]
fn a_data_dir_that_is_a_regular_file_stops_the_server() {
    let dir = TempDir::new("regular-file");
    let file = dir.path().join("not-a-directory");
    let contents = b"someone else's file\n";
    std::fs::write(&file, contents).expect("write the file");

    let exited = run_to_exit(data_dir_command(&file, &[]));
    let line = exited.error_line();
    assert!(line.contains(path_str(&file)), "no path in {line:?}");
    let after = std::fs::read(&file).expect("read the file again");
    assert_eq!(after, contents, "the file was changed");
}

// ---------------------------------------------------------------------------
// The option's forms, and its absence
// ---------------------------------------------------------------------------

/// `NATTER_DATA_DIR` is `--data-dir`: a directory that does not exist yet
/// is created, the store is `DIR/natter.redb`, and a server started with
/// `--data-dir DIR` afterwards continues the room (same seq, epoch and
/// history).
#[test]
fn the_data_dir_from_the_environment_is_created_and_holds_the_store() {
    let tmp = TempDir::new("env");
    let data = tmp.path().join("data");
    natter_runtime::block_on(async {
        let mut cmd = server_command(&[]);
        cmd.env("NATTER_DATA_DIR", &data);
        let server = ServerProcess::spawn(cmd);
        let mut alice = connect(&server, "alice").await;
        let epoch = epoch_of(&alice.ok(join(ROOM)).await);
        let (seq, mut heard) = say(&mut alice, ROOM, "kept").await;
        assert_eq!(seq, 1);
        read_messages_to(&mut alice, ROOM, 1, &mut heard).await;
        alice.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");
        assert!(data.is_dir(), "{} was not created", data.display());
        assert!(
            data.join(STORE_FILE).is_file(),
            "no {STORE_FILE} in {}",
            data.display()
        );

        let server = start(&data, &[]);
        let mut carol = connect(&server, "carol").await;
        let reply = carol.ok(join(ROOM)).await;
        assert_eq!(reply["seq"], 1, "{reply}");
        assert_eq!(epoch_of(&reply), epoch, "{reply}");
        assert_eq!(history(&reply, ROOM), heard, "{reply}");
        assert_eq!(reply["complete"], true, "{reply}");
    });
}

/// Without `--data-dir` history lives in memory (guarantee 3): nothing is
/// written (neither in the working directory nor under `HOME`), and a
/// restart starts the room afresh under a new epoch.
#[test]
fn without_a_data_dir_nothing_is_written_and_a_restart_forgets() {
    let tmp = TempDir::new("no-data-dir");
    let command = || {
        let mut cmd = server_command(&[]);
        cmd.current_dir(tmp.path())
            .env("HOME", tmp.path())
            .env("XDG_DATA_HOME", tmp.path());
        cmd
    };
    natter_runtime::block_on(async {
        let server = ServerProcess::spawn(command());
        let mut alice = connect(&server, "alice").await;
        let epoch = epoch_of(&alice.ok(join(ROOM)).await);
        assert_eq!(say(&mut alice, ROOM, "in memory").await.0, 1);
        alice.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");

        let server = ServerProcess::spawn(command());
        let mut carol = connect(&server, "carol").await;
        let reply = carol.ok(join(ROOM)).await;
        assert_eq!(reply["seq"], 0, "{reply}");
        assert_ne!(
            epoch_of(&reply),
            epoch,
            "seq restarted, so must the epoch: {reply}"
        );
        assert_eq!(reply["history"], json!([]), "{reply}");
        carol.close().await;
        let status = server.stop();
        assert!(status.success(), "natter-server exited with {status}");
    });
    let written: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read the working directory")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(
        written.is_empty(),
        "written without --data-dir: {written:?}"
    );
}

// ---------------------------------------------------------------------------
// The bursts
// ---------------------------------------------------------------------------

/// How a burst test stops the server.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
}

const BURST_ROOM: &str = "burst";
const BURST_CONNECTIONS: usize = 4;
/// Says each connection pipelines.
const BURST_SAYS: usize = 200;
/// Oks (over all connections) awaited before the signal.
const OKS_BEFORE_STOP: usize = 100;
/// History large enough that nothing is dropped, and a queue large enough
/// for the whole burst: these tests are about durability, not pacing.
const BURST_ARGS: [&str; 4] = ["--history", "100000", "--queue", "4096"];

fn burst_nick(conn: usize) -> String {
    format!("burst-{conn}")
}

fn burst_text(conn: usize, j: usize) -> String {
    format!("c{conn} #{j}")
}

/// What one pipelining connection saw before its socket ended.
struct Burst {
    conn: usize,
    /// (seq, text) of each say that got an `ok`, in reply order.
    acked: Vec<(u64, String)>,
    /// The room's message events.
    heard: Vec<Said>,
}

/// The body of the two burst tests: pipelined says from
/// [`BURST_CONNECTIONS`] connections, `stop` once [`OKS_BEFORE_STOP`] oks
/// have arrived, then a restart on the same directory and the checks.
async fn burst_then_restart(dir: &Path, stop: Stop) {
    let server = start(dir, &BURST_ARGS);
    let mut members = Vec::new();
    let mut epoch = None;
    for conn in 0..BURST_CONNECTIONS {
        let mut c = connect(&server, &burst_nick(conn)).await;
        let joined = c.ok(join(BURST_ROOM)).await;
        assert_eq!(joined["seq"], 0, "{joined}");
        let e = epoch_of(&joined);
        assert_eq!(epoch.get_or_insert_with(|| e.clone()), &e, "{joined}");
        members.push(c);
    }
    let epoch = epoch.expect("at least one connection");

    let (progress_tx, mut progress) = mpsc_async::unbounded();
    let tasks: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(conn, c)| spawn(pipeline(conn, c, BURST_SAYS, progress_tx.clone())))
        .collect();
    drop(progress_tx);
    let mut oks = 0;
    while oks < OKS_BEFORE_STOP {
        match timeout(BOUND, progress.next()).await {
            Some(Some(())) => oks += 1,
            Some(None) => panic!(
                "every connection ended after {oks} oks, before the signal:\n{}",
                server.stderr_text()
            ),
            None => panic!(
                "no ok within {BOUND:?} after {oks}:\n{}",
                server.stderr_text()
            ),
        }
    }

    let stopped = match stop {
        Stop::Kill => {
            signal(server.pid, "KILL");
            // Dropping reaps it.
            spawn_blocking(move || {
                drop(server);
                None
            })
        }
        Stop::Term => spawn_blocking(move || Some(server.stop())),
    };
    let mut bursts = Vec::new();
    for task in tasks {
        bursts.push(task.await);
    }
    if let Some(status) = stopped.await {
        assert!(
            status.success(),
            "natter-server exited with {status} after SIGTERM"
        );
    }

    // Every (seq → sender, text) a client was told of: by an ok or by a
    // message event. Two clients must never have been told different ones.
    let mut acknowledged: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut oks = 0;
    for burst in &bursts {
        let nick = burst_nick(burst.conn);
        oks += burst.acked.len();
        assert!(
            burst.acked.windows(2).all(|w| w[0].0 < w[1].0),
            "{nick}: oks not in seq order: {:?}",
            burst.acked
        );
        let told = burst
            .acked
            .iter()
            .map(|(seq, text)| (*seq, nick.clone(), text.clone()))
            .chain(
                burst
                    .heard
                    .iter()
                    .map(|m| (m.seq, m.from.clone(), m.text.clone())),
            );
        for (seq, from, text) in told {
            let known = acknowledged
                .entry(seq)
                .or_insert_with(|| (from.clone(), text.clone()));
            assert_eq!(*known, (from, text), "seq {seq} was told two ways");
        }
    }
    assert!(oks >= OKS_BEFORE_STOP, "only {oks} oks");
    let max_acknowledged = *acknowledged.keys().last().expect("some acknowledged seq");

    let server = start(dir, &BURST_ARGS);
    let mut check = connect(&server, "check").await;
    let reply = check.ok(join_since(BURST_ROOM, 0, &epoch)).await;
    assert_eq!(epoch_of(&reply), epoch, "the epoch changed ({stop:?})");
    let last = reply["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in the join reply: {}", reply["seq"]));
    assert!(
        last >= max_acknowledged,
        "seq {last} after the restart, but seq {max_acknowledged} was acknowledged ({stop:?})"
    );
    assert_eq!(
        reply["complete"], true,
        "since 0, nothing dropped ({stop:?})"
    );
    let history = history(&reply, BURST_ROOM);
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert!(
        seqs.iter().copied().eq(1..=last),
        "the seqs after the restart are not 1..={last} ({stop:?}): {seqs:?}"
    );
    for (seq, (from, text)) in &acknowledged {
        let m = &history[usize::try_from(*seq).expect("a seq fits usize") - 1];
        assert_eq!(
            (&m.from, &m.text),
            (from, text),
            "acknowledged seq {seq} after the restart ({stop:?})"
        );
    }
    // What the store has is what was said: each connection's says, in the
    // order sent, from the first on (requests are handled in order, and
    // the numbering has no gap).
    let mut next = [0; BURST_CONNECTIONS];
    for m in &history {
        let conn = (0..BURST_CONNECTIONS)
            .find(|&conn| m.from == burst_nick(conn))
            .unwrap_or_else(|| panic!("seq {} from a stranger: {m:?}", m.seq));
        assert_eq!(
            m.text,
            burst_text(conn, next[conn]),
            "seq {} is not {}'s next say ({stop:?})",
            m.seq,
            m.from
        );
        next[conn] += 1;
    }

    let (seq, _) = say(&mut check, BURST_ROOM, "after the restart").await;
    assert_eq!(seq, last + 1, "the first say after the restart ({stop:?})");
}

/// One connection of a burst: sends `says` says without waiting while it
/// reads whatever comes, until the socket ends; reports each ok on
/// `progress`.
async fn pipeline(
    conn: usize,
    c: Ws,
    says: usize,
    progress: mpsc_async::UnboundedSender<()>,
) -> Burst {
    let nick = burst_nick(conn);
    let (mut sink, mut stream) = c.ws.split();
    let send = async move {
        for j in 0..says {
            let say =
                json!({"type": "say", "room": BURST_ROOM, "text": burst_text(conn, j), "id": j});
            match timeout(BOUND, sink.send(Message::text(say.to_string()))).await {
                Some(Ok(())) => {}
                // The server is gone: the rest is never sent.
                Some(Err(_)) | None => break,
            }
        }
        sink
    };
    let read = async move {
        let mut burst = Burst {
            conn,
            acked: Vec::new(),
            heard: Vec::new(),
        };
        let mut shutdown = false;
        for _ in 0..MAX_FRAMES {
            let text = match timeout(BOUND, stream.next()).await {
                None => panic!("{nick}: the socket neither ended nor sent within {BOUND:?}"),
                Some(Some(Ok(Message::Text(t)))) => t,
                Some(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
                Some(Some(Ok(_))) => continue,
            };
            let v: Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("{nick}: not JSON ({e}): {text}"));
            match v["type"].as_str() {
                Some("ok") => {
                    assert!(!shutdown, "{nick}: a reply after the shutdown event: {v}");
                    let j = v["id"]
                        .as_u64()
                        .and_then(|j| usize::try_from(j).ok())
                        .unwrap_or_else(|| panic!("{nick}: an ok to no say of ours: {v}"));
                    let seq = v["seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{nick}: no seq in {v}"));
                    burst.acked.push((seq, burst_text(conn, j)));
                    let _ = progress.unbounded_send(());
                }
                Some("message") => {
                    assert!(!shutdown, "{nick}: a message after the shutdown event: {v}");
                    burst.heard.push(message(&v, BURST_ROOM));
                }
                Some("presence") => {}
                Some("shutdown") => shutdown = true,
                _ => panic!("{nick}: unexpected frame {v}"),
            }
        }
        burst
    };
    futures::future::join(send, read).await.1
}

// ---------------------------------------------------------------------------
// A commit of many messages, published at a pace members can take
// ---------------------------------------------------------------------------

/// Pipelining connections in the paced-publish test, and says each.
const PACED_CONNECTIONS: usize = 30;
const PACED_SAYS: usize = 20;

/// Guarantee 4 with `--data-dir`: while one commit's `fsync` runs, every
/// connection's next `say` queues behind it, so one commit can carry a
/// message from each of 30 pipelining members — more than `--queue 16`.
/// The publisher hands a commit's messages to the room a quarter of
/// `--queue` at a time and lets the writers catch up in between, so every
/// member, all of them reading, gets every message in order and none is
/// dropped as a slow consumer: each gets all its oks, and hears all
/// 30 × 20 messages, seq 1, 2, 3, … with no gap.
#[test]
fn a_commit_of_many_messages_drops_no_member_that_reads() {
    let dir = TempDir::new("paced-publish");
    natter_runtime::block_on(async {
        let server = start(dir.path(), &["--queue", "16", "--history", "10"]);
        let mut members = Vec::new();
        for conn in 0..PACED_CONNECTIONS {
            let mut c = connect(&server, &burst_nick(conn)).await;
            c.ok(join(BURST_ROOM)).await;
            members.push(c);
        }
        let (progress_tx, mut progress) = mpsc_async::unbounded();
        let tasks: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(conn, c)| spawn(pipeline(conn, c, PACED_SAYS, progress_tx.clone())))
            .collect();
        drop(progress_tx);
        let all = PACED_CONNECTIONS * PACED_SAYS;
        for oks in 0..all {
            match timeout(BOUND, progress.next()).await {
                Some(Some(())) => {}
                Some(None) => panic!(
                    "every connection ended after {oks} of {all} oks:\n{}",
                    server.stderr_text()
                ),
                None => panic!(
                    "no ok within {BOUND:?} after {oks}:\n{}",
                    server.stderr_text()
                ),
            }
        }
        // Everything is acknowledged: a graceful stop ends every socket.
        let stopped = spawn_blocking(move || server.stop());
        for task in tasks {
            let burst = task.await;
            let nick = burst_nick(burst.conn);
            assert_eq!(burst.acked.len(), PACED_SAYS, "{nick} lost oks");
            let seqs: Vec<u64> = burst.heard.iter().map(|m| m.seq).collect();
            assert!(
                seqs.iter().copied().eq(1..=all as u64),
                "{nick} heard {} messages, not 1..={all} in order",
                seqs.len()
            );
        }
        assert!(
            stopped.await.success(),
            "natter-server did not exit cleanly"
        );
    });
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `natter-server` on 127.0.0.1, port 0, without rate limiting, with
/// `args`. The environment variables of the options these tests rely on
/// are removed, so that only the command line counts.
fn server_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-server"));
    for var in ["NATTER_DATA_DIR", "NATTER_HISTORY", "NATTER_MAX_ROOMS"] {
        cmd.env_remove(var);
    }
    cmd.args(["--listen", "127.0.0.1:0", "--rate", "0"])
        .args(args);
    cmd
}

/// [`server_command`] with `--data-dir dir`.
fn data_dir_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = server_command(args);
    cmd.arg("--data-dir").arg(dir);
    cmd
}

/// Starts a server on `dir` and waits for its listening line.
fn start(dir: &Path, args: &[&str]) -> ServerProcess {
    ServerProcess::spawn(data_dir_command(dir, args))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A deterministic pseudo-random sequence (xorshift64), for texts and
/// garbage that no store would compress away.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[3]
    }

    /// `n` ASCII letters.
    fn letters(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'a' + (self.next() % 26) as u8))
            .collect()
    }
}
