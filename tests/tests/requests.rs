//! Every request type and the exact fields of its `ok` reply; ids echoed;
//! exactly one reply per request, in request order.

use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, assert_message, is_reply, presence_of, start};

/// The reply's keys, sorted, must be exactly `keys` (plus `type` and `id`).
fn assert_keys(v: &Value, keys: &[&str]) {
    let mut got: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = keys.iter().copied().chain(["type", "id"]).collect();
    want.sort_unstable();
    assert_eq!(got, want, "fields of {v}");
}

#[test]
fn welcome_announces_nick_protocol_server_and_limits() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.max_message_bytes = 5000;
        config.max_text_bytes = 300;
        config.rate = 7;
        config.burst = 9;
        config.max_rooms_per_connection = 3;
        let server = start(config).await;
        let (_c, welcome) = Client::connect(&server.url_nick("alice")).await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["nick"], "alice");
        assert_eq!(welcome["protocol"], 1);
        let name = welcome["server"].as_str().expect("server is a string");
        assert!(name.starts_with("natter"), "server: {name}");
        assert_eq!(
            welcome["limits"],
            json!({
                "max_message_bytes": 5000,
                "max_text_bytes": 300,
                "rate_per_sec": 7,
                "burst": 9,
                "max_rooms_per_connection": 3
            })
        );
        assert!(welcome.get("nick_error").is_none(), "{welcome}");

        let (_g, welcome) = Client::connect(&server.url()).await;
        let guest = welcome["nick"].as_str().unwrap();
        let n = guest.strip_prefix("guest-").expect("a guest nick");
        assert!(n.parse::<u64>().is_ok(), "guest nick {guest}");
        assert!(welcome.get("nick_error").is_none(), "{welcome}");
    })
}

#[test]
fn nick_reply_carries_the_new_nick() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let (mut c, _) = Client::connect(&server.url()).await;
        let reply = c
            .ok(json!({"type": "nick", "nick": "Zed_9-x", "id": 1}))
            .await;
        assert_keys(&reply, &["nick"]);
        assert_eq!(reply["nick"], "Zed_9-x");
        assert_eq!(reply["id"], 1);
        // The server knows us by the new nick.
        c.join("room").await;
        let who = c.ok(json!({"type": "who", "room": "room"})).await;
        assert_eq!(who["members"], json!(["Zed_9-x"]));
        // The old guest nick is free again and the new one is taken.
        let (mut other, _) = Client::connect(&server.url()).await;
        assert_eq!(
            other.err(json!({"type": "nick", "nick": "zed_9-X"})).await,
            "nick_taken"
        );
    })
}

#[test]
fn join_reply_fields_and_rejoin_is_silent() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;

        let (reply, events) = alice
            .request(json!({"type": "join", "room": "lobby", "id": "j1"}))
            .await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_keys(
            &reply,
            &["room", "members", "seq", "epoch", "history", "complete"],
        );
        assert_eq!(reply["id"], "j1");
        assert_eq!(reply["room"], "lobby");
        assert_eq!(reply["members"], json!(["alice"]));
        assert_eq!(reply["seq"], 0);
        assert!(reply["epoch"].is_string(), "{reply}");
        assert_eq!(reply["history"], json!([]));
        assert_eq!(reply["complete"], true);
        assert_eq!(events.len(), 1, "{events:?}");
        let epoch = reply["epoch"].clone();

        alice.say("lobby", "one").await;
        let reply = bob.join("lobby").await;
        assert_eq!(reply["members"], json!(["alice", "bob"]));
        assert_eq!(reply["seq"], 1);
        assert_eq!(reply["epoch"], epoch);
        assert_eq!(reply["complete"], true);
        let history = reply["history"].as_array().unwrap();
        assert_eq!(history.len(), 1);
        assert_message(&history[0], "lobby", 1, "alice", "one");

        // Joining again: the same reply fields, no presence for anyone.
        let (again, events) = bob
            .request(json!({"type": "join", "room": "lobby", "id": 2}))
            .await;
        assert_eq!(again["type"], "ok");
        assert_keys(
            &again,
            &["room", "members", "seq", "epoch", "history", "complete"],
        );
        assert_eq!(again["members"], json!(["alice", "bob"]));
        assert_eq!(again["seq"], 1);
        assert_eq!(again["epoch"], epoch);
        assert!(events.is_empty(), "rejoin caused events: {events:?}");
        // alice saw the message echo, bob's first join, and nothing after.
        let (_, events) = alice.request(json!({"type": "rooms"})).await;
        let presence: Vec<_> = events.iter().filter(|e| e["type"] == "presence").collect();
        assert_eq!(presence.len(), 1, "alice's events: {events:?}");
        assert_eq!(
            presence_of(presence[0]),
            ("lobby".into(), "join".into(), "bob".into(), None)
        );
    })
}

