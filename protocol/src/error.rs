//! Error codes of the protocol and the typed error that decoding produces.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Every error code an `error` reply can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    #[error("bad_json")]
    BadJson,
    #[error("bad_request")]
    BadRequest,
    #[error("invalid_nick")]
    InvalidNick,
    #[error("nick_taken")]
    NickTaken,
    #[error("invalid_room")]
    InvalidRoom,
    #[error("not_member")]
    NotMember,
    #[error("no_such_user")]
    NoSuchUser,
    #[error("text_too_long")]
    TextTooLong,
    #[error("empty_text")]
    EmptyText,
    #[error("too_many_rooms")]
    TooManyRooms,
    #[error("rate_limited")]
    RateLimited,
    #[error("internal")]
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidNick => "invalid_nick",
            ErrorCode::NickTaken => "nick_taken",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why a request could not be decoded, ready to become an `error` reply.
///
/// It carries the request's id when one could be read, because the contract
/// says even a malformed request's reply echoes its (valid) id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub id: Option<Id>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(id: Option<Id>, code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            code,
            message: message.into(),
        }
    }
}
