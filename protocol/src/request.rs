//! Requests (client → server): the typed form and the decoder that maps every
//! malformed input to the protocol's error code.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{DecodeError, ErrorCode};
use crate::id::Id;
use crate::scan;

/// A request with the id the client gave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    #[serde(flatten)]
    pub request: Request,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
}

/// What a client can ask of the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Nick {
        nick: String,
    },
    Join {
        room: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    Leave {
        room: String,
    },
    Say {
        room: String,
        text: String,
    },
    Whisper {
        to: String,
        text: String,
    },
    Rooms,
    Who {
        room: String,
    },
}

impl Request {
    /// The request's `type` as written on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Nick { .. } => "nick",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Say { .. } => "say",
            Request::Whisper { .. } => "whisper",
            Request::Rooms => "rooms",
            Request::Who { .. } => "who",
        }
    }
}

impl Envelope {
    /// Encodes the request as the one text frame the protocol expects.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Decodes one text message into a request, or the error reply it deserves.
///
/// Order of checks, chosen so that a client always learns the most basic
/// problem first: JSON syntax (`bad_json`), then shape (`bad_request`: not
/// an object, an invalid id, a missing/unknown `type`, a missing or
/// wrongly typed field). Name and text rules depend on server limits and
/// are checked by the server afterwards.
pub fn decode_request(text: &str) -> Result<Envelope, DecodeError> {
    scan::check(text).map_err(|why| DecodeError::new(None, ErrorCode::BadJson, why))?;
    let fields: Fields = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(e) => return Err(classify(text, e)),
    };
    let id = match fields.id {
        None => None,
        Some(raw) => Id::from_raw(raw.get())
            .map_err(|why| DecodeError::new(None, ErrorCode::BadRequest, why))?,
    };
    let bad = |message: String| DecodeError::new(id.clone(), ErrorCode::BadRequest, message);
    let kind: String = match fields.kind {
        None => return Err(bad("missing field `type`".into())),
        Some(raw) => typed(raw, "type").map_err(bad)?,
    };
    let need = |raw: Option<&RawValue>, name: &str| -> Result<String, DecodeError> {
        match raw {
            None => Err(bad(format!("missing field `{name}`"))),
            Some(raw) => typed(raw, name).map_err(bad),
        }
    };
    let request = match kind.as_str() {
        "nick" => Request::Nick {
            nick: need(fields.nick, "nick")?,
        },
        "join" => Request::Join {
            room: need(fields.room, "room")?,
            since: optional(fields.since, "since").map_err(bad)?,
            epoch: optional(fields.epoch, "epoch").map_err(bad)?,
        },
        "leave" => Request::Leave {
            room: need(fields.room, "room")?,
        },
        "say" => Request::Say {
            room: need(fields.room, "room")?,
            text: need(fields.text, "text")?,
        },
        "whisper" => Request::Whisper {
            to: need(fields.to, "to")?,
            text: need(fields.text, "text")?,
        },
        "rooms" => Request::Rooms,
        "who" => Request::Who {
            room: need(fields.room, "room")?,
        },
        other => return Err(bad(format!("unknown request type {other:?}"))),
    };
    Ok(Envelope { request, id })
}

/// Tells a syntax error (`bad_json`) from valid JSON of the wrong shape.
fn classify(text: &str, e: serde_json::Error) -> DecodeError {
    // Whatever serde_json reported while reading an object, the question is
    // whether the text is JSON at all: a shape error may come before a later
    // syntax error, and a number too big for f64 (`1e400`) is reported as
    // out of range although it is valid JSON. Skimming the text without
    // converting anything answers the question exactly.
    let syntax = match e.classify() {
        serde_json::error::Category::Eof => true,
        _ => serde_json::from_str::<IgnoredAny>(text).is_err(),
    };
    if syntax {
        DecodeError::new(None, ErrorCode::BadJson, format!("invalid JSON: {e}"))
    } else {
        DecodeError::new(
            None,
            ErrorCode::BadRequest,
            "a request is a JSON object with a \"type\"",
        )
    }
}

fn typed<'a, T: Deserialize<'a>>(raw: &'a RawValue, name: &str) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|_| format!("field `{name}` has the wrong type"))
}

/// An optional field: absent and `null` both mean "not given".
fn optional<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<Option<T>, String> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get().trim() == "null" => Ok(None),
        Some(raw) => typed(raw, name).map(Some),
    }
}

/// Every field any request can have, captured raw so that each can be
/// judged on its own: a bad `text` must not hide a good `id`.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    nick: Option<&'a RawValue>,
    room: Option<&'a RawValue>,
    since: Option<&'a RawValue>,
    epoch: Option<&'a RawValue>,
    text: Option<&'a RawValue>,
    to: Option<&'a RawValue>,
}