#[test]
fn leave_reply_carries_the_room() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        alice.join("lobby").await;
        let (reply, _) = alice
            .request(json!({"type": "leave", "room": "lobby", "id": 5}))
            .await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_keys(&reply, &["room"]);
        assert_eq!(reply["room"], "lobby");
        assert_eq!(reply["id"], 5);
        // No longer a member.
        assert_eq!(
            alice
                .err(json!({"type": "say", "room": "lobby", "text": "x"}))
                .await,
            "not_member"
        );
    })
}

#[test]
fn say_reply_carries_room_and_seq_and_sender_sees_its_message() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        alice.join("lobby").await;
        bob.join("lobby").await;
        for seq in 1..=3u64 {
            let text = format!("hello {seq}");
            let (reply, events) = alice
                .request(json!({"type": "say", "room": "lobby", "text": text, "id": seq}))
                .await;
            assert_eq!(reply["type"], "ok", "{reply}");
            assert_keys(&reply, &["room", "seq"]);
            assert_eq!(reply["room"], "lobby");
            assert_eq!(reply["seq"], seq);
            // The sender's own message event, before or after the ok.
            let own = match events.iter().find(|e| e["type"] == "message") {
                Some(own) => own.clone(),
                None => alice.recv_type("message").await.0,
            };
            assert_message(&own, "lobby", seq, "alice", &text);
            let (got, _) = bob.recv_type("message").await;
            assert_message(&got, "lobby", seq, "alice", &text);
        }
    })
}

#[test]
fn whisper_to_another_and_to_self() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("Bob").await;
        // `to` is matched case-insensitively.
        let (reply, _) = alice
            .request(json!({"type": "whisper", "to": "bob", "text": "psst", "id": "w"}))
            .await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_keys(&reply, &["to"]);
        let to = reply["to"].as_str().expect("to is a string");
        assert!(to.eq_ignore_ascii_case("bob"), "{reply}");
        assert_eq!(reply["id"], "w");
        let w = bob.recv().await;
        assert_eq!(w["type"], "whisper", "{w}");
        assert_eq!(w["from"], "alice");
        assert_eq!(w["text"], "psst");
        natter_tests::assert_plausible_ts(&w["ts"]);
        let mut keys: Vec<_> = w.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["from", "text", "ts", "type"]);

        // To oneself: the whisper event and the ok.
        let (reply, mut events) = alice
            .request(json!({"type": "whisper", "to": "alice", "text": "note", "id": 2}))
            .await;
        assert_eq!(reply["to"], "alice");
        if events.is_empty() {
            events.push(alice.recv().await);
        }
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "whisper");
        assert_eq!(events[0]["from"], "alice");
        assert_eq!(events[0]["text"], "note");
        // Nothing reached bob.
        let (_, events) = bob.request(json!({"type": "rooms"})).await;
        assert!(events.is_empty(), "{events:?}");
    })
}

