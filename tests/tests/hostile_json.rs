//! JSON edge cases from a member of the witness's room. Each gets the
//! right reply — an error code, or an ok — and the connection stays open:
//! nesting at the limit and over it, JSON that is not an object, huge
//! numbers where they are ignored and where they are not, duplicate keys
//! (the last one counts), raw control characters in strings (invalid JSON)
//! against their escapes (valid text, delivered verbatim), and names with
//! look-alike letters from other scripts.

use natter_tests::hostile::{Witness, WitnessOpts, settle};
use natter_tests::serde_json::{Value, json};
use natter_tests::{Client, Config, start};

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Err(&'static str),
}

/// `{"type":"who","room":"lobby","id":ID,"x":<depth-1 nested arrays>}`:
/// `depth` levels in all, the outer object being level 1.
fn nested_arrays(depth: usize, id: u64) -> String {
    let inner = depth - 1;
    format!(
        r#"{{"type":"who","room":"lobby","id":{id},"x":{}{}}}"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
}

/// The same with nested objects: `{"a":{"a":…{}…}}`.
fn nested_objects(depth: usize, id: u64) -> String {
    let inner = depth - 1;
    format!(
        r#"{{"type":"who","room":"lobby","id":{id},"x":{}{{}}{}}}"#,
        r#"{"a":"#.repeat(inner - 1),
        "}".repeat(inner - 1)
    )
}

/// A say with `text` spliced in raw (it must already be JSON string
/// content: escapes as the test wants them).
fn say_raw(text: &str, id: u64) -> String {
    format!(r#"{{"type":"say","room":"lobby","text":"{text}","id":{id}}}"#)
}

#[test]
fn json_edge_cases_get_the_right_reply_and_the_connection_stays_open() {
    natter_runtime::block_on(async {
        let mut config = Config::local();
        config.rate = 0;
        let server = start(config.clone()).await;
        let mut witness =
            Witness::start(&server.url(), WitnessOpts::new("wit", "lobby", &config)).await;
        witness.wait_said(3).await;
        let mut c: Client = server.client("jason").await;
        c.join("lobby").await;

        // (what, request text, the id its reply carries, the reply wanted,
        // for an accepted say: the text the room must receive)
        let null = Value::Null;
        let cases: Vec<(&str, String, Value, Want, Option<&str>)> = vec![
            ("127 levels of arrays", nested_arrays(127, 1), json!(1), Want::Ok, None),
            ("128 levels of arrays", nested_arrays(128, 2), null.clone(), Want::Err("bad_json"), None),
            ("1000 levels of arrays", nested_arrays(1000, 3), null.clone(), Want::Err("bad_json"), None),
            ("127 levels of objects", nested_objects(127, 4), json!(4), Want::Ok, None),
            ("128 levels of objects", nested_objects(128, 5), null.clone(), Want::Err("bad_json"), None),
            ("a top-level array", r#"[{"type":"rooms","id":6}]"#.into(), null.clone(), Want::Err("bad_request"), None),
            ("a top-level string", r#""{\"type\":\"rooms\"}""#.into(), null.clone(), Want::Err("bad_request"), None),
            ("a top-level number", "42".into(), null.clone(), Want::Err("bad_request"), None),
            ("a top-level null", "null".into(), null.clone(), Want::Err("bad_request"), None),
            ("an empty object", "{}".into(), null.clone(), Want::Err("bad_request"), None),
            (
                "huge numbers in unknown fields",
                r#"{"type":"rooms","id":8,"big":123456789012345678901234567890123456789,"exp":1e400,"tiny":-1e-400,"neg":-99999999999999999999999}"#.into(),
                json!(8),
                Want::Ok,
                None,
            ),
            ("a huge since", r#"{"type":"join","room":"lobby","since":123456789012345678901234567890,"id":9}"#.into(), json!(9), Want::Err("bad_request"), None),
            ("since 2^64", r#"{"type":"join","room":"lobby","since":18446744073709551616,"id":10}"#.into(), json!(10), Want::Err("bad_request"), None),
            ("since 1e400", r#"{"type":"join","room":"lobby","since":1e400,"id":11}"#.into(), json!(11), Want::Err("bad_request"), None),
            ("since -1", r#"{"type":"join","room":"lobby","since":-1,"id":12}"#.into(), json!(12), Want::Err("bad_request"), None),
            ("since 2^64-1", r#"{"type":"join","room":"lobby","since":18446744073709551615,"id":13}"#.into(), json!(13), Want::Ok, None),
            ("an id past 2^53-1", r#"{"type":"rooms","id":9007199254740992}"#.into(), null.clone(), Want::Err("bad_request"), None),
            ("the largest id", r#"{"type":"rooms","id":9007199254740991}"#.into(), json!(9007199254740991_u64), Want::Ok, None),
            ("duplicate room", r#"{"type":"who","room":"Not Valid","room":"lobby","id":14}"#.into(), json!(14), Want::Ok, None),
            ("duplicate type", r#"{"type":"say","type":"who","room":"lobby","id":15}"#.into(), json!(15), Want::Ok, None),
            ("duplicate id", r#"{"type":"rooms","id":"first","id":16}"#.into(), json!(16), Want::Ok, None),
            ("duplicate text", r#"{"type":"say","room":"lobby","text":"first","text":"second","id":17}"#.into(), json!(17), Want::Ok, Some("second")),
            ("a raw NUL in a string", say_raw("a\0b", 18), null.clone(), Want::Err("bad_json"), None),
            ("a raw U+0001 in a string", say_raw("a\u{1}b", 19), null.clone(), Want::Err("bad_json"), None),
            ("a raw U+001F in a string", say_raw("a\u{1f}b", 20), null.clone(), Want::Err("bad_json"), None),
            ("a raw newline in a string", say_raw("a\nb", 21), null.clone(), Want::Err("bad_json"), None),
            ("a raw NUL outside strings", "{\"type\":\"rooms\",\0\"id\":22}".into(), null.clone(), Want::Err("bad_json"), None),
            ("an escaped NUL", say_raw(r"a\u0000b", 23), json!(23), Want::Ok, Some("a\0b")),
            ("only an escaped NUL", say_raw(r"\u0000", 24), json!(24), Want::Ok, Some("\0")),
            ("escaped controls", say_raw(r"\u0001\u001f\t\r\n\b\f.", 25), json!(25), Want::Ok, Some("\u{1}\u{1f}\t\r\n\u{8}\u{c}.")),
            ("raw DEL and NEL", say_raw("del\u{7f}nel\u{85}", 26), json!(26), Want::Ok, Some("del\u{7f}nel\u{85}")),
            ("a lone surrogate escape", say_raw(r"\ud800", 27), null.clone(), Want::Err("bad_json"), None),
            ("a surrogate pair escape", say_raw(r"\ud83d\ude00", 28), json!(28), Want::Ok, Some("\u{1f600}")),
            ("escaped ASCII in a room", r#"{"type":"say","room":"lo\u0062by","text":"via escapes","id":29}"#.into(), json!(29), Want::Ok, Some("via escapes")),
            ("a Cyrillic a in a nick", r#"{"type":"nick","nick":"j\u0430son","id":30}"#.into(), json!(30), Want::Err("invalid_nick"), None),
            ("a raw Cyrillic a in a nick", "{\"type\":\"nick\",\"nick\":\"j\u{430}son\",\"id\":31}".into(), json!(31), Want::Err("invalid_nick"), None),
            ("fullwidth letters in a nick", "{\"type\":\"nick\",\"nick\":\"\u{ff4a}ason\",\"id\":32}".into(), json!(32), Want::Err("invalid_nick"), None),
            ("a Cyrillic a in a room", "{\"type\":\"join\",\"room\":\"lobby-\u{430}\",\"id\":33}".into(), json!(33), Want::Err("invalid_room"), None),
            ("a Cyrillic o in a say's room", "{\"type\":\"say\",\"room\":\"l\u{43e}bby\",\"text\":\"x\",\"id\":34}".into(), json!(34), Want::Err("invalid_room"), None),
            ("a Greek omicron in who", "{\"type\":\"who\",\"room\":\"l\u{3bf}bby\",\"id\":35}".into(), json!(35), Want::Err("invalid_room"), None),
            ("a Cyrillic dze in a whisper target", "{\"type\":\"whisper\",\"to\":\"wit-\u{455}\",\"text\":\"x\",\"id\":36}".into(), json!(36), Want::Err("invalid_nick"), None),
            ("an upper-case room", r#"{"type":"join","room":"Lobby","id":37}"#.into(), json!(37), Want::Err("invalid_room"), None),
        ];

        let mut said = Vec::new();
        for (what, text, id, want, delivered) in cases {
            c.send_text(&text).await;
            let (reply, _events) = c.reply_for(&id).await;
            match want {
                Want::Ok => assert_eq!(reply["type"], "ok", "{what}: {reply}"),
                Want::Err(code) => {
                    assert_eq!(reply["type"], "error", "{what}: {reply}");
                    assert_eq!(reply["code"], code, "{what}: {reply}");
                    assert!(reply["message"].is_string(), "{what}: {reply}");
                }
            }
            match what {
                "duplicate room" | "127 levels of arrays" | "127 levels of objects" => {
                    assert_eq!(reply["room"], "lobby", "{what}: {reply}");
                    assert_eq!(
                        reply["members"],
                        json!(["jason", "wit-l", "wit-s"]),
                        "{what}"
                    );
                }
                "duplicate type" => assert!(reply["members"].is_array(), "{what}: {reply}"),
                "since 2^64-1" => {
                    assert_eq!(reply["complete"], false, "{what}: {reply}");
                    assert_eq!(reply["room"], "lobby", "{what}: {reply}");
                }
                _ => {}
            }
            if let Some(t) = delivered {
                said.push(t.to_owned());
            }
            // Still open and served after every one of them.
            let (reply, _) = c.request(json!({"type": "rooms"})).await;
            assert_eq!(reply["type"], "ok", "after {what}: {reply}");
        }
        let who = c.ok(json!({"type": "who", "room": "lobby"})).await;
        assert_eq!(who["members"], json!(["jason", "wit-l", "wit-s"]));

        let report = witness.finish().await;
        assert!(report.said >= 20, "{}", report.said);
        // Accepted texts reached the others verbatim, in order.
        assert_eq!(report.texts_from("jason"), said);
        // Joining again (since 2^64-1) sent no presence.
        assert_eq!(report.presence_of("jason"), ["join"]);
        c.close().await;
        let stats = settle(&server, 2, 2).await;
        assert_eq!(stats.registry.rooms, 1, "{stats:?}");
        report.close().await;
        server.assert_idle().await;
    })
}
