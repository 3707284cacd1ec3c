//! History and `since` recovery, retention after everyone leaves, the
//! history cap, and room eviction with a new epoch.

use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, TestServer, assert_message, start};

async fn unlimited(history: usize, max_rooms: usize) -> TestServer {
    let mut config = Config::local();
    config.rate = 0;
    config.history = history;
    config.max_rooms = max_rooms;
    start(config).await
}

/// Says `n` messages "m1".."mn" (numbered from `first`) in `room`.
async fn say_many(c: &mut Client, room: &str, first: u64, n: u64) {
    for i in first..first + n {
        assert_eq!(c.say(room, &format!("m{i}")).await, i);
    }
}

/// The seqs of a join reply's history, after checking each entry.
fn history_seqs(reply: &Value, room: &str, from: &str) -> Vec<u64> {
    reply["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in {reply}"))
        .iter()
        .map(|m| {
            let seq = m["seq"].as_u64().unwrap();
            assert_message(m, room, seq, from, &format!("m{seq}"));
            seq
        })
        .collect()
}

async fn join_since(c: &mut Client, room: &str, since: u64, epoch: Option<&Value>) -> Value {
    let mut req = json!({"type": "join", "room": room, "since": since});
    if let Some(epoch) = epoch {
        req["epoch"] = epoch.clone();
    }
    c.ok(req).await
}

#[test]
fn join_without_since_gets_the_last_twenty() {
    natter_runtime::block_on(async {
        let server = unlimited(100, 1000).await;
        let mut alice = server.client("alice").await;
        alice.join("small").await;
        say_many(&mut alice, "small", 1, 5).await;
        alice.join("big").await;
        say_many(&mut alice, "big", 1, 25).await;
        alice.join("twenty").await;
        say_many(&mut alice, "twenty", 1, 20).await;

        let mut bob = server.client("bob").await;
        let reply = bob.join("small").await;
        assert_eq!(reply["seq"], 5);
        assert_eq!(
            history_seqs(&reply, "small", "alice"),
            (1..=5).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], true, "all of 1..5: {reply}");

        let reply = bob.join("big").await;
        assert_eq!(reply["seq"], 25);
        assert_eq!(
            history_seqs(&reply, "big", "alice"),
            (6..=25).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], false, "1..5 missing: {reply}");

        let reply = bob.join("twenty").await;
        assert_eq!(
            history_seqs(&reply, "twenty", "alice"),
            (1..=20).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], true);
    })
}

#[test]
fn since_with_the_same_epoch_gives_exactly_the_missed_messages() {
    natter_runtime::block_on(async {
        let server = unlimited(100, 1000).await;
        let mut alice = server.client("alice").await;
        alice.join("room").await;
        say_many(&mut alice, "room", 1, 3).await;

        // bob is in the room up to seq 3, then goes away.
        let mut bob = server.client("bob").await;
        let first = bob.join("room").await;
        let epoch = first["epoch"].clone();
        assert_eq!(first["seq"], 3);
        bob.close().await;

        say_many(&mut alice, "room", 4, 30).await;

        // bob comes back and asks for everything after 3: 30 messages, not
        // capped at 20, and complete.
        let mut bob = server.client("bob").await;
        let reply = join_since(&mut bob, "room", 3, Some(&epoch)).await;
        assert_eq!(reply["seq"], 33);
        assert_eq!(reply["epoch"], epoch);
        assert_eq!(
            history_seqs(&reply, "room", "alice"),
            (4..=33).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], true);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        // since = the last seq: nothing missed.
        let reply = join_since(&mut bob, "room", 33, Some(&epoch)).await;
        assert_eq!(reply["history"], json!([]));
        assert_eq!(reply["complete"], true);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        // since 0 gives the whole numbering.
        let reply = join_since(&mut bob, "room", 0, Some(&epoch)).await;
        assert_eq!(
            history_seqs(&reply, "room", "alice"),
            (1..=33).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], true);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        // since without epoch is taken as the current epoch.
        let reply = join_since(&mut bob, "room", 30, None).await;
        assert_eq!(history_seqs(&reply, "room", "alice"), vec![31, 32, 33]);
        assert_eq!(reply["complete"], true);
    })
}

