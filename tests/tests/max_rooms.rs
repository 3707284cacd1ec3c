//! `--max-rooms` bounds the rooms kept with no members, whatever sequence of
//! joins, leaves and disconnects led there: the least recently active empty
//! room goes as soon as the bound would be passed, occupied rooms never
//! count and never go. And a join reply's history is the `message` events
//! exactly as they were broadcast, byte for byte.

use std::collections::HashMap;

use async_tungstenite::tungstenite::Message;
use natter_tests::serde_json::value::RawValue;
use natter_tests::serde_json::{self, Value, json};
use natter_tests::{Client, Config, TestServer, start};

async fn server(max_rooms: usize) -> TestServer {
    let mut config = Config::local();
    config.rate = 0;
    config.max_rooms = max_rooms;
    start(config).await
}

async fn leave(c: &mut Client, room: &str) {
    c.ok(json!({"type": "leave", "room": room})).await;
}

/// Waits until the registry holds `rooms` rooms and `memberships`
/// memberships (a disconnect is carried out by the server's own task).
async fn wait_rooms(server: &TestServer, rooms: usize, memberships: usize) {
    server
        .wait_stats(
            &format!("{rooms} retained room(s), {memberships} membership(s)"),
            |s| s.registry.rooms == rooms && s.registry.memberships == memberships,
        )
        .await;
}

/// Joins `room` and returns its (epoch, seq) as the reply tells them.
async fn numbering(c: &mut Client, room: &str) -> (Value, u64) {
    let reply = c.join(room).await;
    (reply["epoch"].clone(), reply["seq"].as_u64().expect("seq"))
}

#[test]
fn empty_rooms_stay_within_the_bound_after_a_ratchet() {
    natter_runtime::block_on(async {
        let server = server(3).await;
        let mut alice = server.client("alice").await;
        let names: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
        // Occupy six rooms (twice the bound): occupied rooms never count.
        let mut epochs = Vec::new();
        for name in &names {
            epochs.push(alice.join(name).await["epoch"].clone());
            assert_eq!(alice.say(name, "hi").await, 1);
        }
        wait_rooms(&server, 6, 6).await;
        // Empty them in an order unlike their creation: the last three to
        // empty are the most recently active.
        let order = [5, 2, 0, 4, 1, 3];
        for (n, &i) in order.iter().enumerate() {
            leave(&mut alice, &names[i]).await;
            let empty = n + 1;
            let stats = server.stats().await;
            assert_eq!(
                stats.registry.rooms,
                6 - empty + empty.min(3),
                "after {} rooms emptied: {stats:?}",
                empty
            );
        }
        // Kept: 4, 1, 3 with their numbering; evicted: 5, 2, 0, which come
        // back as new incarnations. Check the kept ones first (joining an
        // evicted one creates an occupied room, which evicts nothing).
        let mut bob = server.client("bob").await;
        for i in [4, 1, 3] {
            let (epoch, seq) = numbering(&mut bob, &names[i]).await;
            assert_eq!((&epoch, seq), (&epochs[i], 1), "{} was kept", names[i]);
        }
        for i in [5, 2, 0] {
            let (epoch, seq) = numbering(&mut bob, &names[i]).await;
            assert_ne!(epoch, epochs[i], "{} was evicted", names[i]);
            assert_eq!(seq, 0, "{} starts its numbering again", names[i]);
        }
        wait_rooms(&server, 6, 6).await;
        // bob disconnects: six rooms empty at once, three are kept.
        bob.close().await;
        wait_rooms(&server, 3, 0).await;
        alice.close().await;
        server.assert_idle().await;
        assert_eq!(server.stats().await.registry.rooms, 3);
    })
}

#[test]
fn max_rooms_zero_forgets_a_room_as_soon_as_it_empties() {
    natter_runtime::block_on(async {
        let server = server(0).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let (epoch, _) = numbering(&mut alice, "a").await;
        bob.join("a").await;
        alice.say("a", "one").await;
        // Still occupied by bob: kept, numbering and all.
        leave(&mut alice, "a").await;
        wait_rooms(&server, 1, 1).await;
        assert_eq!(numbering(&mut alice, "a").await, (epoch.clone(), 1));
        // Empty: forgotten at once.
        leave(&mut alice, "a").await;
        leave(&mut bob, "a").await;
        wait_rooms(&server, 0, 0).await;
        let (again, seq) = numbering(&mut alice, "a").await;
        assert_ne!(again, epoch);
        assert_eq!(seq, 0);
        // Emptied by a disconnect: forgotten too.
        alice.close().await;
        wait_rooms(&server, 0, 0).await;
        bob.close().await;
        server.assert_idle().await;
    })
}

