//! Every reachable error code, with the id echoed where it can be read, and
//! the connection still usable afterwards (`internal` is not reachable).

use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, TestServer, start};

/// Sends raw text and returns the (code, id) of the error reply it gets.
async fn error_for(c: &mut Client, text: &str) -> (String, Value) {
    c.send_text(text).await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "error", "{text:?} got {reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {reply}"
    );
    (
        reply["code"].as_str().unwrap().to_owned(),
        reply["id"].clone(),
    )
}

async fn unlimited() -> TestServer {
    let mut config = Config::local();
    config.rate = 0;
    start(config).await
}

/// `{"type":"rooms","x":[[...]]}` with the outer object at level 1.
fn nested(levels: usize) -> String {
    format!(
        r#"{{"type":"rooms","id":1,"x":{}{}}}"#,
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

#[test]
fn bad_json() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let mut c = server.client("alice").await;
        let deep_object = format!(
            r#"{{"type":"rooms","x":{}1{}}}"#,
            r#"{"a":"#.repeat(127),
            "}".repeat(127)
        );
        for text in [
            "not json",
            "",
            "{",
            r#"{"type":"rooms","id":1"#,
            r#"{"type":"rooms",}"#,
            r#"{"type":'rooms'}"#,
            r#"{"type":"rooms","id":1} trailing"#,
            r#"{"type":"rooms","id":1,"x":"\ud800"}"#,
            r#"{"type":"rooms","id":1,"x":"\udc00"}"#,
            r#"{"type":"rooms","id":1,"x":"\ud83d\u0041"}"#,
            r#"{"type":"say","room":"a","text":"\ud83d","id":"s"}"#,
            &nested(128),
            &nested(400),
            &deep_object,
        ] {
            let (code, id) = error_for(&mut c, text).await;
            assert_eq!(code, "bad_json", "for {text:?}");
            assert_eq!(id, Value::Null, "for {text:?}");
        }
        // 127 levels are read; a valid surrogate pair is fine.
        c.send_text(&nested(127)).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "ok", "127 levels: {reply}");
        assert_eq!(reply["id"], 1);
        c.join("a").await;
        let (reply, _) = c
            .request(json!({"type": "say", "room": "a", "text": "\u{1F600}", "id": 2}))
            .await;
        assert_eq!(reply["type"], "ok");
        c.send_text(r#"{"type":"say","room":"a","text":"\ud83d\ude00","id":3}"#)
            .await;
        let (reply, events) = c.reply_for(&json!(3)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
        let echoed: Vec<_> = events.iter().filter(|e| e["seq"] == 2).collect();
        if let Some(m) = echoed.first() {
            assert_eq!(m["text"], "\u{1F600}");
        }
    })
}

