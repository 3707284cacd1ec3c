//! Many nodes, one chat (PROTOCOL.md guarantee 8), against the real
//! `natter-server` binary: two or three nodes started with the same
//! `--broker redis://…` serve one chat, whichever node a client is on.
//!
//! - one order per room: pipelined says from senders on three nodes, with
//!   a member joining and leaving meanwhile, reach every member on every
//!   node as the same gap-free sequence, presence in the same place;
//! - `join` history, `since` and `epoch` are the same on every node;
//! - nicks are unique across nodes, ignoring case, and freed by a rename
//!   or a disconnect on another node; guest nicks too are unique;
//! - whispers reach a nick on another node, `no_such_user` otherwise;
//! - `who`, `rooms` and a join's `members` count members on every node;
//!   a leaver gets its own `leave`, the other nodes' members too;
//! - the broker from `NATTER_BROKER`; a broker that cannot be reached
//!   stops the node before it listens.
//!
//! What happens when a node or the broker fails is in
//! `cluster_failures.rs`. Each test starts its own Redis
//! (`common/redis.rs`; needs Debian's `redis-server`) and its own nodes,
//! so the tests run in parallel.

mod common;

use std::collections::HashSet;

use natter_runtime::{block_on, spawn};
use serde_json::{Value, json};

use common::chat::{
    Said, connect, epoch_of, history, is_presence, join, join_since, leave, read_messages_to,
    read_until, say, say_request,
};
use common::cluster::{
    Ending, Progresses, SENTINEL, bare_node_command, member, node_command, say_text, start_node,
    start_nodes,
};
use common::redis::{Redis, free_port};
use common::wait::{SETTLE, wait_until};
use common::{BOUND, ServerProcess, Ws, run_to_exit};

/// The room most tests use.
const ROOM: &str = "lobby";

/// Messages a `join` without `since` carries (guarantee 3).
const JOIN_HISTORY: usize = 20;

// ---------------------------------------------------------------------------
// One order per room
// ---------------------------------------------------------------------------

const ORDER_NODES: usize = 3;
/// Pipelining senders on each node, and the says each sends.
const SENDERS_PER_NODE: usize = 2;
const SAYS: usize = 100;
/// Join-and-leave rounds of the member that comes and goes during the burst.
const CHURNS: usize = 10;
/// A queue that holds the whole burst, and a history longer than it: this
/// test is about order across nodes, not about pacing or history.
const ORDER_ARGS: [&str; 4] = ["--queue", "4096", "--history", "1000"];

