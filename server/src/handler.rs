//! Turns one request into exactly one reply: decode, validate, carry out.
//!
//! The registry does the shared-state work; this module owns the rules a
//! request must pass before it gets there and the words of every error.

use std::time::Instant;

use natter_protocol::message::{JoinOk, Reply};
use natter_protocol::names::{validate_nick, validate_room, validate_text};
use natter_protocol::{
    ErrorCode, Id, Request, decode_request, encode_error, encode_join_ok_spliced, encode_ok,
};

use crate::chat::Chat;
use crate::conn_id::ConnId;
use crate::frame::Frame;
use crate::metrics::Metrics;

/// An error reply's code and human-readable message.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Refusal {
        let message = match code {
            ErrorCode::InvalidNick => "a nick is 1-32 characters of A-Z a-z 0-9 _ -",
            ErrorCode::InvalidRoom => "a room is 1-64 characters of a-z 0-9 _ - .",
            ErrorCode::NickTaken => "that nick is taken",
            ErrorCode::NoSuchUser => "nobody has that nick",
            ErrorCode::EmptyText => "text must contain a non-whitespace character",
            ErrorCode::TooManyRooms => "you are in too many rooms",
            ErrorCode::NotMember => "you are not in that room",
            _ => "request failed",
        };
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// What a connection needs to handle its requests.
pub(crate) struct Handler<'a> {
    /// Where requests are carried out.
    pub(crate) chat: &'a Chat,
    /// Counts each `say` and how long it took to reach the room.
    pub(crate) metrics: &'a Metrics,
    /// The connection whose requests these are.
    pub(crate) id: ConnId,
    /// `--max-text-bytes`.
    pub(crate) max_text_bytes: usize,
    /// Test hook: a `say` with this text panics (see `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub(crate) panic_on_text: Option<&'a str>,
}

impl Handler<'_> {
    /// Handles one text message and returns the encoded reply.
    pub(crate) async fn handle(&self, text: &str) -> Frame {
        let envelope = match decode_request(text) {
            Ok(envelope) => envelope,
            Err(e) => return Frame::from(encode_error(e.id.as_ref(), e.code, &e.message)),
        };
        let id = envelope.id.as_ref();
        match self.dispatch(envelope.request, id).await {
            Ok(frame) => frame,
            Err(refusal) => Frame::from(encode_error(id, refusal.code, &refusal.message)),
        }
    }

    async fn dispatch(&self, request: Request, id: Option<&Id>) -> Result<Frame, Refusal> {
        let reg = self.chat;
        let ok = |reply: Reply| Frame::from(encode_ok(id, &reply));
        Ok(match request {
            Request::Nick { nick } => {
                validate_nick(&nick)?;
                let nick = reg.rename(self.id, &nick).await?;
                ok(Reply::Nick { nick })
            }
            Request::Join { room, since, epoch } => {
                validate_room(&room)?;
                let joined = reg.join(self.id, &room, since, epoch.as_deref()).await?;
                // History frames are the `message` events as broadcast:
                // their text is copied into the reply as it is, never parsed
                // or escaped again, so a join costs one copy of the history.
                let body = JoinOk {
                    room,
                    members: joined.members,
                    seq: joined.seq,
                    epoch: joined.epoch,
                    history: joined.history.frames,
                    complete: joined.history.complete,
                };
                Frame::from(encode_join_ok_spliced(id, &body))
            }
            Request::Leave { room } => {
                validate_room(&room)?;
                reg.leave(self.id, &room)
                    .await
                    .map_err(|code| not_member(code, &room))?;
                ok(Reply::Leave { room })
            }
            Request::Say { room, text } => {
                validate_room(&room)?;
                self.check_text(&text)?;
                #[cfg(feature = "fault-injection")]
                if self.panic_on_text == Some(text.as_str()) {
                    panic!("fault injection: panic on say {text:?}");
                }
                let started = Instant::now();
                let seq = reg
                    .say(self.id, &room, &text)
                    .await
                    .map_err(|code| not_member(code, &room))?;
                self.metrics.said(started.elapsed());
                ok(Reply::Say { room, seq })
            }
            Request::Whisper { to, text } => {
                validate_nick(&to)?;
                self.check_text(&text)?;
                let to = reg.whisper(self.id, &to, &text).await.map_err(|code| {
                    if code == ErrorCode::NoSuchUser {
                        Refusal {
                            code,
                            message: format!("nobody is called '{to}'"),
                        }
                    } else {
                        code.into()
                    }
                })?;
                ok(Reply::Whisper { to })
            }
            Request::Rooms => ok(Reply::Rooms {
                rooms: reg.rooms().await?,
            }),
            Request::Who { room } => {
                validate_room(&room)?;
                let members = reg.who(&room).await?;
                ok(Reply::Who { room, members })
            }
        })
    }

    fn check_text(&self, text: &str) -> Result<(), Refusal> {
        validate_text(text, self.max_text_bytes).map_err(|code| match code {
            ErrorCode::TextTooLong => Refusal {
                code,
                message: format!(
                    "text is {} bytes; the limit is {}",
                    text.len(),
                    self.max_text_bytes
                ),
            },
            code => code.into(),
        })
    }
}

fn not_member(code: ErrorCode, room: &str) -> Refusal {
    if code == ErrorCode::NotMember {
        Refusal {
            code,
            message: format!("you are not in room '{room}'"),
        }
    } else {
        code.into()
    }
}

/// The id of a request, when it can be read, for replies that do not come
/// from handling it (rate limited, internal error).
fn reply_id(text: &str) -> Option<Id> {
    match decode_request(text) {
        Ok(envelope) => envelope.id,
        Err(e) => e.id,
    }
}

/// The reply to a message refused by the rate limiter. The request is not
/// carried out, but its id is echoed when it can be read.
pub(crate) fn rate_limited(text: &str, rate: u32, burst: u32) -> Frame {
    Frame::from(encode_error(
        reply_id(text).as_ref(),
        ErrorCode::RateLimited,
        &format!("slow down: at most {rate} messages per second (burst {burst})"),
    ))
}

/// The reply to a request whose handling failed inside the server.
pub(crate) fn internal_error(text: &str) -> Frame {
    Frame::from(encode_error(
        reply_id(text).as_ref(),
        ErrorCode::Internal,
        "internal error while handling the request",
    ))
}
