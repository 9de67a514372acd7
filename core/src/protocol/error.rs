//! Errors of the protocol: [`ErrorCode`] and [`ErrorReply`] (what an error
//! reply carries), and why input was refused: [`ProtocolError`] (a command
//! frame), [`PayloadError`] (publication data), [`ChannelError`] (a name).

use std::fmt;

use super::codes::close;
use super::encoding::{Encoding, MAX_CHANNEL_LEN};
use crate::close::CloseCode;

/// Error codes carried by error replies (`{"error": {"code": N, ...}}`).
/// Documented in docs/PROTOCOL.md; numbers never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// 100: the server failed (its fault); the client may retry later.
    Internal = 100,
    /// 101: the command is malformed: a field missing or of the wrong type,
    /// data that is not JSON (or has no JSON equivalent), several commands
    /// in one message.
    BadRequest = 101,
    /// 102: the message names no command this server knows.
    UnknownCommand = 102,
    /// 103: the channel's namespace is not configured on the server.
    UnknownNamespace = 103,
    /// 104: the namespace does not allow this (e.g. client publish is off).
    PermissionDenied = 104,
    /// 105: this connection is already subscribed to the channel.
    AlreadySubscribed = 105,
    /// 106: this connection is not subscribed to the channel.
    NotSubscribed = 106,
    /// 107: a server limit was hit (e.g. subscriptions per connection).
    LimitExceeded = 107,
    /// 108: the feature is off for this channel's namespace (presence or
    /// history disabled).
    NotAvailable = 108,
    /// 109: the channel name is invalid (see [`validate_channel`](super::validate_channel)).
    BadChannel = 109,
    /// 110: the position asked for (`since` of history) is no longer in the
    /// channel's history, or belongs to another epoch.
    Unrecoverable = 110,
    /// 111: the token (connection or subscription) has expired: get a new
    /// one and send the command again.
    TokenExpired = 111,
    /// 112: bad or missing credentials (no `connect` yet where one is
    /// required, a token that does not verify).
    Unauthorized = 112,
}

impl ErrorCode {
    /// Every code, in numeric order (for docs and tests).
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Internal,
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::UnknownNamespace,
        ErrorCode::PermissionDenied,
        ErrorCode::AlreadySubscribed,
        ErrorCode::NotSubscribed,
        ErrorCode::LimitExceeded,
        ErrorCode::NotAvailable,
        ErrorCode::BadChannel,
        ErrorCode::Unrecoverable,
        ErrorCode::TokenExpired,
        ErrorCode::Unauthorized,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short description, used as the default message.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownCommand => "unknown command",
            ErrorCode::UnknownNamespace => "unknown namespace",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::NotSubscribed => "not subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::BadChannel => "bad channel name",
            ErrorCode::Unrecoverable => "unrecoverable position",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }

    /// The HTTP status the HTTP API answers with for this error: the same
    /// failure gets the same meaning over both transports.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Internal => 500,
            ErrorCode::BadRequest | ErrorCode::UnknownCommand | ErrorCode::BadChannel => 400,
            ErrorCode::UnknownNamespace => 404,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::AlreadySubscribed | ErrorCode::NotSubscribed | ErrorCode::NotAvailable => {
                409
            }
            ErrorCode::LimitExceeded => 429,
            ErrorCode::Unrecoverable => 410,
            ErrorCode::TokenExpired | ErrorCode::Unauthorized => 401,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// The codes an application's backend may answer with (a proxy's
/// `{"error"}`, see [`crate::proxy`]): apart from wavecast's own, which
/// stay below 400.
pub const APP_ERROR_CODES: std::ops::RangeInclusive<u16> = 400..=1999;

/// The body of an error reply: a code from the documented set and a
/// human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorReply {
    /// What went wrong, as a stable number.
    pub code: ErrorCode,
    /// Details for humans; clients must not parse it.
    pub message: String,
}

impl ErrorReply {
    /// An error reply with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

/// Why a client's frame cannot be trusted at all. Always the client's fault;
/// the connection is closed with [`close::BAD_COMMAND`], since there is no id
/// to answer to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedFrame {
    /// The bytes are not one well-formed value of the connection's encoding
    /// (or repeat a top-level field).
    #[error("not a valid {encoding:?} message: {message}")]
    Syntax {
        /// The encoding the frame was decoded with.
        encoding: Encoding,
        /// The decoder's description of the fault.
        message: String,
    },
    /// The message is a valid value but not an object (map).
    #[error("the message is not an object")]
    NotAnObject,
    /// The message has no `id` field.
    #[error("the message has no id")]
    MissingId,
    /// The `id` is 0, which is reserved (pushes carry no id).
    #[error("the message id is 0; ids start at 1")]
    ZeroId,
}

/// A client command that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame cannot be trusted (class (a)): close the connection with
    /// [`ProtocolError::close_code`].
    #[error("malformed frame from client: {0}")]
    Malformed(#[from] MalformedFrame),
    /// The frame has a usable id but its command is unknown or malformed
    /// (class (b)): answer with an error reply carrying `id`; the connection
    /// stays open.
    #[error("bad command {id} from client: {reply}")]
    Command {
        /// The id of the command, for the error reply.
        id: u64,
        /// The error reply to send.
        reply: ErrorReply,
    },
}

impl ProtocolError {
    pub(super) fn command(id: u64, code: ErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError::Command {
            id,
            reply: ErrorReply::new(code, message),
        }
    }

    /// The close code to close the connection with, for errors that end it
    /// (`None` for errors answered with an error reply).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ProtocolError::Malformed(_) => Some(close::BAD_COMMAND),
            ProtocolError::Command { .. } => None,
        }
    }

    /// The id and error reply to answer with, for errors that keep the
    /// connection (`None` for errors that close it).
    pub fn error_reply(&self) -> Option<(u64, &ErrorReply)> {
        match self {
            ProtocolError::Malformed(_) => None,
            ProtocolError::Command { id, reply } => Some((*id, reply)),
        }
    }
}

/// Why bytes were refused as publication data. The sender's fault: error
/// code [`ErrorCode::BadRequest`] on the WebSocket, HTTP 400 on the API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not one valid JSON value (syntax, a number out of range, a lone
    /// surrogate, nesting deeper than [`MAX_DATA_DEPTH`](super::MAX_DATA_DEPTH)).
    #[error("data is not valid JSON: {0}")]
    Json(String),
    /// Not one valid MessagePack value, or a value with no JSON equivalent
    /// (binary, extension types, non-string map keys, NaN or infinities,
    /// nesting deeper than [`MAX_DATA_DEPTH`](super::MAX_DATA_DEPTH)).
    #[error("data is not valid MessagePack with a JSON equivalent: {0}")]
    MsgPack(String),
}

impl PayloadError {
    /// The error code of an error reply about this data.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// Why a channel name is invalid. The client's fault: error code
/// [`ErrorCode::BadChannel`], HTTP 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    /// The name contains whitespace or a control character.
    #[error("channel name contains whitespace or a control character ({0:?})")]
    ForbiddenChar(char),
    /// The name has a `:` but nothing before it (`:room`).
    #[error("channel namespace is empty")]
    EmptyNamespace,
    /// The name has a namespace but nothing after the `:` (`chat:`).
    #[error("channel name after the namespace is empty")]
    EmptyName,
}

impl ChannelError {
    /// The error code of an error reply about this channel name.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::BadChannel
    }
}