/// Guarantee 1 across nodes (with guarantee 2): two senders on each of
/// three nodes pipeline 100 says each into one room, while a listener on
/// each node and a control member read, and another member joins and
/// leaves the room ten times. From the control's `start` (seq 1) to its
/// closing message, every member on every node receives the very same
/// sequence of events: messages seq 1..=602 with no gap and no duplicate
/// (sender, text and ts identical), the 20 presence events at the same
/// places. Each sender's says are numbered in the order sent, every `ok`
/// carries the seq of its message, and the sender had its own `message`
/// before the `ok`.
#[test]
fn senders_on_three_nodes_give_every_member_one_identical_gap_free_order() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, ORDER_NODES, &ORDER_ARGS);
    block_on(async {
        let mut members = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for s in 0..SENDERS_PER_NODE {
                let nick = format!("sender-{n}-{s}");
                members.push((nick.clone(), connect(node, &nick).await, SAYS));
            }
            let nick = format!("listener-{n}");
            members.push((nick.clone(), connect(node, &nick).await, 0));
        }
        let mut epoch = None;
        for (nick, c, _) in &mut members {
            let reply = c.ok(join(ROOM)).await;
            let e = epoch_of(&reply);
            assert_eq!(
                epoch.get_or_insert_with(|| e.clone()),
                &e,
                "{nick}: {reply}"
            );
        }
        let mut control = connect(&nodes[ORDER_NODES - 1], "control").await;
        control.ok(join(ROOM)).await;
        let (reply, mut control_events) = control.request(say_request(ROOM, "start", "s")).await;
        assert_eq!(reply["seq"], 1, "the room's first message: {reply}");

        let (tx, mut progresses) = Progresses::channel();
        let count = members.len();
        let tasks: Vec<_> = members
            .into_iter()
            .map(|(nick, c, says)| spawn(member(nick, c, ROOM, says, tx.clone())))
            .collect();
        drop(tx);
        let mut churner = connect(&nodes[1], "churner").await;
        let churn = spawn(async move {
            for _ in 0..CHURNS {
                churner.ok(join(ROOM)).await;
                churner.ok(leave(ROOM)).await;
            }
            churner
        });
        progresses.until_finished(count, BOUND).await;
        let _churner = churn.await;

        let said = (ORDER_NODES * SENDERS_PER_NODE * SAYS) as u64;
        let (reply, events) = control.request(say_request(ROOM, SENTINEL, "end")).await;
        control_events.extend(events);
        if !control_events.iter().any(|e| e["text"] == SENTINEL) {
            control_events
                .extend(read_until(&mut control, "the sentinel", |e| e["text"] == SENTINEL).await);
        }
        assert_eq!(
            reply["seq"],
            said + 2,
            "start, the says, the sentinel: {reply}"
        );
        let reference = window(&control_events);
        let reference_seqs: Vec<u64> = reference
            .iter()
            .filter(|e| e["type"] == "message")
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        assert!(
            reference_seqs.iter().copied().eq(1..=said + 2),
            "control: the messages are not seq 1..={} in order: {reference_seqs:?}",
            said + 2
        );
        let presence: Vec<(&str, &str)> = reference
            .iter()
            .filter(|e| e["type"] == "presence")
            .map(|e| {
                (
                    e["event"].as_str().unwrap_or_default(),
                    e["nick"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        let churned: Vec<(&str, &str)> = (0..CHURNS)
            .flat_map(|_| [("join", "churner"), ("leave", "churner")])
            .collect();
        assert_eq!(presence, churned, "control: the presence during the burst");

        for task in tasks {
            let t = task.await;
            let nick = &t.nick;
            assert_eq!(
                t.ending,
                Ending::Sentinel,
                "{nick}: how its recording ended"
            );
            assert!(t.unexpected.is_empty(), "{nick}: {:?}", t.unexpected);
            assert_same_events(nick, &window(&t.events), &reference);
            assert!(
                t.ok_before_message.is_empty(),
                "{nick}: oks before the sender's own message: {:?}",
                t.ok_before_message
            );
            if nick.starts_with("sender-") {
                let js: Vec<usize> = t.acked.iter().map(|&(_, j)| j).collect();
                assert!(
                    js.iter().copied().eq(0..SAYS),
                    "{nick}: oks not in the order sent: {js:?}"
                );
                let mine: Vec<(u64, String)> = t
                    .messages()
                    .into_iter()
                    .filter(|(_, from, _)| from == nick)
                    .map(|(seq, _, text)| (seq, text))
                    .collect();
                let acked: Vec<(u64, String)> = t
                    .acked
                    .iter()
                    .map(|&(seq, j)| (seq, say_text(nick, j)))
                    .collect();
                assert_eq!(
                    mine, acked,
                    "{nick}: its messages in the room vs the oks it got"
                );
            }
        }
        control.close().await;
    });
}

/// The events from the room's message seq 1 to the sentinel, inclusive:
/// what every member saw alike (before seq 1 each saw the joins that came
/// after its own).
fn window(events: &[Value]) -> Vec<Value> {
    let start = events
        .iter()
        .position(|e| e["type"] == "message" && e["seq"] == 1)
        .unwrap_or_else(|| panic!("no message seq 1 among {} events", events.len()));
    let end = events
        .iter()
        .position(|e| e["type"] == "message" && e["text"] == SENTINEL)
        .unwrap_or_else(|| panic!("no sentinel among {} events", events.len()));
    events[start..=end].to_vec()
}

/// `events` equal `reference`; else the first place they differ.
fn assert_same_events(nick: &str, events: &[Value], reference: &[Value]) {
    if events == reference {
        return;
    }
    let at = events
        .iter()
        .zip(reference)
        .position(|(a, b)| a != b)
        .unwrap_or(events.len().min(reference.len()));
    panic!(
        "{nick} saw another order than the control ({} events vs {}); first difference at \
         {at}: {:?} vs {:?}",
        events.len(),
        reference.len(),
        events.get(at),
        reference.get(at)
    );
}

// ---------------------------------------------------------------------------
// History and recovery
// ---------------------------------------------------------------------------

/// Guarantee 3 across nodes: Alice says 30 messages on node A. On node B,
/// `join` gives seq 30, Alice's epoch and exactly the last 20 messages she
/// heard (seq, sender, text, ts), `complete: false`; `since: 25` with the
/// epoch the last 5 and `since: 0` all 30 (`complete: true`), as does
/// `since: 0` without an epoch; a foreign epoch, and a `since` beyond the
/// last seq, the last 20 with `complete: false`. A `join` on node A
/// answers as node B did. A room of 3 messages said on B is `complete`
/// on A. The numbering continues across nodes (Bob's say on B is 31, and
/// Alice hears it on A), and the room keeps its seq and epoch once every
/// member has gone.
#[test]
fn history_since_and_epoch_are_the_same_whichever_node_answers() {
    const SAID: u64 = 30;
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let (a, b) = (&nodes[0], &nodes[1]);
    block_on(async {
        let mut alice = connect(a, "alice").await;
        let joined = alice.ok(join(ROOM)).await;
        assert_eq!(joined["seq"], 0, "{joined}");
        assert_eq!(joined["complete"], true, "{joined}");
        let epoch = epoch_of(&joined);
        let mut heard = Vec::new();
        for i in 1..=SAID {
            let (seq, events) = say(&mut alice, ROOM, &format!("message #{i}")).await;
            assert_eq!(seq, i, "the ok of message #{i}");
            heard.extend(events);
        }
        read_messages_to(&mut alice, ROOM, SAID, &mut heard).await;
        let texts: Vec<(u64, String)> = heard.iter().map(|m| (m.seq, m.text.clone())).collect();
        let expected: Vec<(u64, String)> =
            (1..=SAID).map(|i| (i, format!("message #{i}"))).collect();
        assert_eq!(texts, expected, "what Alice heard on node A");
        let last_20 = &heard[heard.len() - JOIN_HISTORY..];

        let mut bob = connect(b, "bob").await;
        let on_b = bob.ok(join(ROOM)).await;
        assert_eq!(on_b["seq"], SAID, "{on_b}");
        assert_eq!(epoch_of(&on_b), epoch, "node B's epoch: {on_b}");
        assert_eq!(history(&on_b, ROOM), last_20, "node B's join history");
        assert_eq!(on_b["complete"], false, "30 messages, 20 given: {on_b}");

        let mut carol = connect(b, "carol").await;
        let cases: [(Value, &[Said], bool); 5] = [
            (join_since(ROOM, 25, &epoch), &heard[25..], true),
            (join_since(ROOM, 0, &epoch), &heard, true),
            (
                json!({"type": "join", "room": ROOM, "since": 0, "id": "no-epoch"}),
                &heard,
                true,
            ),
            (
                join_since(ROOM, 0, &format!("{epoch}-not-it")),
                last_20,
                false,
            ),
            (join_since(ROOM, SAID + 5, &epoch), last_20, false),
        ];
        for (request, want, complete) in cases {
            let reply = carol.ok(request.clone()).await;
            assert_eq!(reply["seq"], SAID, "{request} on B: {reply}");
            assert_eq!(epoch_of(&reply), epoch, "{request} on B: {reply}");
            assert_eq!(history(&reply, ROOM), want, "{request} on B");
            assert_eq!(reply["complete"], complete, "{request} on B: {reply}");
        }

        let mut dave = connect(a, "dave").await;
        let on_a = dave.ok(join(ROOM)).await;
        for field in ["seq", "epoch", "history", "complete"] {
            assert_eq!(on_a[field], on_b[field], "{field}: A's join vs B's");
        }

        // A short room, said on B, read on A.
        for i in 1..=3 {
            bob.ok(join("small")).await;
            assert_eq!(say(&mut bob, "small", &format!("small #{i}")).await.0, i);
        }
        let small = dave.ok(join("small")).await;
        assert_eq!(small["seq"], 3, "{small}");
        assert_eq!(small["complete"], true, "all of it from seq 1: {small}");
        let texts: Vec<String> = history(&small, "small")
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["small #1", "small #2", "small #3"], "{small}");

        // The numbering goes on across nodes.
        let (seq, _) = say(&mut bob, ROOM, "from node B").await;
        assert_eq!(seq, SAID + 1, "Bob's say on node B");
        let mut after = Vec::new();
        read_messages_to(&mut alice, ROOM, SAID + 1, &mut after).await;
        let last = after.last().expect("a message");
        assert_eq!(
            (last.seq, last.from.as_str(), last.text.as_str()),
            (SAID + 1, "bob", "from node B"),
            "on node A"
        );
        assert_eq!(after.len(), 1, "nothing else: {after:?}");

        // Everyone gone: the room keeps its seq and epoch.
        for c in [alice, bob, carol, dave] {
            c.close().await;
        }
        for node in [b, a] {
            let mut eve = connect(node, "eve").await;
            let reply = eve.ok(join(ROOM)).await;
            assert_eq!(reply["seq"], SAID + 1, "{reply}");
            assert_eq!(epoch_of(&reply), epoch, "{reply}");
            eve.close().await;
        }
    });
}

// ---------------------------------------------------------------------------
// Nicks
// ---------------------------------------------------------------------------

/// Nicks are unique across nodes, compared case-insensitively: `Alice` on
/// node A makes `?nick=alice` on node B a guest with `nick_error:
/// "nick_taken"`, and a `nick` request for `ALICE` on B `nick_taken`.
/// Alice's rename to `Alicia` on A frees `alice` for B; then `ALICE` is
/// taken on A by B's connection, and `alicia` on B by A's. Alicia's
/// disconnect frees `alicia`. Guests on both nodes get distinct nicks.
/// Freeing is awaited with bounded retries ([`SETTLE`]): the contract
/// does not say how soon another node sees a nick freed.
#[test]
fn nicks_are_unique_across_nodes_ignoring_case_and_freed_on_any_node() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let (a, b) = (&nodes[0], &nodes[1]);
    block_on(async {
        let mut guests = Vec::new();
        let mut alice = connect(a, "Alice").await;

        let (mut on_b, welcome) = upgrade(b, Some("alice")).await;
        assert_eq!(welcome["nick_error"], "nick_taken", "{welcome}");
        guests.push(guest_nick(&welcome));
        let (reply, _) = on_b
            .request(json!({"type": "nick", "nick": "ALICE", "id": "n"}))
            .await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "nick_taken", "ALICE on B: {reply}");

        let reply = alice
            .ok(json!({"type": "nick", "nick": "Alicia", "id": "n"}))
            .await;
        assert_eq!(reply["nick"], "Alicia", "{reply}");
        take_nick(&mut on_b, "alice", "after Alice's rename on A").await;

        let (_a2, welcome) = upgrade(a, Some("ALICE")).await;
        assert_eq!(welcome["nick_error"], "nick_taken", "{welcome}");
        guests.push(guest_nick(&welcome));

        let (mut b2, welcome) = upgrade(b, None).await;
        guests.push(guest_nick(&welcome));
        let (reply, _) = b2
            .request(json!({"type": "nick", "nick": "alicia", "id": "n"}))
            .await;
        assert_eq!(reply["code"], "nick_taken", "alicia on B: {reply}");

        alice.close().await;
        take_nick(&mut b2, "alicia", "after Alicia's disconnect from A").await;

        let mut keep = Vec::new();
        for node in [a, b, a, b, a, b] {
            let (c, welcome) = upgrade(node, None).await;
            guests.push(guest_nick(&welcome));
            keep.push(c);
        }
        let distinct: HashSet<String> = guests.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(
            distinct.len(),
            guests.len(),
            "guest nicks not unique: {guests:?}"
        );
    });
}

