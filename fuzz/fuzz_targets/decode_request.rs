//! Fuzzes `natter_protocol::decode_request` with arbitrary text.
//!
//! Invariants checked on every input (a failed one panics, which libFuzzer
//! reports as a crash):
//! 1. decoding never panics;
//! 2. a successful decode round-trips: `Envelope::to_json()` decodes back to
//!    an equal `Envelope`;
//! 3. an error is `bad_json` or `bad_request` (the only codes decoding may
//!    produce), and a `bad_json` error never carries an id;
//! 4. the error reply built from it (`encode_error`) is JSON that decodes as
//!    `ServerMessage::Error` with the same id, code and message;
//! 5. against serde_json as a reference, per PROTOCOL.md: text that is
//!    valid JSON nested at most 127 levels is never `bad_json`, and valid
//!    JSON that is not an object is `bad_request`; a successful decode is
//!    always valid JSON for serde_json (unless it holds a number out of f64
//!    range, which serde_json's `Value` refuses but the contract accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter_protocol::{ErrorCode, ServerMessage, decode_request, encode_error};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
});

fn check(text: &str) {
    let result = decode_request(text);
    let reference: Result<Value, _> = serde_json::from_str(text);
    match &result {
        Ok(envelope) => {
            let json = envelope.to_json();
            match decode_request(&json) {
                Ok(again) => assert_eq!(
                    &again, envelope,
                    "round trip changed the envelope: {text:?} -> {json:?}"
                ),
                Err(e) => panic!("round trip failed: {text:?} -> {json:?} -> {e:?}"),
            }
            if let Err(e) = &reference {
                assert!(
                    e.to_string().contains("number out of range"),
                    "decoded OK but serde_json rejects it ({e}): {text:?}"
                );
            }
        }
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadJson | ErrorCode::BadRequest),
                "decode produced code {:?}: {text:?}",
                e.code
            );
            if e.code == ErrorCode::BadJson {
                assert_eq!(e.id, None, "bad_json carries an id: {text:?} -> {e:?}");
            }
            let reply = encode_error(e.id.as_ref(), e.code, &e.message);
            match serde_json::from_str::<ServerMessage>(&reply) {
                Ok(ServerMessage::Error(r)) => {
                    assert_eq!(r.id, e.id, "reply id differs: {reply}");
                    assert_eq!(r.code, e.code, "reply code differs: {reply}");
                    assert_eq!(r.message, e.message, "reply message differs: {reply}");
                }
                other => panic!("encode_error gave {reply:?}, which decodes as {other:?}"),
            }
            if let Ok(value) = &reference {
                if depth(value) <= 127 {
                    assert_ne!(
                        e.code,
                        ErrorCode::BadJson,
                        "valid JSON (depth {}) called bad_json: {text:?} -> {e:?}",
                        depth(value)
                    );
                    if !value.is_object() {
                        assert_eq!(e.code, ErrorCode::BadRequest, "non-object: {text:?}");
                    }
                }
            }
        }
    }
    if let Ok(value) = &reference {
        if depth(value) <= 127 && !value.is_object() {
            assert!(result.is_err(), "a non-object decoded: {text:?}");
        }
    }
}

/// Nesting depth, the outermost container being level 1 (scalars are 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