#[test]
fn bad_request() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let mut c = server.client("alice").await;
        // Valid JSON that is not an object: no id can be read.
        for text in ["[1,2]", "\"rooms\"", "5", "null", "true", "[]"] {
            let (code, id) = error_for(&mut c, text).await;
            assert_eq!(
                (code.as_str(), id),
                ("bad_request", Value::Null),
                "for {text}"
            );
        }
        // Objects of the wrong shape keep their (valid) id.
        for (text, id) in [
            (r#"{}"#, Value::Null),
            (r#"{"id":1}"#, json!(1)),
            (r#"{"type":null,"id":2}"#, json!(2)),
            (r#"{"type":"dance","id":"x"}"#, json!("x")),
            (r#"{"type":"ROOMS","id":3}"#, json!(3)),
            (r#"{"type":5,"id":4}"#, json!(4)),
            (r#"{"type":["rooms"],"id":5}"#, json!(5)),
            (r#"{"type":"nick","id":6}"#, json!(6)),
            (r#"{"type":"nick","nick":7,"id":7}"#, json!(7)),
            (r#"{"type":"join","id":8}"#, json!(8)),
            (r#"{"type":"join","room":["a"],"id":9}"#, json!(9)),
            (
                r#"{"type":"join","room":"a","since":"3","id":10}"#,
                json!(10),
            ),
            (
                r#"{"type":"join","room":"a","since":-1,"id":11}"#,
                json!(11),
            ),
            (
                r#"{"type":"join","room":"a","since":1.5,"id":12}"#,
                json!(12),
            ),
            (r#"{"type":"join","room":"a","epoch":5,"id":13}"#, json!(13)),
            (r#"{"type":"leave","id":14}"#, json!(14)),
            (r#"{"type":"say","room":"a","id":15}"#, json!(15)),
            (r#"{"type":"say","text":"hi","id":16}"#, json!(16)),
            (r#"{"type":"say","room":"a","text":5,"id":17}"#, json!(17)),
            (
                r#"{"type":"say","room":null,"text":"x","id":18}"#,
                json!(18),
            ),
            (r#"{"type":"whisper","to":"bob","id":19}"#, json!(19)),
            (r#"{"type":"whisper","text":"x","id":20}"#, json!(20)),
            (r#"{"type":"whisper","to":1,"text":"x","id":21}"#, json!(21)),
            (r#"{"type":"who","id":22}"#, json!(22)),
            (r#"{"type":"who","room":{},"id":23}"#, json!(23)),
        ] {
            let (code, got) = error_for(&mut c, text).await;
            assert_eq!(code, "bad_request", "for {text}");
            assert_eq!(got, id, "for {text}");
        }
        // The connection is still fine.
        c.ok(json!({"type": "rooms"})).await;
    })
}

#[test]
fn invalid_nick() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let (mut c, welcome) = Client::connect(&server.url()).await;
        let guest = welcome["nick"].clone();
        let long = "a".repeat(33);
        for nick in [
            "",
            "al ice",
            "al.ice",
            "a/b",
            "\u{0430}lice",
            "émile",
            long.as_str(),
        ] {
            let (reply, _) = c
                .request(json!({"type": "nick", "nick": nick, "id": "n"}))
                .await;
            assert_eq!(reply["type"], "error", "nick {nick:?}: {reply}");
            assert_eq!(reply["code"], "invalid_nick", "nick {nick:?}: {reply}");
            assert_eq!(reply["id"], "n");
        }
        // 32 characters is fine; the nick did not change on the errors.
        c.join("r").await;
        let who = c.ok(json!({"type": "who", "room": "r"})).await;
        assert_eq!(who["members"], json!([guest]));
        let ok = c.ok(json!({"type": "nick", "nick": "a".repeat(32)})).await;
        assert_eq!(ok["nick"], "a".repeat(32));
        // A malformed whisper target is invalid_nick, not no_such_user.
        assert_eq!(
            c.err(json!({"type": "whisper", "to": "no body", "text": "x"}))
                .await,
            "invalid_nick"
        );
        assert_eq!(
            c.err(json!({"type": "whisper", "to": "", "text": "x"}))
                .await,
            "invalid_nick"
        );
    })
}

#[test]
fn nick_taken_is_case_insensitive() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let _alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        for nick in ["alice", "ALICE", "Alice"] {
            let (reply, _) = bob
                .request(json!({"type": "nick", "nick": nick, "id": 1}))
                .await;
            assert_eq!(reply["code"], "nick_taken", "nick {nick}: {reply}");
            assert_eq!(reply["id"], 1);
        }
        // Renaming to one's own nick (another case) is not "taken".
        let ok = bob.ok(json!({"type": "nick", "nick": "BOB"})).await;
        assert_eq!(ok["nick"], "BOB");
    })
}

#[test]
fn invalid_room() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let mut c = server.client("alice").await;
        let long = "r".repeat(65);
        for room in [
            "Lobby",
            "LOBBY",
            "",
            "a b",
            "a/b",
            "caf\u{e9}",
            long.as_str(),
        ] {
            for req in [
                json!({"type": "join", "room": room, "id": 1}),
                json!({"type": "leave", "room": room, "id": 1}),
                json!({"type": "say", "room": room, "text": "x", "id": 1}),
                json!({"type": "who", "room": room, "id": 1}),
            ] {
                assert_eq!(c.err(req.clone()).await, "invalid_room", "{req}");
            }
        }
        // Upper case is not folded: "lobby" was never joined.
        let ok = c.ok(json!({"type": "rooms"})).await;
        assert_eq!(ok["rooms"], json!([]));
        let ok = c.join(&"r".repeat(64)).await;
        assert_eq!(ok["room"], "r".repeat(64));
        c.join("a.b-c_9").await;
    })
}

#[test]
fn not_member_for_say_and_leave() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let mut alice = server.client("alice").await;
        let mut bob = server.client("bob").await;
        bob.join("lobby").await;
        let (reply, _) = alice
            .request(json!({"type": "say", "room": "lobby", "text": "hi", "id": "s"}))
            .await;
        assert_eq!(
            (&reply["type"], &reply["code"], &reply["id"]),
            (&json!("error"), &json!("not_member"), &json!("s"))
        );
        assert_eq!(
            alice.err(json!({"type": "leave", "room": "lobby"})).await,
            "not_member"
        );
        assert_eq!(
            alice.err(json!({"type": "leave", "room": "never"})).await,
            "not_member"
        );
        // Nothing reached bob from alice's failed say.
        let (_, events) = bob.request(json!({"type": "who", "room": "lobby"})).await;
        assert!(events.is_empty(), "{events:?}");
        // Leaving twice: the second is not_member.
        alice.join("lobby").await;
        alice.ok(json!({"type": "leave", "room": "lobby"})).await;
        assert_eq!(
            alice.err(json!({"type": "leave", "room": "lobby"})).await,
            "not_member"
        );
    })
}

#[test]
fn no_such_user() {
    natter_runtime::block_on(async {
        let server = unlimited().await;
        let mut alice = server.client("alice").await;
        let (reply, _) = alice
            .request(json!({"type": "whisper", "to": "ghost", "text": "boo", "id": 3}))
            .await;
        assert_eq!(reply["code"], "no_such_user", "{reply}");
        assert_eq!(reply["id"], 3);
        // A nick freed by a disconnect is unknown again.
        let bob = server.client("bob").await;
        alice
            .ok(json!({"type": "whisper", "to": "bob", "text": "hi"}))
            .await;
        bob.close().await;
        server
            .wait_stats("bob is gone", |s| s.registry.users == 1)
            .await;
        assert_eq!(
            alice
                .err(json!({"type": "whisper", "to": "bob", "text": "hi"}))
                .await,
            "no_such_user"
        );
    })
}

#[test]
fn text_too_long_and_empty_text() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.max_text_bytes = 16;
        let server = start(config).await;
        let mut alice = server.client("alice").await;
        let _bob = server.client("bob").await;
        alice.join("a").await;
        let exact = "x".repeat(16);
        let over = "x".repeat(17);
        // 6 two-byte characters plus 5 bytes = 17 bytes in 11 characters.
        let over_multibyte = format!("{}abcde", "\u{e9}".repeat(6));
        let spaces_over = " ".repeat(17);
        for text in [over.as_str(), over_multibyte.as_str(), spaces_over.as_str()] {
            for req in [
                json!({"type": "say", "room": "a", "text": text}),
                json!({"type": "whisper", "to": "bob", "text": text}),
            ] {
                assert_eq!(alice.err(req.clone()).await, "text_too_long", "{req}");
            }
        }
        for text in ["", " ", "  \t\r\n ", "\u{3000}\u{2003}\u{a0}\u{85}"] {
            for req in [
                json!({"type": "say", "room": "a", "text": text}),
                json!({"type": "whisper", "to": "bob", "text": text}),
            ] {
                assert_eq!(alice.err(req.clone()).await, "empty_text", "{req}");
            }
        }
        // The limits are inclusive; one visible character suffices.
        assert_eq!(alice.say("a", &exact).await, 1);
        assert_eq!(alice.say("a", " . ").await, 2);
        alice
            .ok(json!({"type": "whisper", "to": "bob", "text": exact}))
            .await;
        // Nothing failed was numbered.
        let ok = alice.ok(json!({"type": "join", "room": "a"})).await;
        assert_eq!(ok["seq"], 2);
    })
}

#[test]
fn too_many_rooms() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        config.max_rooms_per_connection = 2;
        let server = start(config).await;
        let mut c = server.client("alice").await;
        c.join("a").await;
        c.join("b").await;
        let (reply, _) = c
            .request(json!({"type": "join", "room": "c", "id": 7}))
            .await;
        assert_eq!(reply["code"], "too_many_rooms", "{reply}");
        assert_eq!(reply["id"], 7);
        // Not joined; re-joining a room already joined still works.
        let who = c.ok(json!({"type": "who", "room": "c"})).await;
        assert_eq!(who["members"], json!([]));
        c.join("a").await;
        // After leaving one, there is room for another.
        c.ok(json!({"type": "leave", "room": "b"})).await;
        c.join("c").await;
        let rooms = c.ok(json!({"type": "rooms"})).await;
        assert_eq!(
            rooms["rooms"],
            json!([{"room": "a", "members": 1}, {"room": "c", "members": 1}])
        );
        // The limit is per connection.
        let mut bob = server.client("bob").await;
        bob.join("x").await;
        bob.join("y").await;
    })
}

