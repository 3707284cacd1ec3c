//! Presence events: join, leave, rename and disconnect, to the subject and
//! to the other members.

use natter_tests::serde_json::json;
use natter_tests::{Config, presence_of, start};

fn p(
    room: &str,
    event: &str,
    nick: &str,
    old: Option<&str>,
) -> (String, String, String, Option<String>) {
    (
        room.into(),
        event.into(),
        nick.into(),
        old.map(str::to_owned),
    )
}

#[test]
fn joiner_gets_its_own_join_before_the_ok_and_members_hear_it() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let (reply, events) = alice
            .request(json!({"type": "join", "room": "lobby"}))
            .await;
        assert_eq!(reply["type"], "ok");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(presence_of(&events[0]), p("lobby", "join", "alice", None));
        assert!(events[0].get("old").is_none(), "{}", events[0]);

        let (reply, events) = bob.request(json!({"type": "join", "room": "lobby"})).await;
        assert_eq!(reply["members"], json!(["alice", "bob"]));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(presence_of(&events[0]), p("lobby", "join", "bob", None));
        let got = alice.recv().await;
        assert_eq!(presence_of(&got), p("lobby", "join", "bob", None));
        // Someone in another room hears nothing.
        let mut carol = server.client("carol").await;
        carol.join("other").await;
        let (_, events) = alice.request(json!({"type": "rooms"})).await;
        assert!(events.is_empty(), "{events:?}");
    })
}

#[test]
fn leaver_gets_its_own_leave_before_the_ok_and_members_hear_it() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        alice.join("lobby").await;
        bob.join("lobby").await;
        alice.recv().await; // bob's join
        let (reply, events) = bob.request(json!({"type": "leave", "room": "lobby"})).await;
        assert_eq!(reply["type"], "ok");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(presence_of(&events[0]), p("lobby", "leave", "bob", None));
        let got = alice.recv().await;
        assert_eq!(presence_of(&got), p("lobby", "leave", "bob", None));
        // bob no longer hears the room.
        alice.say("lobby", "after").await;
        let (_, events) = bob.request(json!({"type": "rooms"})).await;
        assert!(events.is_empty(), "{events:?}");
        let who = bob.ok(json!({"type": "who", "room": "lobby"})).await;
        assert_eq!(who["members"], json!(["alice"]));
    })
}

#[test]
fn rename_is_announced_once_per_room_to_self_and_others() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let mut carol = server.client("carol").await;
        alice.join("r1").await;
        alice.join("r2").await;
        alice.join("r3").await;
        bob.join("r1").await;
        carol.join("r2").await;
        carol.join("r3").await;

        let (reply, mut events) = alice
            .request(json!({"type": "nick", "nick": "alicia"}))
            .await;
        assert_eq!(reply["nick"], "alicia");
        events.retain(|e| e["event"] == "rename");
        let mut got: Vec<_> = events.iter().map(presence_of).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                p("r1", "rename", "alicia", Some("alice")),
                p("r2", "rename", "alicia", Some("alice")),
                p("r3", "rename", "alicia", Some("alice")),
            ]
        );
        // bob shares r1 only: one rename.
        let (_, events) = bob.request(json!({"type": "rooms"})).await;
        let renames: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "rename")
            .map(presence_of)
            .collect();
        assert_eq!(renames, vec![p("r1", "rename", "alicia", Some("alice"))]);
        // carol shares r2 and r3: one rename in each.
        let (_, events) = carol.request(json!({"type": "rooms"})).await;
        let mut renames: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "rename")
            .map(presence_of)
            .collect();
        renames.sort();
        assert_eq!(
            renames,
            vec![
                p("r2", "rename", "alicia", Some("alice")),
                p("r3", "rename", "alicia", Some("alice")),
            ]
        );
        // The new nick is what members and messages show.
        let who = bob.ok(json!({"type": "who", "room": "r1"})).await;
        assert_eq!(who["members"], json!(["alicia", "bob"]));
        alice.say("r1", "hi").await;
        let (m, _) = bob.recv_type("message").await;
        assert_eq!(m["from"], "alicia");
        // The old nick is free for someone else.
        let (_dave, welcome) = natter_tests::Client::connect(&server.url_nick("alice")).await;
        assert_eq!(welcome["nick"], "alice");
        assert!(welcome.get("nick_error").is_none());
    })
}

#[test]
fn disconnect_makes_the_others_hear_a_leave_in_every_room() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let carol = server.client("carol").await;
        let mut carol = carol;
        alice.join("r1").await;
        bob.join("r2").await;
        carol.join("r1").await;
        carol.join("r2").await;
        alice.recv().await; // carol's join in r1
        bob.recv().await; // carol's join in r2

        carol.close().await;
        let got = alice.recv().await;
        assert_eq!(presence_of(&got), p("r1", "leave", "carol", None));
        let got = bob.recv().await;
        assert_eq!(presence_of(&got), p("r2", "leave", "carol", None));
        let who = alice.ok(json!({"type": "who", "room": "r2"})).await;
        assert_eq!(who["members"], json!(["bob"]));

        // An abrupt disconnect (no close frame) counts too.
        let mut dave = server.client("dave").await;
        dave.join("r1").await;
        alice.recv().await; // dave's join
        drop(dave);
        let got = alice.recv().await;
        assert_eq!(presence_of(&got), p("r1", "leave", "dave", None));
        let who = alice.ok(json!({"type": "who", "room": "r1"})).await;
        assert_eq!(who["members"], json!(["alice"]));
    })
}