#[test]
fn since_past_the_end_or_another_epoch_is_incomplete_with_the_last_twenty() {
    natter_runtime::block_on(async {
        let server = unlimited(100, 1000).await;
        let mut alice = server.client("alice").await;
        let first = alice.join("room").await;
        let epoch = first["epoch"].clone();
        say_many(&mut alice, "room", 1, 25).await;
        alice.ok(json!({"type": "leave", "room": "room"})).await;

        for (since, epoch) in [
            (26, Some(epoch.clone())),
            (1000, None),
            (3, Some(json!("not-the-epoch"))),
            (0, Some(json!(""))),
        ] {
            let reply = join_since(&mut alice, "room", since, epoch.as_ref()).await;
            assert_eq!(
                reply["complete"], false,
                "since {since} epoch {epoch:?}: {reply}"
            );
            assert_eq!(
                history_seqs(&reply, "room", "alice"),
                (6..=25).collect::<Vec<_>>(),
                "since {since} epoch {epoch:?}"
            );
            assert_eq!(reply["seq"], 25);
            alice.ok(json!({"type": "leave", "room": "room"})).await;
        }
        // Even in a small room, a wrong epoch is never "complete".
        alice.join("tiny").await;
        say_many(&mut alice, "tiny", 1, 2).await;
        alice.ok(json!({"type": "leave", "room": "tiny"})).await;
        let reply = join_since(&mut alice, "tiny", 0, Some(&json!("bogus"))).await;
        assert_eq!(history_seqs(&reply, "tiny", "alice"), vec![1, 2]);
        assert_eq!(reply["complete"], false);
    })
}

#[test]
fn history_cap_drops_old_messages_and_says_so() {
    natter_runtime::block_on(async {
        let server = unlimited(5, 1000).await;
        let mut alice = server.client("alice").await;
        let first = alice.join("room").await;
        let epoch = first["epoch"].clone();
        say_many(&mut alice, "room", 1, 10).await;

        let mut bob = server.client("bob").await;
        let reply = bob.join("room").await;
        assert_eq!(reply["seq"], 10);
        assert_eq!(
            history_seqs(&reply, "room", "alice"),
            (6..=10).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], false);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        // 3, 4, 5 were dropped: incomplete, with what is kept.
        let reply = join_since(&mut bob, "room", 2, Some(&epoch)).await;
        assert_eq!(
            history_seqs(&reply, "room", "alice"),
            (6..=10).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], false);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        // Nothing after 5 was dropped: complete.
        let reply = join_since(&mut bob, "room", 5, Some(&epoch)).await;
        assert_eq!(
            history_seqs(&reply, "room", "alice"),
            (6..=10).collect::<Vec<_>>()
        );
        assert_eq!(reply["complete"], true);
        bob.ok(json!({"type": "leave", "room": "room"})).await;

        let reply = join_since(&mut bob, "room", 8, Some(&epoch)).await;
        assert_eq!(history_seqs(&reply, "room", "alice"), vec![9, 10]);
        assert_eq!(reply["complete"], true);
    })
}

#[test]
fn a_room_keeps_its_seq_and_history_after_everyone_leaves() {
    natter_runtime::block_on(async {
        let server = unlimited(100, 1000).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let first = alice.join("room").await;
        let epoch = first["epoch"].clone();
        bob.join("room").await;
        say_many(&mut alice, "room", 1, 3).await;
        alice.ok(json!({"type": "leave", "room": "room"})).await;
        bob.close().await;
        server
            .wait_stats("bob's membership is gone", |s| s.registry.memberships == 0)
            .await;
        let rooms = alice.ok(json!({"type": "rooms"})).await;
        assert_eq!(rooms["rooms"], json!([]), "an empty room is not listed");

        let mut carol = server.client("carol").await;
        let reply = carol.join("room").await;
        assert_eq!(reply["seq"], 3);
        assert_eq!(reply["epoch"], epoch);
        assert_eq!(history_seqs(&reply, "room", "alice"), vec![1, 2, 3]);
        assert_eq!(reply["complete"], true);
        assert_eq!(reply["members"], json!(["carol"]));
        assert_eq!(carol.say("room", "m4").await, 4);
    })
}

#[test]
fn an_evicted_room_comes_back_with_a_new_epoch() {
    natter_runtime::block_on(async {
        let server = unlimited(100, 1).await;
        let mut alice = server.client("alice").await;
        let first = alice.join("one").await;
        let old_epoch = first["epoch"].clone();
        say_many(&mut alice, "one", 1, 3).await;
        alice.ok(json!({"type": "leave", "room": "one"})).await;

        // One empty room may stay (max_rooms = 1): a second room emptying
        // pushes "one", the less recently active, out.
        alice.join("two").await;
        say_many(&mut alice, "two", 1, 2).await;
        alice.ok(json!({"type": "leave", "room": "two"})).await;

        let reply = join_since(&mut alice, "one", 3, Some(&old_epoch)).await;
        assert_ne!(reply["epoch"], old_epoch, "re-created room kept its epoch");
        assert_eq!(reply["seq"], 0);
        assert_eq!(reply["history"], json!([]));
        assert_eq!(reply["complete"], false, "the old epoch no longer applies");
        assert_eq!(alice.say("one", "m1").await, 1);

        // "two", the one empty room kept, has its numbering.
        let reply = alice.join("two").await;
        assert_eq!(reply["seq"], 2);
        assert_eq!(history_seqs(&reply, "two", "alice"), vec![1, 2]);
    })
}