#[test]
fn rooms_lists_rooms_with_members_sorted_by_bytes() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        let reply = alice.ok(json!({"type": "rooms", "id": 1})).await;
        assert_keys(&reply, &["rooms"]);
        assert_eq!(reply["rooms"], json!([]));

        for room in ["b", "a.x", "a-x", "a_x", "empty"] {
            alice.join(room).await;
        }
        bob.join("b").await;
        alice.ok(json!({"type": "leave", "room": "empty"})).await;
        let reply = bob.ok(json!({"type": "rooms"})).await;
        // Byte order: '-' (0x2d) < '.' (0x2e) < '_' (0x5f) < 'b'.
        assert_eq!(
            reply["rooms"],
            json!([
                {"room": "a-x", "members": 1},
                {"room": "a.x", "members": 1},
                {"room": "a_x", "members": 1},
                {"room": "b", "members": 2}
            ])
        );
    })
}

#[test]
fn who_lists_members_sorted_and_empty_for_unknown_rooms() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut names = Vec::new();
        let mut clients = Vec::new();
        for nick in ["zoe", "Adam", "bob", "_x"] {
            let mut c = server.client(nick).await;
            c.join("room").await;
            clients.push(c);
            names.push(nick);
        }
        let reply = clients[0]
            .ok(json!({"type": "who", "room": "room", "id": 9}))
            .await;
        assert_keys(&reply, &["room", "members"]);
        assert_eq!(reply["room"], "room");
        assert_eq!(reply["members"], json!(["Adam", "_x", "bob", "zoe"]));

        let reply = clients[0]
            .ok(json!({"type": "who", "room": "nowhere"}))
            .await;
        assert_eq!(reply["room"], "nowhere");
        assert_eq!(reply["members"], json!([]));

        // A room whose members all left still exists but has no members.
        clients[0].join("gone").await;
        clients[0]
            .ok(json!({"type": "leave", "room": "gone"}))
            .await;
        let reply = clients[1].ok(json!({"type": "who", "room": "gone"})).await;
        assert_eq!(reply["members"], json!([]));
    })
}

#[test]
fn ids_are_echoed_and_invalid_ids_get_null() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let (mut c, _) = Client::connect(&server.url()).await;
        let max = 9_007_199_254_740_991i64;
        let long_ok = "x".repeat(64);
        for id in [
            json!(0),
            json!(-1),
            json!(max),
            json!(-max),
            json!(""),
            json!("m1"),
            json!(long_ok),
            json!("ünïcödé"),
        ] {
            let (reply, _) = c.request(json!({"type": "rooms", "id": id})).await;
            assert_eq!(reply["type"], "ok", "{reply}");
            assert_eq!(reply["id"], id, "{reply}");
        }
        // An error reply echoes the id too.
        let (reply, _) = c
            .request(json!({"type": "who", "room": "UPPER", "id": "e1"}))
            .await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["id"], "e1");

        // No id, or a null id: the reply carries id null.
        for text in [r#"{"type":"rooms"}"#, r#"{"type":"rooms","id":null}"#] {
            c.send_text(text).await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "ok", "{reply}");
            assert!(reply.get("id").is_some(), "reply has no id field: {reply}");
            assert_eq!(reply["id"], Value::Null, "{reply}");
        }

        // Invalid ids: bad_request with id null.
        let too_long = format!("\"{}\"", "x".repeat(65));
        for raw in [
            "1.0",
            "1e3",
            "9007199254740992",
            "-9007199254740992",
            "1.5",
            "true",
            "[1]",
            "{}",
            too_long.as_str(),
        ] {
            c.send_text(&format!(r#"{{"type":"rooms","id":{raw}}}"#))
                .await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "error", "id {raw}: {reply}");
            assert_eq!(reply["code"], "bad_request", "id {raw}: {reply}");
            assert_eq!(reply["id"], Value::Null, "id {raw}: {reply}");
        }
        // The connection is still fine.
        c.ok(json!({"type": "rooms", "id": 1})).await;
    })
}