#[test]
fn a_disconnect_that_empties_rooms_evicts_down_to_the_bound() {
    natter_runtime::block_on(async {
        let server = server(2).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        for room in ["a", "b", "c", "d"] {
            alice.join(room).await;
            alice.say(room, "x").await;
        }
        let (d_epoch, _) = numbering(&mut bob, "d").await;
        wait_rooms(&server, 4, 5).await;
        // a, b and c empty together: one of them goes; d has bob.
        alice.close().await;
        wait_rooms(&server, 3, 1).await;
        // d empties last, so it is the most recently active: it stays and
        // one more of a, b, c goes.
        leave(&mut bob, "d").await;
        wait_rooms(&server, 2, 0).await;
        assert_eq!(numbering(&mut bob, "d").await, (d_epoch, 1));
        bob.close().await;
        server.assert_idle().await;
        assert_eq!(server.stats().await.registry.rooms, 2);
    })
}

/// Reads raw text frames up to the reply to `id` (returned), collecting
/// the events before it.
async fn raw_until_reply(c: &mut Client, id: i64) -> (String, Vec<String>) {
    let mut events = Vec::new();
    for _ in 0..1000 {
        match c.next_message().await {
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v["type"] == "ok" || v["type"] == "error" {
                    assert_eq!(v["id"], id, "{v}");
                    return (t.as_str().to_owned(), events);
                }
                events.push(t.as_str().to_owned());
            }
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    panic!("no reply to {id}")
}

#[test]
fn join_history_is_the_broadcast_frames_byte_for_byte() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let server = start(config).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        alice.join("room").await;
        bob.join("room").await;
        // Texts with everything JSON escapes: quotes, backslashes, control
        // characters (six bytes each, escaped), and non-ASCII kept as is.
        let texts = [
            "\u{1}".repeat(4096),
            "\"".repeat(4096),
            "back\\slash / and \"quotes\"".to_owned(),
            "tab\tnewline\nnul\u{0}del\u{7f}".to_owned(),
            "é ☃ 🦀 \u{2028}\u{2029}".to_owned(),
            "],\"complete\":true}".to_owned(),
        ];
        let mut broadcast = Vec::new();
        for text in &texts {
            let id = bob.fresh_id();
            bob.send_json(&json!({"type": "say", "room": "room", "text": text, "id": id}))
                .await;
            let (_, events) = raw_until_reply(&mut bob, id).await;
            broadcast.extend(events);
        }
        assert_eq!(broadcast.len(), texts.len(), "bob hears his own messages");

        let mut carol = server.client("carol").await;
        let id = carol.fresh_id();
        carol
            .send_json(&json!({"type": "join", "room": "room", "id": id}))
            .await;
        let (reply, _) = raw_until_reply(&mut carol, id).await;
        let fields: HashMap<&str, &RawValue> =
            serde_json::from_str(&reply).expect("the reply is a JSON object");
        let history: Vec<&RawValue> =
            serde_json::from_str(fields["history"].get()).expect("history is an array");
        let history: Vec<&str> = history.iter().map(|r| r.get()).collect();
        assert_eq!(
            history, broadcast,
            "history entries are the broadcast frames"
        );
        // And the reply as a whole reads as the contract's join reply.
        let typed: natter_protocol::ServerMessage =
            serde_json::from_str(&reply).expect("a join reply");
        match typed {
            natter_protocol::ServerMessage::Ok(ok) => match ok.reply {
                natter_protocol::Reply::Join(join) => {
                    assert_eq!(join.members, ["alice", "bob", "carol"]);
                    assert_eq!(join.seq, texts.len() as u64);
                    assert!(join.complete);
                    let got: Vec<&str> = join.history.iter().map(|m| m.text.as_str()).collect();
                    assert_eq!(got, texts.iter().map(String::as_str).collect::<Vec<_>>());
                }
                other => panic!("not a join reply: {other:?}"),
            },
            other => panic!("not an ok reply: {other:?}"),
        }
        for c in [alice, bob, carol] {
            c.close().await;
        }
        server.assert_idle().await;
    })
}