enum Key {
    Kind,
    Id,
    Nick,
    Room,
    Since,
    Epoch,
    Text,
    To,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let name: Cow<'de, str> = CowStr::deserialize(d)?.0;
        Ok(match name.as_ref() {
            "type" => Key::Kind,
            "id" => Key::Id,
            "nick" => Key::Nick,
            "room" => Key::Room,
            "since" => Key::Since,
            "epoch" => Key::Epoch,
            "text" => Key::Text,
            "to" => Key::To,
            _ => Key::Other,
        })
    }
}

/// A key that borrows when it can and allocates only for escaped keys.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut f = Fields::default();
                // A repeated key keeps its last value, as JSON.parse does.
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Kind => &mut f.kind,
                        Key::Id => &mut f.id,
                        Key::Nick => &mut f.nick,
                        Key::Room => &mut f.room,
                        Key::Since => &mut f.since,
                        Key::Epoch => &mut f.epoch,
                        Key::Text => &mut f.text,
                        Key::To => &mut f.to,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<&'de RawValue>()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_request(text).unwrap_err().code
    }

    #[test]
    fn decodes_every_type() {
        let e =
            decode_request(r#"{"type":"say","room":"lobby","text":"hello","id":"m1"}"#).unwrap();
        assert_eq!(e.id, Some(Id::from("m1")));
        assert_eq!(
            e.request,
            Request::Say {
                room: "lobby".into(),
                text: "hello".into()
            }
        );
        let e =
            decode_request(r#"{"type":"join","room":"a","since":5,"epoch":"x","id":1}"#).unwrap();
        assert_eq!(
            e.request,
            Request::Join {
                room: "a".into(),
                since: Some(5),
                epoch: Some("x".into())
            }
        );
        assert_eq!(
            decode_request(r#"{"type":"rooms"}"#).unwrap().request,
            Request::Rooms
        );
    }

    #[test]
    fn ids() {
        let id = |t: &str| decode_request(&format!(r#"{{"type":"rooms","id":{t}}}"#));
        assert_eq!(
            id("9007199254740991").unwrap().id,
            Some(Id::Int(9007199254740991))
        );
        assert_eq!(
            id("-9007199254740991").unwrap().id,
            Some(Id::Int(-9007199254740991))
        );
        assert_eq!(id("null").unwrap().id, None);
        for bad in [
            "9007199254740992",
            "1.0",
            "1e3",
            "true",
            "[1]",
            "{}",
            "99999999999999999999",
        ] {
            let err = id(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad}");
            assert_eq!(err.id, None, "{bad}");
        }
        let long = format!("\"{}\"", "x".repeat(65));
        assert_eq!(id(&long).unwrap_err().code, ErrorCode::BadRequest);
        assert!(id(&format!("\"{}\"", "x".repeat(64))).is_ok());
    }

    #[test]
    fn error_codes() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"rooms","x":"\ud800"}"#), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code("\"rooms\""), ErrorCode::BadRequest);
        assert_eq!(code("{}"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"say","room":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"say","room":"a","text":5}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a","since":-1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a","since":1.5}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn bad_request_keeps_a_valid_id() {
        let err = decode_request(r#"{"type":"say","id":7}"#).unwrap_err();
        assert_eq!(
            (err.code, err.id),
            (ErrorCode::BadRequest, Some(Id::Int(7)))
        );
    }

    #[test]
    fn unknown_fields_and_huge_numbers_are_ignored() {
        let e = decode_request(
            r#"{"type":"rooms","x":1e400,"y":123456789012345678901234567890,"z":[{"a":null}]}"#,
        );
        assert_eq!(e.unwrap().request, Request::Rooms);
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        let e = decode_request(r#"{"type":"who","room":"a","room":"b"}"#).unwrap();
        assert_eq!(e.request, Request::Who { room: "b".into() });
    }

    #[test]
    fn nesting_limit() {
        let nested = |n: usize| {
            format!(
                r#"{{"type":"rooms","x":{}{}}}"#,
                "[".repeat(n - 1),
                "]".repeat(n - 1)
            )
        };
        assert_eq!(
            decode_request(&nested(127)).unwrap().request,
            Request::Rooms
        );
        assert_eq!(code(&nested(128)), ErrorCode::BadJson);
    }

    #[test]
    fn escaped_keys_are_read() {
        let e = decode_request(r#"{"\u0074ype":"rooms"}"#).unwrap();
        assert_eq!(e.request, Request::Rooms);
    }
}