/// A connection to `node` (with `?nick=` if given) and its welcome.
async fn upgrade(node: &ServerProcess, nick: Option<&str>) -> (Ws, Value) {
    let url = match nick {
        Some(nick) => format!("{}?nick={nick}", node.url),
        None => node.url.clone(),
    };
    Ws::connect(&url, None, BOUND)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}\n{}", node.stderr_text()))
}

/// The guest nick of a welcome (checked to be one).
fn guest_nick(welcome: &Value) -> String {
    let nick = welcome["nick"].as_str().unwrap_or_default();
    assert!(nick.starts_with("guest-"), "not a guest: {welcome}");
    nick.to_owned()
}

/// `nick` requests for `nick` on `c` until one succeeds (bounded by
/// [`SETTLE`]; only `nick_taken` may come before).
async fn take_nick(c: &mut Ws, nick: &str, when: &str) {
    wait_until(&format!("{nick} to be free {when}"), SETTLE, async || {
        let (reply, _) = c
            .request(json!({"type": "nick", "nick": nick, "id": "n"}))
            .await;
        match reply["type"].as_str() {
            Some("ok") => Ok(()),
            _ if reply["code"] == "nick_taken" => Err(reply),
            _ => panic!("nick {nick} {when}: {reply}"),
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Whispers
// ---------------------------------------------------------------------------

/// Whispers cross nodes: Alice on A whispers to Bob on B and he gets it
/// (`from`, `text`, `ts`), and back; a whisper to a nick on no node is
/// `no_such_user`, and so is one to Bob once he has disconnected (awaited
/// with bounded retries, [`SETTLE`]). The nodes run with a fractional
/// `--node-timeout 1.5`, which they must accept.
#[test]
fn whispers_reach_a_nick_on_another_node() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &["--node-timeout", "1.5"]);
    block_on(async {
        let mut alice = connect(&nodes[0], "alice").await;
        let mut bob = connect(&nodes[1], "bob").await;
        whisper(&mut alice, "alice", &mut bob, "bob").await;
        whisper(&mut bob, "bob", &mut alice, "alice").await;
        let (reply, _) = alice
            .request(json!({"type": "whisper", "to": "nobody", "text": "hi", "id": "w"}))
            .await;
        assert_eq!(reply["code"], "no_such_user", "{reply}");

        bob.close().await;
        wait_until("a whisper to Bob, gone, to fail", SETTLE, async || {
            let (reply, _) = alice
                .request(json!({"type": "whisper", "to": "bob", "text": "still?", "id": "w"}))
                .await;
            match reply["type"].as_str() {
                Some("error") if reply["code"] == "no_such_user" => Ok(()),
                Some("ok") => Err(reply),
                _ => panic!("whisper to Bob after his disconnect: {reply}"),
            }
        })
        .await;
    });
}

/// `from` whispers to `to` on another node, which gets it.
async fn whisper(sender: &mut Ws, from: &str, receiver: &mut Ws, to: &str) {
    let text = format!("psst, {to}");
    let reply = sender
        .ok(json!({"type": "whisper", "to": to, "text": text, "id": "w"}))
        .await;
    assert_eq!(reply["to"], to, "{reply}");
    let got = receiver.next().await;
    assert_eq!(got["type"], "whisper", "{to} got {got}");
    assert_eq!(got["from"], from, "{got}");
    assert_eq!(got["text"], text.as_str(), "{got}");
    assert!(got["ts"].is_u64(), "no ts: {got}");
}

// ---------------------------------------------------------------------------
// Members on every node
// ---------------------------------------------------------------------------

/// `who`, `rooms` and a join's `members` count the members on every node:
/// Alice and Bob on A and Carol on B in `lobby`, Carol and Dave (on A) in
/// `side`: each join's `members` lists those who joined before on either
/// node, and `who`/`rooms` on both nodes agree. Carol's `leave` of lobby
/// gives her her own `leave` before the `ok`, and Alice and Bob on A get
/// it too; Dave's disconnect reaches Carol on B as a `leave`. After each,
/// `who` and `rooms` on both nodes have caught up (the answer of either
/// node reflects every presence event a member has already seen).
#[test]
fn who_rooms_and_members_count_every_node_and_a_leaver_gets_its_own_leave() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let (a, b) = (&nodes[0], &nodes[1]);
    block_on(async {
        let mut alice = connect(a, "alice").await;
        let mut bob = connect(a, "bob").await;
        let mut carol = connect(b, "carol").await;
        let mut dave = connect(a, "dave").await;
        join_with_members(&mut alice, ROOM, &["alice"]).await;
        join_with_members(&mut carol, ROOM, &["alice", "carol"]).await;
        join_with_members(&mut bob, ROOM, &["alice", "bob", "carol"]).await;
        join_with_members(&mut carol, "side", &["carol"]).await;
        join_with_members(&mut dave, "side", &["carol", "dave"]).await;
        // Everyone has seen every join of their rooms.
        read_until(&mut alice, "bob's join", |v| {
            is_presence(v, ROOM, "join", "bob")
        })
        .await;
        read_until(&mut carol, "dave's join", |v| {
            is_presence(v, "side", "join", "dave")
        })
        .await;
        let mut asker = connect(b, "asker").await;
        for c in [&mut dave, &mut asker] {
            assert_who(c, ROOM, &["alice", "bob", "carol"]).await;
            assert_who(c, "side", &["carol", "dave"]).await;
            assert_who(c, "nowhere", &[]).await;
            assert_rooms(c, &[(ROOM, 3), ("side", 2)]).await;
        }

        let (reply, events) = carol.request(leave(ROOM)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert!(
            events
                .iter()
                .any(|v| is_presence(v, ROOM, "leave", "carol")),
            "Carol's own leave before her ok: {events:?}"
        );
        for c in [&mut alice, &mut bob] {
            read_until(c, "carol's leave", |v| {
                is_presence(v, ROOM, "leave", "carol")
            })
            .await;
        }
        for c in [&mut dave, &mut asker] {
            assert_who(c, ROOM, &["alice", "bob"]).await;
            assert_rooms(c, &[(ROOM, 2), ("side", 2)]).await;
        }

        dave.close().await;
        read_until(&mut carol, "dave's leave", |v| {
            is_presence(v, "side", "leave", "dave")
        })
        .await;
        for c in [&mut alice, &mut asker] {
            assert_who(c, "side", &["carol"]).await;
            assert_rooms(c, &[(ROOM, 2), ("side", 1)]).await;
        }
    });
}

/// Joins `room`; the reply's `members` are `members`.
async fn join_with_members(c: &mut Ws, room: &str, members: &[&str]) {
    let reply = c.ok(join(room)).await;
    assert_eq!(reply["members"], json!(members), "join {room}: {reply}");
}

async fn assert_who(c: &mut Ws, room: &str, members: &[&str]) {
    let reply = c
        .ok(json!({"type": "who", "room": room, "id": "who"}))
        .await;
    assert_eq!(reply["room"], room, "{reply}");
    assert_eq!(reply["members"], json!(members), "who {room}: {reply}");
}

async fn assert_rooms(c: &mut Ws, rooms: &[(&str, u64)]) {
    let reply = c.ok(json!({"type": "rooms", "id": "rooms"})).await;
    let want: Vec<Value> = rooms
        .iter()
        .map(|(room, n)| json!({"room": room, "members": n}))
        .collect();
    assert_eq!(reply["rooms"], json!(want), "rooms: {reply}");
}

// ---------------------------------------------------------------------------
// The option's forms; a broker that cannot be reached
// ---------------------------------------------------------------------------

/// `NATTER_BROKER` is `--broker`: a node given the broker only in its
/// environment serves the same chat as one given the option (a message
/// said on one reaches a member on the other, with the same seq, and a
/// nick held on one is taken on the other).
#[test]
fn the_broker_from_the_environment_joins_the_same_chat() {
    let redis = Redis::start();
    block_on(async {
        let by_option = start_node(&redis, &[]);
        let mut cmd = bare_node_command(&[]);
        cmd.env("NATTER_BROKER", redis.url());
        let by_env = ServerProcess::spawn(cmd);

        let mut alice = connect(&by_env, "alice").await;
        alice.ok(join(ROOM)).await;
        let mut bob = connect(&by_option, "bob").await;
        bob.ok(join(ROOM)).await;
        let (seq, _) = say(&mut bob, ROOM, "one chat").await;
        let mut heard = Vec::new();
        read_messages_to(&mut alice, ROOM, seq, &mut heard).await;
        let last = heard.last().expect("a message");
        assert_eq!(
            (last.seq, last.from.as_str(), last.text.as_str()),
            (seq, "bob", "one chat")
        );

        let (_c, welcome) = upgrade(&by_option, Some("alice")).await;
        assert_eq!(welcome["nick_error"], "nick_taken", "{welcome}");
    });
}

/// A node connects to its broker before it listens: with nothing on the
/// broker's port it never prints its listening line, and exits with
/// status 1 after one `natter-server: error:` line on stderr.
#[test]
fn a_node_that_cannot_reach_its_broker_exits_1_before_listening() {
    // A port nothing listens on (chosen as a Redis port would be).
    let port = free_port();
    let exited = run_to_exit(node_command(&format!("redis://127.0.0.1:{port}"), &[]));
    let line = exited.error_line();
    assert_eq!(
        exited.status.code(),
        Some(1),
        "exit status with {line:?}: {}",
        exited.status
    );
}

/// `--max-rooms` bounds the empty rooms of the whole cluster (guarantee
/// 7): a room emptied on one node counts against a room emptied on
/// another, the least recently emptied goes, and a room created again
/// comes back with a new epoch, so `since` recovery says "incomplete".
#[test]
fn empty_rooms_past_max_rooms_are_forgotten_cluster_wide_with_a_new_epoch_after() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &["--max-rooms", "1"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    block_on(async {
        let mut alice = connect(a, "alice").await;
        let first = alice.ok(join("first")).await;
        let old_epoch = epoch_of(&first);
        say(&mut alice, "first", "one").await;
        say(&mut alice, "first", "two").await;
        alice.ok(leave("first")).await;

        // Emptied later, on the other node: now two empty rooms, one kept.
        let mut bob = connect(b, "bob").await;
        let second = bob.ok(join("second")).await;
        say(&mut bob, "second", "three").await;
        bob.ok(leave("second")).await;

        let mut carol = connect(b, "carol").await;
        let back = carol.ok(join_since("first", 2, &old_epoch)).await;
        assert_eq!(back["seq"], 0, "forgotten, so created afresh: {back}");
        assert_ne!(epoch_of(&back), old_epoch, "a new epoch: {back}");
        assert_eq!(back["complete"], false, "a different epoch: {back}");
        assert_eq!(history(&back, "first"), Vec::<Said>::new(), "{back}");

        // The room emptied last was kept, numbering and epoch intact.
        let mut dave = connect(a, "dave").await;
        let kept = dave.ok(join_since("second", 0, &epoch_of(&second))).await;
        assert_eq!(kept["seq"], 1, "{kept}");
        assert_eq!(epoch_of(&kept), epoch_of(&second), "{kept}");
        assert_eq!(kept["complete"], true, "{kept}");
        assert_eq!(history(&kept, "second").len(), 1, "{kept}");
    });
}