#[test]
fn pipelined_requests_get_one_reply_each_in_order() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let server = start(config).await;
        let mut alice = server.client("alice").await;
        let _bob = server.client("bob").await;
        let requests = [
            json!({"type": "join", "room": "a"}),
            json!({"type": "say", "room": "a", "text": "1"}),
            json!({"type": "say", "room": "nope", "text": "x"}),
            json!({"type": "who", "room": "a"}),
            json!({"type": "bogus"}),
            json!({"type": "whisper", "to": "bob", "text": "hi"}),
            json!({"type": "whisper", "to": "nobody", "text": "hi"}),
            json!({"type": "rooms"}),
            json!({"type": "nick", "nick": "alice2"}),
            json!({"type": "leave", "room": "a"}),
            json!({"type": "leave", "room": "a"}),
            json!({"type": "join", "room": "BAD"}),
        ];
        let want_ok = [
            true, true, false, true, false, true, false, true, true, true, false, false,
        ];
        let rounds = 5;
        for round in 0..rounds {
            for (i, req) in requests.iter().enumerate() {
                let mut req = req.clone();
                req["id"] = json!(format!("r{round}-{i}"));
                alice
                    .feed_raw(async_tungstenite::tungstenite::Message::text(
                        req.to_string(),
                    ))
                    .await;
            }
            // Requests 1..: alternate string and integer ids and a bad JSON
            // line, which gets a reply too.
            alice
                .feed_raw(async_tungstenite::tungstenite::Message::text("{oops"))
                .await;
            alice
                .feed_raw(async_tungstenite::tungstenite::Message::text(
                    json!({"type": "nick", "nick": "alice", "id": round}).to_string(),
                ))
                .await;
        }
        alice.flush().await;
        let mut replies = Vec::new();
        while replies.len() < rounds * (requests.len() + 2) {
            let v = alice.recv().await;
            if is_reply(&v) {
                replies.push(v);
            }
        }
        let mut it = replies.iter();
        for round in 0..rounds {
            for (i, ok) in want_ok.iter().enumerate() {
                let r = it.next().unwrap();
                assert_eq!(r["id"], json!(format!("r{round}-{i}")), "{r}");
                let want = if *ok { "ok" } else { "error" };
                assert_eq!(r["type"], want, "request {}: {r}", requests[i]);
            }
            let r = it.next().unwrap();
            assert_eq!(
                (&r["type"], &r["code"], &r["id"]),
                (&json!("error"), &json!("bad_json"), &Value::Null)
            );
            let r = it.next().unwrap();
            assert_eq!((&r["type"], &r["id"]), (&json!("ok"), &json!(round)));
        }
        // No extra reply is pending: the next reply answers the next request.
        let (reply, events) = alice.request(json!({"type": "rooms", "id": "last"})).await;
        assert_eq!(reply["type"], "ok");
        assert!(events.iter().all(|e| !is_reply(e)), "{events:?}");
    })
}

#[test]
fn unknown_fields_are_ignored_and_duplicate_keys_keep_the_last() {
    natter_runtime::block_on(async {
        let server = start(Config::local()).await;
        let mut c = server.client("alice").await;
        c.send_text(
            r#"{"type":"join","room":"a","extra":{"deep":[1,2,{"x":null}]},"n":1e400,"id":1}"#,
        )
        .await;
        let (reply, _) = c.reply_for(&json!(1)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_eq!(reply["room"], "a");

        c.send_text(r#"{"type":"who","room":"x","room":"a","id":1,"id":2}"#)
            .await;
        let (reply, _) = c.reply_for(&json!(2)).await;
        assert_eq!(reply["room"], "a", "{reply}");
        assert_eq!(reply["members"], json!(["alice"]));
        // `since`/`epoch` null are "not given".
        c.send_text(r#"{"type":"join","room":"b","since":null,"epoch":null,"id":3}"#)
            .await;
        let (reply, _) = c.reply_for(&json!(3)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        assert_eq!(reply["complete"], true);
    })
}
