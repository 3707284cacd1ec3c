//! Contract tests for `natter-protocol`: the frames of the contract's
//! example, every reply shape, the decisions the contract leaves to the
//! project, and property tests that no input can make the decoder panic or
//! pick the wrong error code.

use natter_protocol::id::MAX_INT_ID;
use natter_protocol::names::{validate_nick, validate_room, validate_text};
use natter_protocol::{
    ChatMessage, DecodeError, Envelope, ErrorCode, ErrorReply, Id, JoinOk, Limits, OkReply,
    Presence, PresenceKind, Reply, Request, RoomCount, ServerMessage, Welcome, WhisperEvent,
    decode_request, encode_error, encode_join_ok_spliced, encode_ok,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Parses a server frame, re-serializes it, parses that again and checks
/// that nothing was lost or invented on the way.
fn server_round_trip(text: &str) -> ServerMessage {
    let parsed: ServerMessage =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a ServerMessage ({e}): {text}"));
    let again_text = serde_json::to_string(&parsed).unwrap();
    assert_eq!(
        again_text,
        parsed.to_json(),
        "to_json differs from serde_json"
    );
    let again: ServerMessage = serde_json::from_str(&again_text)
        .unwrap_or_else(|e| panic!("re-encoded frame does not parse ({e}): {again_text}"));
    assert_eq!(
        again, parsed,
        "round trip changed the value: {text} -> {again_text}"
    );
    assert_eq!(
        json_value(&again_text),
        json_value(text),
        "re-encoded JSON differs field by field: {text} -> {again_text}"
    );
    parsed
}

/// Decodes a request, re-encodes it and checks the decode is stable.
fn request_round_trip(text: &str) -> Envelope {
    let env = decode_request(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let again_text = env.to_json();
    let again = decode_request(&again_text).unwrap_or_else(|e| panic!("{again_text}: {e}"));
    assert_eq!(again, env, "request round trip: {text} -> {again_text}");
    env
}

fn err(text: &str) -> DecodeError {
    match decode_request(text) {
        Ok(env) => panic!("expected an error for {text}, got {env:?}"),
        Err(e) => e,
    }
}

fn code(text: &str) -> ErrorCode {
    err(text).code
}

fn rooms_with_id(id: Option<Id>) -> Envelope {
    Envelope {
        request: Request::Rooms,
        id,
    }
}

/// A `who` request with `levels` levels of nesting in total (the outer
/// object being level 1) in `field`, written last so that it wins.
fn nested_in_field(field: &str, levels: usize) -> String {
    format!(
        r#"{{"type":"who","room":"a","{field}":{}{}}}"#,
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

// ---------------------------------------------------------------------------
// The contract's example, frame by frame
// ---------------------------------------------------------------------------

const EX_WELCOME: &str = r#"{"type":"welcome","nick":"alice","protocol":1,"server":"natter 0.1.0","limits":{"max_message_bytes":65536,"max_text_bytes":4096,"rate_per_sec":20,"burst":40,"max_rooms_per_connection":32}}"#;
const EX_JOIN: &str = r#"{"type":"join","room":"lobby","id":1}"#;
const EX_PRESENCE: &str = r#"{"type":"presence","room":"lobby","event":"join","nick":"alice"}"#;
const EX_JOIN_OK: &str = r#"{"type":"ok","id":1,"room":"lobby","members":["alice"],"seq":0,"epoch":"k3v9","history":[],"complete":true}"#;
const EX_SAY: &str = r#"{"type":"say","room":"lobby","text":"hello","id":"m1"}"#;
const EX_MESSAGE: &str =
    r#"{"type":"message","room":"lobby","seq":1,"from":"alice","text":"hello","ts":1795300000123}"#;
const EX_SAY_OK: &str = r#"{"type":"ok","id":"m1","room":"lobby","seq":1}"#;
const EX_SAY_NOWHERE: &str = r#"{"type":"say","room":"nowhere","text":"hi","id":2}"#;
const EX_ERROR: &str =
    r#"{"type":"error","id":2,"code":"not_member","message":"you are not in room 'nowhere'"}"#;

fn example_join_ok() -> JoinOk {
    JoinOk {
        room: "lobby".into(),
        members: vec!["alice".into()],
        seq: 0,
        epoch: "k3v9".into(),
        history: vec![],
        complete: true,
    }
}

#[test]
fn example_requests_decode_to_the_expected_envelopes() {
    let cases = [
        (
            EX_JOIN,
            Envelope {
                request: Request::Join {
                    room: "lobby".into(),
                    since: None,
                    epoch: None,
                },
                id: Some(Id::Int(1)),
            },
        ),
        (
            EX_SAY,
            Envelope {
                request: Request::Say {
                    room: "lobby".into(),
                    text: "hello".into(),
                },
                id: Some(Id::Str("m1".into())),
            },
        ),
        (
            EX_SAY_NOWHERE,
            Envelope {
                request: Request::Say {
                    room: "nowhere".into(),
                    text: "hi".into(),
                },
                id: Some(Id::Int(2)),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(request_round_trip(text), expected, "{text}");
        // The encoder writes the same fields the example shows.
        assert_eq!(json_value(&expected.to_json()), json_value(text), "{text}");
    }
}

#[test]
fn example_server_frames_round_trip() {
    let cases = [
        (
            EX_WELCOME,
            ServerMessage::Welcome(Welcome {
                nick: "alice".into(),
                protocol: natter_protocol::PROTOCOL_VERSION,
                server: "natter 0.1.0".into(),
                limits: Limits::default(),
                nick_error: None,
            }),
        ),
        (
            EX_PRESENCE,
            ServerMessage::Presence(Presence {
                room: "lobby".into(),
                event: PresenceKind::Join,
                nick: "alice".into(),
                old: None,
            }),
        ),
        (
            EX_JOIN_OK,
            ServerMessage::Ok(OkReply {
                id: Some(Id::Int(1)),
                reply: Reply::Join(example_join_ok()),
            }),
        ),
        (
            EX_MESSAGE,
            ServerMessage::Message(ChatMessage {
                room: "lobby".into(),
                seq: 1,
                from: "alice".into(),
                text: "hello".into(),
                ts: 1795300000123,
            }),
        ),
        (
            EX_SAY_OK,
            ServerMessage::Ok(OkReply {
                id: Some(Id::Str("m1".into())),
                reply: Reply::Say {
                    room: "lobby".into(),
                    seq: 1,
                },
            }),
        ),
        (
            EX_ERROR,
            ServerMessage::Error(ErrorReply {
                id: Some(Id::Int(2)),
                code: ErrorCode::NotMember,
                message: "you are not in room 'nowhere'".into(),
            }),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(server_round_trip(text), expected, "{text}");
        // And the typed value encodes to exactly the example's fields.
        assert_eq!(json_value(&expected.to_json()), json_value(text), "{text}");
    }
}

#[test]
fn encoders_produce_the_example_replies() {
    let join_ok = encode_ok(Some(&Id::Int(1)), &example_join_ok());
    assert_eq!(json_value(&join_ok), json_value(EX_JOIN_OK));
    let say_ok = encode_ok(
        Some(&Id::from("m1")),
        &Reply::Say {
            room: "lobby".into(),
            seq: 1,
        },
    );
    assert_eq!(json_value(&say_ok), json_value(EX_SAY_OK));
    let error = encode_error(
        Some(&Id::Int(2)),
        ErrorCode::NotMember,
        "you are not in room 'nowhere'",
    );
    assert_eq!(json_value(&error), json_value(EX_ERROR));
    // No id: the reply says `"id":null`, it does not leave the field out.
    let anonymous = encode_error(None, ErrorCode::BadJson, "x");
    assert_eq!(json_value(&anonymous)["id"], Value::Null);
    assert!(
        json_value(&anonymous)
            .as_object()
            .unwrap()
            .contains_key("id")
    );
    // The server may embed already-encoded history (JoinOk<RawValue>).
    let bare = r#"{"room":"lobby","seq":1,"from":"alice","text":"hello","ts":1795300000123}"#;
    for (element, keeps_every_field) in [(bare, true), (EX_MESSAGE, false)] {
        let raw = serde_json::value::RawValue::from_string(element.to_string()).unwrap();
        let embedded = JoinOk {
            room: "lobby".into(),
            members: vec!["alice".into()],
            seq: 1,
            epoch: "k3v9".into(),
            history: vec![raw],
            complete: true,
        };
        let text = encode_ok(Some(&Id::Int(3)), &embedded);
        let expected = ServerMessage::Ok(OkReply {
            id: Some(Id::Int(3)),
            reply: Reply::Join(JoinOk {
                seq: 1,
                history: vec![msg("lobby", 0, "alice", "hello")]
                    .into_iter()
                    .map(|m| ChatMessage {
                        seq: 1,
                        ts: 1795300000123,
                        ..m
                    })
                    .collect(),
                ..example_join_ok()
            }),
        });
        if keeps_every_field {
            assert_eq!(server_round_trip(&text), expected);
        } else {
            // A history element written as a whole `message` event (with
            // its "type") parses too; the typed value drops the "type".
            let parsed: ServerMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed, expected);
        }
    }
}

/// The spliced `join` reply (history copied in as encoded text) is byte for
/// byte what serde writes for the same reply with the history embedded as
/// raw JSON, and reads back as the typed reply.
fn assert_spliced_join_matches(
    id: Option<Id>,
    members: Vec<String>,
    texts: Vec<String>,
    complete: bool,
) {
    let history: Vec<ChatMessage> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| msg("lobby", i as u64 + 1, "alice", text))
        .collect();
    let encoded: Vec<String> = history
        .iter()
        .map(|m| ServerMessage::Message(m.clone()).to_json())
        .collect();
    let seq = texts.len() as u64;
    let reply = |history: Vec<ChatMessage>| JoinOk {
        history,
        ..with_history(&members, seq, complete, vec![])
    };
    fn with_history<H>(members: &[String], seq: u64, complete: bool, history: Vec<H>) -> JoinOk<H> {
        JoinOk {
            room: "lobby".into(),
            members: members.to_vec(),
            seq,
            epoch: "e\"1".into(),
            history,
            complete,
        }
    }
    let raw: Vec<Box<serde_json::value::RawValue>> = encoded
        .iter()
        .map(|e| serde_json::value::RawValue::from_string(e.clone()).unwrap())
        .collect();
    let spliced = encode_join_ok_spliced(
        id.as_ref(),
        &with_history(&members, seq, complete, encoded.clone()),
    );
    let serde = encode_ok(id.as_ref(), &with_history(&members, seq, complete, raw));
    assert_eq!(spliced, serde);
    let parsed: ServerMessage = serde_json::from_str(&spliced).unwrap();
    let expected = ServerMessage::Ok(OkReply {
        id,
        reply: Reply::Join(reply(history)),
    });
    assert_eq!(parsed, expected);
}

#[test]
fn spliced_join_reply_is_the_serde_reply() {
    assert_spliced_join_matches(None, vec![], vec![], true);
    assert_spliced_join_matches(
        Some(Id::Int(-7)),
        vec!["a".into()],
        vec!["hi".into()],
        false,
    );
    assert_spliced_join_matches(
        Some(Id::from("x\"y\\}")),
        vec!["Bob".into(), "alice".into()],
        vec![
            "\u{1}".repeat(4096),
            "\"".repeat(10),
            "],\"complete\":true}".into(),
        ],
        true,
    );
}

proptest! {
    #[test]
    fn spliced_join_reply_is_the_serde_reply_for_any_text(
        id in proptest::option::of(prop_oneof![any::<i64>().prop_map(Id::Int), ".{0,8}".prop_map(Id::Str)]),
        members in proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 0..4),
        texts in proptest::collection::vec(any::<String>(), 0..5),
        complete in any::<bool>(),
    ) {
        assert_spliced_join_matches(id, members, texts, complete);
    }
}

// ---------------------------------------------------------------------------
// Every ok-reply shape and every event
// ---------------------------------------------------------------------------

fn msg(room: &str, seq: u64, from: &str, text: &str) -> ChatMessage {
    ChatMessage {
        room: room.into(),
        seq,
        from: from.into(),
        text: text.into(),
        ts: 1795300000000 + seq,
    }
}

fn every_reply_shape() -> Vec<(&'static str, Reply, Value)> {
    vec![
        (
            "join",
            Reply::Join(JoinOk {
                room: "lobby".into(),
                members: vec!["Bob".into(), "alice".into()],
                seq: 42,
                epoch: "e-1".into(),
                history: vec![
                    msg("lobby", 41, "alice", "a"),
                    msg("lobby", 42, "Bob", "b\n\"q\""),
                ],
                complete: false,
            }),
            json!({"room":"lobby","members":["Bob","alice"],"seq":42,"epoch":"e-1",
                   "history":[
                     {"room":"lobby","seq":41,"from":"alice","text":"a","ts":1795300000041u64},
                     {"room":"lobby","seq":42,"from":"Bob","text":"b\n\"q\"","ts":1795300000042u64}],
                   "complete":false}),
        ),
        (
            "join (empty)",
            Reply::Join(JoinOk {
                room: "a".into(),
                members: vec![],
                seq: 0,
                epoch: "".into(),
                history: vec![],
                complete: true,
            }),
            json!({"room":"a","members":[],"seq":0,"epoch":"","history":[],"complete":true}),
        ),
        (
            "say",
            Reply::Say {
                room: "lobby".into(),
                seq: u64::MAX,
            },
            json!({"room":"lobby","seq":u64::MAX}),
        ),
        (
            "who",
            Reply::Who {
                room: "lobby".into(),
                members: vec!["alice".into(), "bob".into()],
            },
            json!({"room":"lobby","members":["alice","bob"]}),
        ),
        (
            "who (no members)",
            Reply::Who {
                room: "empty".into(),
                members: vec![],
            },
            json!({"room":"empty","members":[]}),
        ),
        (
            "rooms",
            Reply::Rooms {
                rooms: vec![
                    RoomCount {
                        room: "a".into(),
                        members: 1,
                    },
                    RoomCount {
                        room: "b".into(),
                        members: 10000,
                    },
                ],
            },
            json!({"rooms":[{"room":"a","members":1},{"room":"b","members":10000}]}),
        ),
        (
            "rooms (none)",
            Reply::Rooms { rooms: vec![] },
            json!({"rooms":[]}),
        ),
        (
            "nick",
            Reply::Nick {
                nick: "Alice".into(),
            },
            json!({"nick":"Alice"}),
        ),
        (
            "whisper",
            Reply::Whisper { to: "bob".into() },
            json!({"to":"bob"}),
        ),
        (
            "leave",
            Reply::Leave {
                room: "lobby".into(),
            },
            json!({"room":"lobby"}),
        ),
    ]
}

fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Join(_) => "join",
        Reply::Say { .. } => "say",
        Reply::Who { .. } => "who",
        Reply::Rooms { .. } => "rooms",
        Reply::Nick { .. } => "nick",
        Reply::Whisper { .. } => "whisper",
        Reply::Leave { .. } => "leave",
    }
}

#[test]
fn every_ok_reply_shape_round_trips() {
    let ids = [
        None,
        Some(Id::Int(0)),
        Some(Id::Int(-MAX_INT_ID)),
        Some(Id::Int(MAX_INT_ID)),
        Some(Id::from("m1")),
        Some(Id::from("")),
        Some(Id::from("7")),
    ];
    for (name, reply, body) in every_reply_shape() {
        for id in &ids {
            let frame = ServerMessage::Ok(OkReply {
                id: id.clone(),
                reply: reply.clone(),
            });
            let text = frame.to_json();
            assert_eq!(server_round_trip(&text), frame, "{name}: {text}");

            // The wire form: type, id (null when none), then the body fields.
            let mut expected = body.as_object().unwrap().clone();
            expected.insert("type".into(), json!("ok"));
            expected.insert("id".into(), serde_json::to_value(id).unwrap());
            assert_eq!(json_value(&text), Value::Object(expected), "{name}");

            // encode_ok (what the server uses) writes the same frame.
            assert_eq!(
                json_value(&encode_ok(id.as_ref(), &reply)),
                json_value(&text),
                "{name}"
            );
        }
    }
}

#[test]
fn untagged_reply_decodes_to_the_right_variant() {
    for (name, reply, body) in every_reply_shape() {
        let kind = reply_kind(&reply);
        assert!(name.starts_with(kind), "{name} vs {kind}");
        // The bare body, as a Value and as text.
        let from_value: Reply = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(reply_kind(&from_value), kind, "{name}: {body}");
        assert_eq!(from_value, reply, "{name}");
        let from_text: Reply = serde_json::from_str(&body.to_string()).unwrap();
        assert_eq!(from_text, reply, "{name}");
        // Inside an ok frame, written by hand in an unusual field order.
        let mut fields: Vec<(String, Value)> =
            body.as_object().unwrap().clone().into_iter().collect();
        fields.reverse();
        let mut text = String::from("{");
        for (k, v) in &fields {
            text.push_str(&format!("{}:{},", json!(k), v));
        }
        text.push_str(r#""id":"x","type":"ok"}"#);
        match server_round_trip(&text) {
            ServerMessage::Ok(ok) => {
                assert_eq!(ok.id, Some(Id::from("x")));
                assert_eq!(ok.reply, reply, "{name}: {text}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn every_event_round_trips() {
    let frames = [
        r#"{"type":"welcome","nick":"guest-1","protocol":1,"server":"natter 0.1.0","limits":{"max_message_bytes":1,"max_text_bytes":2,"rate_per_sec":0,"burst":0,"max_rooms_per_connection":3},"nick_error":"nick_taken"}"#,
        r#"{"type":"welcome","nick":"guest-2","protocol":1,"server":"s","limits":{"max_message_bytes":65536,"max_text_bytes":4096,"rate_per_sec":20,"burst":40,"max_rooms_per_connection":32},"nick_error":"invalid_nick"}"#,
        r#"{"type":"message","room":"r","seq":18446744073709551615,"from":"bob","text":"\u0000\t \u2028 \ud83d\ude00 é","ts":0}"#,
        r#"{"type":"presence","room":"lobby","event":"leave","nick":"bob"}"#,
        r#"{"type":"presence","room":"lobby","event":"rename","nick":"Bob","old":"bob"}"#,
        r#"{"type":"whisper","from":"bob","text":"psst","ts":1795300000123}"#,
        r#"{"type":"shutdown","reason":"server shutdown"}"#,
        r#"{"type":"error","id":null,"code":"bad_json","message":"invalid JSON"}"#,
        r#"{"type":"error","id":"abc","code":"rate_limited","message":"slow down"}"#,
        r#"{"type":"ok","id":null,"nick":"alice"}"#,
    ];
    for text in frames {
        server_round_trip(text);
    }
    let rename = server_round_trip(frames[4]);
    assert_eq!(
        rename,
        ServerMessage::Presence(Presence {
            room: "lobby".into(),
            event: PresenceKind::Rename,
            nick: "Bob".into(),
            old: Some("bob".into()),
        })
    );
    match server_round_trip(frames[0]) {
        ServerMessage::Welcome(w) => assert_eq!(w.nick_error, Some(ErrorCode::NickTaken)),
        other => panic!("{other:?}"),
    }
    // Every error code survives a trip through an error frame.
    for code in [
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::InvalidNick,
        ErrorCode::NickTaken,
        ErrorCode::InvalidRoom,
        ErrorCode::NotMember,
        ErrorCode::NoSuchUser,
        ErrorCode::TextTooLong,
        ErrorCode::EmptyText,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ] {
        let text = encode_error(Some(&Id::Int(5)), code, "m");
        assert_eq!(json_value(&text)["code"], json!(code.as_str()));
        assert_eq!(code.to_string(), code.as_str());
        match server_round_trip(&text) {
            ServerMessage::Error(e) => assert_eq!(e.code, code),
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Request decoding: every type, and the decisions where the contract is silent
// ---------------------------------------------------------------------------

#[test]
fn every_request_type_decodes() {
    let cases = [
        (
            r#"{"type":"nick","nick":"alice"}"#,
            Request::Nick {
                nick: "alice".into(),
            },
        ),
        (
            r#"{"type":"join","room":"a","since":5,"epoch":"x"}"#,
            Request::Join {
                room: "a".into(),
                since: Some(5),
                epoch: Some("x".into()),
            },
        ),
        (
            r#"{"type":"join","room":"a","since":0}"#,
            Request::Join {
                room: "a".into(),
                since: Some(0),
                epoch: None,
            },
        ),
        (
            r#"{"type":"leave","room":"a"}"#,
            Request::Leave { room: "a".into() },
        ),
        (
            r#"{"type":"say","room":"a","text":"hi"}"#,
            Request::Say {
                room: "a".into(),
                text: "hi".into(),
            },
        ),
        (
            r#"{"type":"whisper","to":"bob","text":"hi"}"#,
            Request::Whisper {
                to: "bob".into(),
                text: "hi".into(),
            },
        ),
        (r#"{"type":"rooms"}"#, Request::Rooms),
        (
            r#"{"type":"who","room":"a"}"#,
            Request::Who { room: "a".into() },
        ),
    ];
    for (text, request) in cases {
        let kind = request.kind();
        assert_eq!(json_value(text)["type"], json!(kind));
        let env = request_round_trip(text);
        assert_eq!(env, Envelope { request, id: None }, "{text}");
    }
}

#[test]
fn names_are_not_checked_by_the_decoder() {
    // Name and text rules belong to the server (they answer invalid_room,
    // invalid_nick, empty_text, text_too_long, not bad_request).
    let env = request_round_trip(r#"{"type":"say","room":"NOT A ROOM","text":""}"#);
    assert_eq!(
        env.request,
        Request::Say {
            room: "NOT A ROOM".into(),
            text: "".into()
        }
    );
    request_round_trip(r#"{"type":"nick","nick":""}"#);
    request_round_trip(r#"{"type":"whisper","to":"not a nick!","text":"   "}"#);
}

#[test]
fn name_and_text_rules() {
    assert_eq!(validate_nick("guest-1"), Ok(()));
    assert_eq!(validate_nick("a.b"), Err(ErrorCode::InvalidNick));
    assert_eq!(validate_nick(&"n".repeat(33)), Err(ErrorCode::InvalidNick));
    assert_eq!(validate_room("a.b-c_1"), Ok(()));
    assert_eq!(validate_room("Lobby"), Err(ErrorCode::InvalidRoom));
    assert_eq!(validate_room(&"r".repeat(64)), Ok(()));
    assert_eq!(validate_room(&"r".repeat(65)), Err(ErrorCode::InvalidRoom));
    // Length before emptiness.
    assert_eq!(
        validate_text(&" ".repeat(4097), 4096),
        Err(ErrorCode::TextTooLong)
    );
    assert_eq!(
        validate_text(&" ".repeat(4096), 4096),
        Err(ErrorCode::EmptyText)
    );
    assert_eq!(validate_text(&"é".repeat(2048), 4096), Ok(()));
    assert_eq!(
        validate_text(&"é".repeat(2049), 4096),
        Err(ErrorCode::TextTooLong)
    );
}

#[test]
fn null_means_absent() {
    assert_eq!(
        request_round_trip(r#"{"type":"rooms","id":null}"#),
        rooms_with_id(None)
    );
    assert_eq!(
        request_round_trip(r#"{"type":"join","room":"a","since":null,"epoch":null,"id":null}"#),
        Envelope {
            request: Request::Join {
                room: "a".into(),
                since: None,
                epoch: None
            },
            id: None,
        }
    );
    // A required field may not be null.
    let e = err(r#"{"type":"who","room":null,"id":4}"#);
    assert_eq!((e.code, e.id), (ErrorCode::BadRequest, Some(Id::Int(4))));
    // `type: null` is a missing type.
    assert_eq!(code(r#"{"type":null}"#), ErrorCode::BadRequest);
}

#[test]
fn valid_ids() {
    let cases = [
        ("0", Id::Int(0)),
        ("-0", Id::Int(0)),
        ("9007199254740991", Id::Int(MAX_INT_ID)),
        ("-9007199254740991", Id::Int(-MAX_INT_ID)),
        (r#""""#, Id::from("")),
        (r#""1""#, Id::from("1")),
        (r#""\u00e9\n""#, Id::from("é\n")),
    ];
    for (raw, id) in cases {
        let text = format!(r#"{{"type":"rooms","id":{raw}}}"#);
        assert_eq!(request_round_trip(&text), rooms_with_id(Some(id)), "{text}");
        // And with whitespace around the id.
        let text = format!("{{ \"type\" : \"rooms\" , \"id\" :\n\t{raw} \r\n}}");
        assert!(decode_request(&text).unwrap().id.is_some(), "{text}");
    }
    let s64 = "é".repeat(32); // 64 bytes
    let text = format!(r#"{{"type":"rooms","id":"{s64}"}}"#);
    assert_eq!(request_round_trip(&text), rooms_with_id(Some(Id::Str(s64))));
}

#[test]
fn invalid_ids_are_bad_request_without_an_id() {
    let long = format!("\"{}\"", "x".repeat(65));
    let long_multibyte = format!("\"{}é\"", "x".repeat(63)); // 65 bytes, 64 chars
    let bad = [
        "1.0",
        "1e3",
        "1E3",
        "-1.5",
        "0.0",
        "9007199254740992",
        "-9007199254740992",
        "18446744073709551616",
        "123456789012345678901234567890",
        "1e400",
        "true",
        "false",
        "[]",
        "[1]",
        "{}",
        r#"{"id":1}"#,
        long.as_str(),
        long_multibyte.as_str(),
    ];
    for raw in bad {
        // A request that would otherwise be fine: still not carried out.
        let text = format!(r#"{{"type":"rooms","id":{raw}}}"#);
        let e = err(&text);
        assert_eq!((e.code, &e.id), (ErrorCode::BadRequest, &None), "{text}");
        // The invalid id wins over another shape error.
        let text = format!(r#"{{"type":"say","id":{raw}}}"#);
        let e = err(&text);
        assert_eq!((e.code, &e.id), (ErrorCode::BadRequest, &None), "{text}");
    }
}

#[test]
fn shape_errors_keep_a_valid_id() {
    let cases = [
        r#"{"id":"k"}"#,
        r#"{"type":"dance","id":"k"}"#,
        r#"{"type":7,"id":"k"}"#,
        r#"{"type":["say"],"id":"k"}"#,
        r#"{"type":"say","room":"a","id":"k"}"#,
        r#"{"type":"say","text":"a","id":"k"}"#,
        r#"{"type":"say","room":1,"text":"a","id":"k"}"#,
        r#"{"type":"whisper","to":["bob"],"text":"a","id":"k"}"#,
        r#"{"type":"nick","nick":{"n":1},"id":"k"}"#,
        r#"{"type":"join","room":"a","since":-1,"id":"k"}"#,
        r#"{"type":"join","room":"a","since":1.0,"id":"k"}"#,
        r#"{"type":"join","room":"a","since":"5","id":"k"}"#,
        r#"{"type":"join","room":"a","since":18446744073709551616,"id":"k"}"#,
        r#"{"type":"join","room":"a","epoch":5,"id":"k"}"#,
        r#"{"type":"who","id":"k"}"#,
        r#"{"type":"leave","room":false,"id":"k"}"#,
        r#"{"type":"Rooms","id":"k"}"#,
    ];
    for text in cases {
        let e = err(text);
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::BadRequest, Some(Id::from("k"))),
            "{text}"
        );
    }
}

#[test]
fn duplicate_keys_last_one_wins() {
    let env = request_round_trip(r#"{"type":"say","type":"who","room":"a","room":"b"}"#);
    assert_eq!(env.request, Request::Who { room: "b".into() });
    let env = request_round_trip(r#"{"type":"rooms","id":1,"id":"two"}"#);
    assert_eq!(env.id, Some(Id::from("two")));
    // A later good value repairs an earlier bad one, and the reverse.
    request_round_trip(r#"{"type":"rooms","id":1.5,"id":3}"#);
    assert_eq!(
        code(r#"{"type":"rooms","id":3,"id":1.5}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        request_round_trip(r#"{"type":"nick","nick":5,"nick":"x"}"#).request,
        Request::Nick { nick: "x".into() }
    );
    // A key written with an escape is the same key.
    assert_eq!(
        request_round_trip(r#"{"type":"who","room":"a","r\u006fom":"c"}"#).request,
        Request::Who { room: "c".into() }
    );
}

#[test]
fn unknown_fields_of_any_kind_are_ignored() {
    let huge_int = "9".repeat(400);
    let texts = [
        format!(r#"{{"type":"rooms","x":{huge_int}}}"#),
        format!(r#"{{"type":"rooms","x":-{huge_int}.{huge_int}e-99999}}"#),
        r#"{"type":"rooms","x":1e400,"y":-1E+400,"z":1e-400}"#.to_string(),
        r#"{"type":"rooms","x":{"a":[1,{"b":null}],"c":true}}"#.to_string(),
        r#"{"type":"rooms","":"","\u0000":"\u0000","x\ud83d\ude00":"\ud83d\ude00"}"#.to_string(),
        // Known fields the type does not use are not looked at either.
        r#"{"type":"rooms","room":1e400,"since":"x","text":[],"to":{},"nick":null,"epoch":7}"#
            .to_string(),
    ];
    for text in texts {
        assert_eq!(request_round_trip(&text), rooms_with_id(None), "{text}");
    }
}

#[test]
fn lone_surrogates_anywhere_are_bad_json() {
    let texts = [
        r#"{"type":"rooms","x":"\ud800"}"#,
        r#"{"type":"rooms","x":"\udc00"}"#,
        r#"{"type":"rooms","x":"\ud83d\u0041"}"#,
        r#"{"type":"rooms","x":"a\ud83d"}"#,
        r#"{"type":"rooms","x":["\ud800"]}"#,
        r#"{"type":"rooms","\ud800":1}"#,
        r#"{"type":"say","room":"a","text":"\udfff","id":3}"#,
        r#"{"type":"rooms","id":"\ud800"}"#,
        r#"{"type":"\ud800"}"#,
        r#"["\ud800"]"#,
        r#""\ud800""#,
    ];
    for text in texts {
        let e = err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadJson, None), "{text}");
    }
    // Pairs, and escaped backslashes before a `u`, are fine.
    request_round_trip(r#"{"type":"rooms","x":"\ud83d\ude00","y":"\\ud800","z":"\\\\ud800"}"#);
}

#[test]
fn nesting_depth_limit() {
    for field in ["x", "room", "id", "type"] {
        let at_limit = nested_in_field(field, 127);
        let over = nested_in_field(field, 128);
        // 127 levels are read (a known field then has the wrong type).
        let ok_or_shape = decode_request(&at_limit);
        match field {
            "x" => assert_eq!(
                ok_or_shape.unwrap(),
                Envelope {
                    request: Request::Who { room: "a".into() },
                    id: None
                }
            ),
            _ => assert_eq!(
                ok_or_shape.unwrap_err().code,
                ErrorCode::BadRequest,
                "{field}"
            ),
        }
        assert_eq!(code(&over), ErrorCode::BadJson, "{field}");
        assert_eq!(
            code(&nested_in_field(field, 1000)),
            ErrorCode::BadJson,
            "{field}"
        );
    }
    // Objects count as well as arrays.
    let objects = |levels: usize| {
        format!(
            r#"{{"type":"rooms","x":{}1{}}}"#,
            r#"{"a":"#.repeat(levels - 1),
            "}".repeat(levels - 1)
        )
    };
    request_round_trip(&objects(127));
    assert_eq!(code(&objects(128)), ErrorCode::BadJson);
    // Valid JSON that is not an object, at and over the limit.
    let arrays = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    assert_eq!(code(&arrays(127)), ErrorCode::BadRequest);
    assert_eq!(code(&arrays(128)), ErrorCode::BadJson);
    // Brackets inside strings do not count.
    let text = format!(r#"{{"type":"rooms","x":"{}"}}"#, "[{".repeat(300));
    request_round_trip(&text);
}

#[test]
fn syntax_errors_are_bad_json() {
    let texts = [
        "",
        " ",
        "{",
        "}",
        "not json",
        "{\"type\":\"rooms\"",
        "{\"type\":\"rooms\",}",
        "{\"type\":\"rooms\"} x",
        "{\"type\":\"rooms\"}{}",
        "{'type':'rooms'}",
        "{type:\"rooms\"}",
        "{\"type\":\"rooms\",\"x\":01}",
        "{\"type\":\"rooms\",\"x\":NaN}",
        "{\"type\":\"rooms\",\"x\":\"\t\"}",
        "{\"type\":\"rooms\",\"x\":\"\\x\"}",
        "{\"type\":\"rooms\",\"x\":\"\\u12\"}",
        "\u{feff}{\"type\":\"rooms\"}",
        "[1,]",
    ];
    for text in texts {
        let e = err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadJson, None), "{text:?}");
    }
}

#[test]
fn valid_json_that_is_not_an_object_is_bad_request() {
    let texts = [
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1.5",
        "\"rooms\"",
        "[]",
        "[{\"type\":\"rooms\"}]",
        "123456789012345678901234567890",
        " [1, 2] ",
    ];
    for text in texts {
        let e = err(text);
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text:?}");
    }
}

/// Valid JSON numbers of any size are valid JSON, also at the top level:
/// `1e400` is not an object, so `bad_request`, like `[1e400]`.
#[test]
fn top_level_huge_number_is_bad_request() {
    assert_eq!(code("[1e400]"), ErrorCode::BadRequest);
    for text in ["1e400", "-1e400", "1E+999"] {
        assert_eq!(code(text), ErrorCode::BadRequest, "{text}");
    }
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Do not write regression files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Invariants that hold for whatever `decode_request` returns.
fn check_decode_invariants(text: &str) -> Result<Result<Envelope, DecodeError>, TestCaseError> {
    let result = decode_request(text);
    match &result {
        Ok(env) => {
            let again = decode_request(&env.to_json());
            prop_assert_eq!(again.as_ref(), Ok(env), "re-encoding changed {:?}", text);
            if let Some(Id::Int(n)) = &env.id {
                prop_assert!(n.abs() <= MAX_INT_ID);
            }
            if let Some(Id::Str(s)) = &env.id {
                prop_assert!(s.len() <= 64);
            }
        }
        Err(e) => {
            prop_assert!(
                matches!(e.code, ErrorCode::BadJson | ErrorCode::BadRequest),
                "decoder produced {:?}",
                e.code
            );
            if e.code == ErrorCode::BadJson {
                prop_assert_eq!(&e.id, &None);
            }
            // The error is always encodable as a reply a client can parse.
            let reply = encode_error(e.id.as_ref(), e.code, &e.message);
            let parsed: ServerMessage = serde_json::from_str(&reply)
                .map_err(|err| TestCaseError::fail(format!("{err}: {reply}")))?;
            prop_assert!(matches!(parsed, ServerMessage::Error(_)));
        }
    }
    Ok(result)
}

/// Strings with control characters, quotes, backslashes, astral and
/// combining characters, plus the names the decoder looks for.
fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[\\x00-\\x1f\"\\\\/ a-z\u{7f}\u{80}\u{2028}\u{fffd}\u{1f600}]{0,12}",
        2 => prop::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter),
        2 => prop::sample::select(vec![
            "", "type", "id", "nick", "room", "since", "epoch", "text", "to", "rooms", "say",
            "lobby", "alice", "\\ud800", "\u{0}", " ",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// Marks a string that `render` turns into a numeric literal too large for
/// any Rust number type (serde_json::Value cannot hold one).
const HUGE: &str = "\u{1}\u{2}huge-number:";
const HUGE_ESCAPED: &str = r#""\u0001\u0002huge-number:"#;

fn huge_literal() -> BoxedStrategy<String> {
    prop_oneof![
        // more digits than u64 can hold
        "-?[1-9][0-9]{20,80}",
        // exponents past f64's range, both ways
        "-?[1-9](\\.[0-9]{1,20})?[eE][+-]?[1-9][0-9]{3,6}",
        // long integral part with a fraction
        "-?[1-9][0-9]{20,40}\\.[0-9]{1,40}",
    ]
    .boxed()
}

fn is_huge(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.starts_with(HUGE))
}

fn any_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // non-finite becomes null
        (-100i64..100).prop_map(Value::from),
        prop::sample::select(vec![
            json!(MAX_INT_ID),
            json!(MAX_INT_ID + 1),
            json!(-MAX_INT_ID),
            json!(-MAX_INT_ID - 1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e308),
            json!(-1.7976931348623157e308),
            json!(5e-324),
            json!(1.0),
            json!(-0.0),
        ]),
        huge_literal().prop_map(|s| Value::String(format!("{HUGE}{s}"))),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_number(),
        any_string().prop_map(Value::String),
    ]
    .boxed()
}

/// A general JSON tree (a few levels, a few dozen nodes).
fn shallow_json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any_string(), inner), 0..6)
                    .prop_map(|kvs| Value::Object(kvs.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

/// A value wrapped in up to ~200 levels of arrays and objects.
fn deep_json() -> BoxedStrategy<Value> {
    (
        shallow_json(),
        prop_oneof![0usize..=200, 120usize..=135],
        prop::collection::vec(any::<bool>(), 1..8),
        any::<bool>(),
    )
        .prop_map(|(core, levels, pattern, sibling)| {
            let mut v = core;
            for level in 0..levels {
                v = if pattern[level % pattern.len()] {
                    if sibling {
                        Value::Array(vec![Value::Null, v])
                    } else {
                        Value::Array(vec![v])
                    }
                } else {
                    let mut m = Map::new();
                    if sibling {
                        m.insert("a".into(), json!(1));
                    }
                    m.insert("k".into(), v);
                    Value::Object(m)
                };
            }
            v
        })
        .boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    prop_oneof![6 => shallow_json(), 2 => deep_json(), 1 => any_number()].boxed()
}

/// A value for one of the request's own fields: mostly the right type.
fn field_value(string_weight: u32) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        string_weight => any_string().prop_map(|s| Some(Value::String(s))),
        2 => (0u64..1000).prop_map(|n| Some(json!(n))),
        1 => any_number().prop_map(Some),
        1 => Just(Some(Value::Null)),
        1 => any_json().prop_map(Some),
        2 => Just(None),
    ]
    .boxed()
}

fn id_value() -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        3 => (-MAX_INT_ID..=MAX_INT_ID).prop_map(|n| Some(json!(n))),
        3 => any_string().prop_map(|s| Some(Value::String(s))),
        1 => "[a-z]{60,70}".prop_map(|s| Some(Value::String(s))),
        2 => any_number().prop_map(Some),
        1 => any_json().prop_map(Some),
        1 => Just(Some(Value::Null)),
        3 => Just(None),
    ]
    .boxed()
}

/// An object that looks like a request: a known type (mostly), its fields
/// (mostly well typed), an id (mostly valid) and unknown extra fields
/// (possibly huge or deep).
fn request_like() -> BoxedStrategy<Value> {
    let kind = prop_oneof![
        8 => prop::sample::select(vec!["nick", "join", "leave", "say", "whisper", "rooms", "who"])
            .prop_map(|k| Some(json!(k))),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ];
    (
        kind,
        id_value(),
        [field_value(12), field_value(12), field_value(12), field_value(12)],
        prop_oneof![
            3 => Just(None),
            3 => (0u64..100).prop_map(|n| Some(json!(n))),
            1 => any::<u64>().prop_map(|n| Some(json!(n))),
            1 => Just(Some(Value::Null)),
            2 => any_json().prop_map(Some),
        ],
        prop_oneof![3 => Just(None), 3 => any_string().prop_map(|s| Some(json!(s))), 1 => field_value(1)],
        prop::collection::vec((any_string(), any_json()), 0..4),
    )
        .prop_map(|(kind, id, [nick, room, text, to], since, epoch, extra)| {
            let mut m = Map::new();
            // Extra fields first, so the request's own fields replace any
            // extra field with the same name.
            for (k, v) in extra {
                m.insert(k, v);
            }
            let named = [
                ("type", kind),
                ("id", id),
                ("nick", nick),
                ("room", room),
                ("text", text),
                ("to", to),
                ("since", since),
                ("epoch", epoch),
            ];
            for (k, v) in named {
                match v {
                    Some(v) => {
                        m.insert(k.into(), v);
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            Value::Object(m)
        })
.boxed()
}

/// Serializes a value, turning the HUGE marker strings into numbers.
fn render(v: &Value, pretty: bool) -> String {
    let mut text = if pretty {
        serde_json::to_string_pretty(v).unwrap()
    } else {
        serde_json::to_string(v).unwrap()
    };
    while let Some(start) = text.find(HUGE_ESCAPED) {
        let digits_at = start + HUGE_ESCAPED.len();
        let end = digits_at + text[digits_at..].find('"').unwrap();
        let digits = text[digits_at..end].to_string();
        text.replace_range(start..=end, &digits);
    }
    text
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// What the decoder must answer for a value, according to the contract and
/// the project's decisions: `Ok(envelope)` or `Err((code, id))`.
fn expected(v: &Value) -> Result<Envelope, (ErrorCode, Option<Id>)> {
    if depth(v) >= 128 {
        return Err((ErrorCode::BadJson, None));
    }
    let Value::Object(o) = v else {
        return Err((ErrorCode::BadRequest, None));
    };
    let id = match o.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !is_huge(&Value::String(s.clone())) && s.len() <= 64 => {
            Some(Id::Str(s.clone()))
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if (-MAX_INT_ID..=MAX_INT_ID).contains(&i) => Some(Id::Int(i)),
            _ => return Err((ErrorCode::BadRequest, None)),
        },
        Some(_) => return Err((ErrorCode::BadRequest, None)),
    };
    let bad = || (ErrorCode::BadRequest, id.clone());
    let string = |k: &str| match o.get(k) {
        Some(v @ Value::String(s)) if !is_huge(v) => Ok(s.clone()),
        _ => Err(bad()),
    };
    let request = match string("type")?.as_str() {
        "nick" => Request::Nick {
            nick: string("nick")?,
        },
        "join" => Request::Join {
            room: string("room")?,
            since: match o.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.is_u64() => n.as_u64(),
                Some(_) => return Err(bad()),
            },
            epoch: match o.get("epoch") {
                None | Some(Value::Null) => None,
                Some(_) => Some(string("epoch")?),
            },
        },
        "leave" => Request::Leave {
            room: string("room")?,
        },
        "say" => Request::Say {
            room: string("room")?,
            text: string("text")?,
        },
        "whisper" => Request::Whisper {
            to: string("to")?,
            text: string("text")?,
        },
        "rooms" => Request::Rooms,
        "who" => Request::Who {
            room: string("room")?,
        },
        _ => return Err(bad()),
    };
    Ok(Envelope { request, id })
}

fn check_against_model(v: &Value, pretty: bool) -> Result<(), TestCaseError> {
    let text = render(v, pretty);
    let got = check_decode_invariants(&text)?.map_err(|e| (e.code, e.id));
    let want = expected(v);
    prop_assert_eq!(got, want, "text: {}", text);
    Ok(())
}

fn any_id() -> BoxedStrategy<Option<Id>> {
    prop_oneof![
        Just(None),
        (-MAX_INT_ID..=MAX_INT_ID).prop_map(|n| Some(Id::Int(n))),
        any_string()
            .prop_filter("at most 64 bytes", |s| s.len() <= 64)
            .prop_map(|s| Some(Id::Str(s))),
    ]
    .boxed()
}

fn any_request() -> BoxedStrategy<Request> {
    let s = any_string;
    prop_oneof![
        s().prop_map(|nick| Request::Nick { nick }),
        (s(), any::<Option<u64>>(), prop::option::of(s()))
            .prop_map(|(room, since, epoch)| Request::Join { room, since, epoch }),
        s().prop_map(|room| Request::Leave { room }),
        (s(), s()).prop_map(|(room, text)| Request::Say { room, text }),
        (s(), s()).prop_map(|(to, text)| Request::Whisper { to, text }),
        Just(Request::Rooms),
        s().prop_map(|room| Request::Who { room }),
    ]
    .boxed()
}

fn any_chat_message() -> BoxedStrategy<ChatMessage> {
    (
        any_string(),
        any::<u64>(),
        any_string(),
        any_string(),
        any::<u64>(),
    )
        .prop_map(|(room, seq, from, text, ts)| ChatMessage {
            room,
            seq,
            from,
            text,
            ts,
        })
        .boxed()
}

fn any_error_code() -> BoxedStrategy<ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::InvalidNick,
        ErrorCode::NickTaken,
        ErrorCode::InvalidRoom,
        ErrorCode::NotMember,
        ErrorCode::NoSuchUser,
        ErrorCode::TextTooLong,
        ErrorCode::EmptyText,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ])
    .boxed()
}

fn any_reply() -> BoxedStrategy<Reply> {
    let s = any_string;
    let names = || prop::collection::vec(any_string(), 0..4);
    prop_oneof![
        (
            s(),
            names(),
            any::<u64>(),
            s(),
            prop::collection::vec(any_chat_message(), 0..3),
            any::<bool>()
        )
            .prop_map(
                |(room, members, seq, epoch, history, complete)| Reply::Join(JoinOk {
                    room,
                    members,
                    seq,
                    epoch,
                    history,
                    complete,
                })
            ),
        (s(), any::<u64>()).prop_map(|(room, seq)| Reply::Say { room, seq }),
        (s(), names()).prop_map(|(room, members)| Reply::Who { room, members }),
        prop::collection::vec((s(), any::<usize>()), 0..4).prop_map(|rs| Reply::Rooms {
            rooms: rs
                .into_iter()
                .map(|(room, members)| RoomCount { room, members })
                .collect(),
        }),
        s().prop_map(|nick| Reply::Nick { nick }),
        s().prop_map(|to| Reply::Whisper { to }),
        s().prop_map(|room| Reply::Leave { room }),
    ]
    .boxed()
}

fn any_server_message() -> BoxedStrategy<ServerMessage> {
    let s = any_string;
    prop_oneof![
        (
            s(),
            s(),
            (
                any::<usize>(),
                any::<usize>(),
                any::<u32>(),
                any::<u32>(),
                any::<usize>()
            ),
            prop::option::of(any_error_code()),
        )
            .prop_map(|(nick, server, (a, b, c, d, e), nick_error)| {
                ServerMessage::Welcome(Welcome {
                    nick,
                    protocol: 1,
                    server,
                    limits: Limits {
                        max_message_bytes: a,
                        max_text_bytes: b,
                        rate_per_sec: c,
                        burst: d,
                        max_rooms_per_connection: e,
                    },
                    nick_error,
                })
            }),
        any_chat_message().prop_map(ServerMessage::Message),
        (
            s(),
            prop::sample::select(vec![
                PresenceKind::Join,
                PresenceKind::Leave,
                PresenceKind::Rename
            ]),
            s(),
            prop::option::of(s()),
        )
            .prop_map(|(room, event, nick, old)| {
                ServerMessage::Presence(Presence {
                    room,
                    event,
                    nick,
                    old,
                })
            }),
        (s(), s(), any::<u64>())
            .prop_map(|(from, text, ts)| ServerMessage::Whisper(WhisperEvent { from, text, ts })),
        s().prop_map(|reason| ServerMessage::Shutdown { reason }),
        (any_id(), any_reply()).prop_map(|(id, reply)| ServerMessage::Ok(OkReply { id, reply })),
        (any_id(), any_error_code(), s())
            .prop_map(|(id, code, message)| ServerMessage::Error(ErrorReply { id, code, message })),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = check_decode_invariants(&text)?;
    }

    #[test]
    fn prop_json_looking_bytes_never_panic(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"{}[]\":,\\u0123456789eE+-.tfnrul \"type\"".to_vec()),
                1 => any::<u8>(),
            ],
            0..256,
        )
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = check_decode_invariants(&text)?;
    }

    #[test]
    fn prop_arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = check_decode_invariants(&text)?;
    }

    #[test]
    fn prop_mangled_requests_never_panic(
        v in request_like(),
        cut in any::<prop::sample::Index>(),
        insert in any_string(),
    ) {
        // Valid requests with text spliced into them at a random place.
        let mut text = render(&v, false);
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, &insert);
        let _ = check_decode_invariants(&text)?;
        text.truncate(at);
        let _ = check_decode_invariants(&text)?;
    }

    #[test]
    fn prop_any_json_value_decodes_as_the_model_says(v in any_json(), pretty in any::<bool>()) {
        check_against_model(&v, pretty)?;
        if !v.is_object() {
            let code = decode_request(&render(&v, pretty)).unwrap_err().code;
            let want = if depth(&v) >= 128 { ErrorCode::BadJson } else { ErrorCode::BadRequest };
            prop_assert_eq!(code, want);
        }
    }

    #[test]
    fn prop_request_like_objects_decode_as_the_model_says(
        v in request_like(),
        pretty in any::<bool>(),
    ) {
        check_against_model(&v, pretty)?;
    }

    #[test]
    fn prop_well_formed_requests_always_decode(
        request in any_request(),
        id in any_id(),
        extra in prop::collection::vec((any_string(), any_json()), 0..3),
    ) {
        let env = Envelope { request, id };
        let text = env.to_json();
        prop_assert_eq!(decode_request(&text), Ok(env.clone()), "{}", text);
        // Unknown fields (not too deep) do not change the outcome.
        let mut obj = serde_json::to_value(&env).unwrap().as_object().unwrap().clone();
        for (k, v) in extra {
            if !obj.contains_key(&k)
                && !["type", "id", "nick", "room", "since", "epoch", "text", "to"].contains(&k.as_str())
                && depth(&v) < 127
            {
                obj.insert(k, v);
            }
        }
        let text = render(&Value::Object(obj), false);
        prop_assert_eq!(decode_request(&text), Ok(env), "{}", text);
    }

    #[test]
    fn prop_server_messages_round_trip(m in any_server_message()) {
        let text = m.to_json();
        let back: ServerMessage = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(json_value(&back.to_json()), json_value(&text));
    }
}