#[test]
fn rate_limited_then_flooding_closes_1008() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 1;
        config.burst = 2;
        let server = start(config).await;
        let (mut c, welcome) = Client::connect(&server.url()).await;
        assert_eq!(welcome["limits"]["rate_per_sec"], 1);
        assert_eq!(welcome["limits"]["burst"], 2);
        // The burst: two requests are served.
        c.ok(json!({"type": "rooms", "id": 1})).await;
        c.ok(json!({"type": "rooms", "id": 2})).await;
        // Over the rate, every message gets rate_limited (bad ones too,
        // checked before anything else), with its id echoed when readable.
        c.send_text("not json").await;
        let reply = c.recv().await;
        if reply["type"] == "error" && reply["code"] == "rate_limited" {
            assert_eq!(reply["id"], Value::Null);
        }
        let mut rate_limited = usize::from(reply["code"] == "rate_limited");
        for i in 0..80 {
            c.feed_raw(async_tungstenite::tungstenite::Message::text(
                json!({"type": "rooms", "id": 100 + i}).to_string(),
            ))
            .await;
        }
        c.flush().await;
        let (code, reason, frames) = c.read_until_close().await;
        let mut last_id = 99;
        for f in &frames {
            let id = f["id"].as_i64().unwrap_or_else(|| panic!("{f}"));
            assert!(id > last_id, "replies out of order: {f}");
            last_id = id;
            match (f["type"].as_str(), f["code"].as_str()) {
                (Some("error"), Some("rate_limited")) => rate_limited += 1,
                // A token may have come back while the test ran.
                (Some("ok"), None) => {}
                _ => panic!("unexpected frame {f}"),
            }
        }
        assert_eq!(
            rate_limited, 50,
            "close after exactly 50 rate_limited errors; frames: {frames:?}"
        );
        assert_eq!((code, reason.as_str()), (1008, "flooding"));
        drop(c);
        server.assert_idle().await;
    })
}
