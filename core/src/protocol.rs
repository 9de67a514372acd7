//! The pub/sub wire protocol, version 1: commands from clients, replies and
//! pushes from the server, in JSON (text frames) or MessagePack (binary
//! frames). docs/PROTOCOL.md is the user-facing description; this module is
//! its implementation, and the two must agree.
//!
//! One WebSocket message carries one command, reply or push:
//! - a command: `{"id": 1, "subscribe": {"channel": "news"}}`, where `id`
//!   (an integer >= 1 chosen by the client) comes back in the reply;
//! - a reply: `{"id": 1, "subscribe": {...}}` or
//!   `{"id": 1, "error": {"code": 101, "message": "..."}}`;
//! - a push (no id): `{"push": {"channel": "news", "pub": {...}}}`.
//!
//! Decoding sorts bad input into two classes ([`ProtocolError`]): a frame
//! that cannot be trusted at all (not JSON/MessagePack, not an object, no
//! usable id) closes the connection with [`close::BAD_COMMAND`]; a frame with
//! a usable id whose command is unknown or malformed gets an error reply with
//! that id, and the connection stays open.
//!
//! Publication data is held canonically as validated JSON text
//! ([`Payload`]): a JSON publish is validated once and then spliced verbatim
//! into every JSON push; a MessagePack publish is transcoded to JSON once.
//! Encoding a push for MessagePack clients transcodes the data once per
//! publication, and the resulting frame is shared by every subscriber.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::frame::OpCode;

/// Subprotocol name of the JSON encoding (also the default when the client
/// asks for no subprotocol).
pub const SUBPROTOCOL_JSON: &str = "wavecast.json";
/// Subprotocol name of the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "wavecast.msgpack";
/// The subprotocols the server offers, in its order of preference when a
/// client offers several (JSON first: it is the documented default).
pub const SUBPROTOCOLS: [&str; 2] = [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK];

/// Deepest nesting of arrays and objects allowed inside publication data
/// (`[]` is depth 1, `[[1]]` depth 2). Bounds recursion in every decoder and
/// transcoder, so hostile data cannot exhaust the stack; the same limit holds
/// in both encodings, so any valid payload can be sent to any client.
pub const MAX_DATA_DEPTH: usize = 64;

/// Depth allowed for a whole MessagePack frame while it is transcoded: the
/// envelope and the command body wrap the data in two more levels.
const MAX_FRAME_DEPTH: usize = MAX_DATA_DEPTH + 2;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Separates a channel's namespace from the rest of its name (`chat:room1`).
pub const NAMESPACE_SEPARATOR: char = ':';

// ---------------------------------------------------------------------------
// Encoding

/// The encoding of one connection, chosen once by subprotocol at the
/// handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    /// JSON in text frames (`wavecast.json`, or no subprotocol).
    Json,
    /// MessagePack in binary frames (`wavecast.msgpack`).
    MsgPack,
}

impl Encoding {
    /// Every encoding, in [`Encoding::index`] order: fan-out encodes a
    /// publication at most once per entry.
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::MsgPack];

    /// The encoding named by the negotiated subprotocol: `None` (the client
    /// asked for none) and `wavecast.json` mean JSON, `wavecast.msgpack`
    /// means MessagePack; any other name is not ours and gives `None`.
    pub fn from_subprotocol(subprotocol: Option<&str>) -> Option<Encoding> {
        match subprotocol {
            None | Some(SUBPROTOCOL_JSON) => Some(Encoding::Json),
            Some(SUBPROTOCOL_MSGPACK) => Some(Encoding::MsgPack),
            Some(_) => None,
        }
    }

    /// The subprotocol name of this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// The frame type this encoding travels in, both ways: JSON in text
    /// frames, MessagePack in binary frames. A message of the other type on
    /// a connection is a bad command.
    pub fn frame_opcode(self) -> OpCode {
        match self {
            Encoding::Json => OpCode::Text,
            Encoding::MsgPack => OpCode::Binary,
        }
    }

    /// A dense index (0 for JSON, 1 for MessagePack) for per-encoding arrays
    /// such as "this publication, encoded once per encoding".
    pub fn index(self) -> usize {
        match self {
            Encoding::Json => 0,
            Encoding::MsgPack => 1,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

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
    /// 109: the channel name is invalid (see [`validate_channel`]).
    BadChannel = 109,
    /// 110: the position asked for (`since` of history) is no longer in the
    /// channel's history, or belongs to another epoch.
    Unrecoverable = 110,
}

impl ErrorCode {
    /// Every code, in numeric order (for docs and tests).
    pub const ALL: [ErrorCode; 11] = [
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
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

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
    fn command(id: u64, code: ErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError::Command {
            id,
            reply: ErrorReply::new(code, message),
        }
    }

    /// The close code to close the connection with, for errors that end it
    /// (`None` for errors answered with an error reply).
    pub fn close_code(&self) -> Option<u16> {
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
    /// surrogate, nesting deeper than [`MAX_DATA_DEPTH`]).
    #[error("data is not valid JSON: {0}")]
    Json(String),
    /// Not one valid MessagePack value, or a value with no JSON equivalent
    /// (binary, extension types, non-string map keys, NaN or infinities,
    /// nesting deeper than [`MAX_DATA_DEPTH`]).
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

// ---------------------------------------------------------------------------
// Close codes

/// WebSocket close codes the server uses to end a connection. Codes
/// 4000-4499 mean "reconnect (with backoff), then resubscribe with recover";
/// codes 4500-4999 mean "do not reconnect": reconnecting would only repeat
/// the failure. Documented in docs/PROTOCOL.md.
pub mod close {
    /// The server is shutting down or restarting; reconnect and recover.
    pub const SHUTDOWN: u16 = 4000;
    /// Nothing arrived from the client (not even a pong) within the
    /// heartbeat deadline; reconnect.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The client read too slowly: its outbound queue outgrew its budget and
    /// publications were dropped; reconnect and recover.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// The server lost state it needs for this connection (a gap from the
    /// backbone it cannot fill); reconnect and recover.
    pub const INSUFFICIENT_STATE: u16 = 4003;
    /// Disconnected through the server API, reconnecting allowed.
    pub const DISCONNECTED: u16 = 4004;
    /// The client sent a message that cannot be trusted (not the
    /// connection's encoding, not an object, no usable id, wrong frame
    /// type); a client bug, so do not reconnect.
    pub const BAD_COMMAND: u16 = 4500;
    /// Disconnected through the server API for good; do not reconnect.
    pub const FORCE_DISCONNECT: u16 = 4501;

    /// Every wavecast close code, in numeric order (for docs and tests).
    pub const ALL: [u16; 7] = [
        SHUTDOWN,
        HEARTBEAT_TIMEOUT,
        SLOW_CONSUMER,
        INSUFFICIENT_STATE,
        DISCONNECTED,
        BAD_COMMAND,
        FORCE_DISCONNECT,
    ];

    /// Whether a client whose connection closed with `code` should
    /// reconnect (with backoff) and resubscribe with recover.
    ///
    /// 4000-4499: yes; 4500-4999: no. For the standard codes: 1000 (a normal
    /// closure, which the client asked for) and the codes that say the
    /// client broke the WebSocket protocol (1002, 1003, 1007, 1008, 1009,
    /// 1010) mean no; anything else (1001 going away, 1006 abnormal closure,
    /// 1011 server error, 1012 restart, 1013 try again later, ...) means yes.
    pub fn should_reconnect(code: u16) -> bool {
        match code {
            4000..=4499 => true,
            4500..=4999 => false,
            1000 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010 => false,
            _ => true,
        }
    }

    /// The short reason text sent in the close frame with `code` (well
    /// under the 123-byte limit of RFC 6455 section 5.5).
    pub fn reason(code: u16) -> &'static str {
        match code {
            SHUTDOWN => "server shutdown",
            HEARTBEAT_TIMEOUT => "heartbeat timeout",
            SLOW_CONSUMER => "slow consumer",
            INSUFFICIENT_STATE => "insufficient state",
            DISCONNECTED => "disconnected",
            BAD_COMMAND => "bad command",
            FORCE_DISCONNECT => "disconnected, do not reconnect",
            _ => "",
        }
    }
}

/// Codes of the server-side unsubscribe push
/// (`{"push": {"channel": C, "unsubscribe": {"code": N, "reason": R}}}`).
/// Codes 2000-2499 mean "stay unsubscribed"; 2500-2999 mean "resubscribe
/// with recover" (the subscription had a gap the server cannot fill).
pub mod unsubscribe_code {
    /// Unsubscribed by the server (e.g. through the server API); do not
    /// resubscribe.
    pub const SERVER: u16 = 2000;
    /// The server could not deliver every publication to this subscription
    /// (a gap it cannot fill); resubscribe with recover from the last offset
    /// received.
    pub const INSUFFICIENT_STATE: u16 = 2500;

    /// Whether the client should resubscribe (with recover) after an
    /// unsubscribe push with `code`.
    pub fn should_resubscribe(code: u16) -> bool {
        (2500..=2999).contains(&code)
    }
}

// ---------------------------------------------------------------------------
// Channels

/// Checks a channel name: 1 to [`MAX_CHANNEL_LEN`] bytes of UTF-8, no
/// whitespace or control characters; if it has a `:`, the namespace before
/// the first `:` and the rest after it are both non-empty.
pub fn validate_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.is_empty() {
        return Err(ChannelError::Empty);
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong(channel.len()));
    }
    if let Some(c) = channel
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ChannelError::ForbiddenChar(c));
    }
    if let Some((ns, name)) = channel.split_once(NAMESPACE_SEPARATOR) {
        if ns.is_empty() {
            return Err(ChannelError::EmptyNamespace);
        }
        if name.is_empty() {
            return Err(ChannelError::EmptyName);
        }
    }
    Ok(())
}

/// The namespace of a channel: the part before the first `:` (`chat` for
/// `chat:room1`), or `None` for a channel without one, which takes the
/// default options.
pub fn namespace(channel: &str) -> Option<&str> {
    channel
        .split_once(NAMESPACE_SEPARATOR)
        .map(|(namespace, _)| namespace)
}

// ---------------------------------------------------------------------------
// Payload

/// Publication data in canonical form: one valid JSON value as text, shared
/// (cloning is a reference count). Built from JSON bytes (validated) or from
/// a MessagePack value (transcoded once). Its invariant, which the encoders
/// rely on: the bytes are one JSON value of nesting depth at most
/// [`MAX_DATA_DEPTH`] whose numbers fit an `f64`, without leading or trailing
/// whitespace; so it can be spliced into JSON and transcoded to MessagePack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// Validates JSON bytes (an HTTP body, a test literal) and copies them.
    pub fn from_json(json: &[u8]) -> Result<Payload, PayloadError> {
        let trimmed = trim_json_whitespace(json);
        validate_json(trimmed)?;
        Ok(Payload(Bytes::copy_from_slice(trimmed)))
    }

    /// Validates JSON bytes and keeps them without a copy.
    pub fn from_json_bytes(json: Bytes) -> Result<Payload, PayloadError> {
        let trimmed = trim_json_whitespace(&json);
        validate_json(trimmed)?;
        Ok(Payload(json.slice_ref(trimmed)))
    }

    /// Transcodes one MessagePack value to JSON text. Values with no JSON
    /// equivalent (binary, extensions, non-string map keys, NaN and
    /// infinities) are refused.
    pub fn from_msgpack(msgpack: &[u8]) -> Result<Payload, PayloadError> {
        let json = msgpack_to_json(msgpack, MAX_DATA_DEPTH).map_err(PayloadError::MsgPack)?;
        Ok(Payload(Bytes::from(json)))
    }

    /// The JSON `null`.
    pub fn null() -> Payload {
        Payload(Bytes::from_static(b"null"))
    }

    /// The data as JSON text (valid UTF-8).
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes of the JSON text.
    pub fn json_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The data as one MessagePack value (maps with string keys; integers as
    /// MessagePack integers, other numbers as float 64).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len());
        self.write_msgpack(&mut out);
        out
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a JSON value is at least one byte long. Present because
    /// `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn write_msgpack(&self, out: &mut Vec<u8>) {
        match serde_json::from_slice::<serde_json::Value>(&self.0) {
            Ok(value) => mp_value(out, &value),
            // Unreachable: the constructors validated the text with the same
            // parser and a tighter depth limit. Writing nil keeps the frame
            // well-formed rather than panicking in the server.
            Err(_) => {
                debug_assert!(false, "Payload invariant broken");
                out.push(0xc0);
            }
        }
    }
}

fn trim_json_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn validate_json(json: &[u8]) -> Result<(), PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    ValidateSeed { depth: 0 }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| PayloadError::Json(e.to_string()))
}

/// Walks a JSON value without building it, checking what serde_json's
/// skipping parser does not: numbers in range, strings (keys included) fully
/// decoded (lone surrogates), and the depth limit.
struct ValidateSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValidateSeed {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValidateSeed {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        while seq.next_element_seed(ValidateSeed { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        while map.next_key::<StrOnly>()?.is_some() {
            map.next_value_seed(ValidateSeed { depth })?;
        }
        Ok(())
    }
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    let depth = depth.saturating_add(1);
    if depth > MAX_DATA_DEPTH {
        Err(E::custom(format_args!(
            "nested deeper than {MAX_DATA_DEPTH} levels"
        )))
    } else {
        Ok(depth)
    }
}

/// A map key that must be a string (forces full decoding of its escapes).
struct StrOnly;

impl<'de> Deserialize<'de> for StrOnly {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<StrOnly, D::Error> {
        deserializer.deserialize_str(StrOnly)
    }
}

impl Visitor<'_> for StrOnly {
    type Value = StrOnly;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, _: &str) -> Result<StrOnly, E> {
        Ok(StrOnly)
    }
}

// ---------------------------------------------------------------------------
// Commands

/// A position in a channel's stream: the epoch (which changes whenever the
/// channel's history is lost, e.g. when the channel is recreated) and the
/// offset of a publication within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct StreamPosition {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset of the last publication seen (0: none yet).
    pub offset: u64,
}

/// One client command with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's id for the command (>= 1), echoed in the reply.
    pub id: u64,
    /// What the client asks for.
    pub command: Command,
}

/// A client command. Channel names are validated by [`decode_request`];
/// namespaces (which need the configuration) are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Subscribe to a channel; with `recover`, also get the publications
    /// after that position.
    Subscribe {
        /// The channel.
        channel: String,
        /// The last position the client saw, when resubscribing.
        recover: Option<StreamPosition>,
    },
    /// Unsubscribe from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish data to a channel.
    Publish {
        /// The channel.
        channel: String,
        /// The data, any JSON value.
        data: Payload,
    },
    /// List the clients subscribed to a channel.
    Presence {
        /// The channel.
        channel: String,
    },
    /// Read a channel's history.
    History {
        /// The channel.
        channel: String,
        /// Return the publications after this position (all kept ones when
        /// absent).
        since: Option<StreamPosition>,
        /// Return at most this many publications (the server's default when
        /// absent; 0 returns only the current position).
        limit: Option<u32>,
    },
}

impl Command {
    /// The command's name on the wire (`subscribe`, ...), which is also the
    /// field name of its reply.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish { .. } => "publish",
            Command::Presence { .. } => "presence",
            Command::History { .. } => "history",
        }
    }

    /// The channel the command is about.
    pub fn channel(&self) -> &str {
        match self {
            Command::Subscribe { channel, .. }
            | Command::Unsubscribe { channel }
            | Command::Publish { channel, .. }
            | Command::Presence { channel }
            | Command::History { channel, .. } => channel,
        }
    }
}

/// The top level of a command. Every command is an optional field so that
/// exactly-one can be checked after the id is known, and each body is kept
/// raw so that its faults become error replies, not closes. Unknown fields
/// are ignored (forward compatibility).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    subscribe: Option<&'a RawValue>,
    #[serde(borrow, default)]
    unsubscribe: Option<&'a RawValue>,
    #[serde(borrow, default)]
    publish: Option<&'a RawValue>,
    #[serde(borrow, default)]
    presence: Option<&'a RawValue>,
    #[serde(borrow, default)]
    history: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChannelBody {
    channel: String,
}

#[derive(Deserialize)]
struct SubscribeBody<'a> {
    channel: String,
    #[serde(borrow, default)]
    recover: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct HistoryBody<'a> {
    channel: String,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Decodes one client message (the payload of one text frame for JSON, one
/// binary frame for MessagePack).
pub fn decode_request(encoding: Encoding, bytes: &[u8]) -> Result<Request, ProtocolError> {
    match encoding {
        Encoding::Json => decode_json_request(bytes, Encoding::Json),
        Encoding::MsgPack => decode_msgpack_request(bytes),
    }
}

/// `label` is the encoding the client used, for error messages: MessagePack
/// commands are transcoded and then decoded here.
fn decode_json_request(bytes: &[u8], label: Encoding) -> Result<Request, ProtocolError> {
    let syntax = |message: String| MalformedFrame::Syntax {
        encoding: label,
        message,
    };
    // serde's derived struct decoding also accepts arrays; the protocol
    // does not, so look at the first byte.
    match trim_json_whitespace(bytes).first() {
        None => return Err(syntax("empty message".into()).into()),
        Some(b'{') => {}
        Some(_) => {
            // A syntax error is more useful to report than "not an object"
            // if the bytes are not JSON at all.
            return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => MalformedFrame::NotAnObject,
                Err(e) => syntax(e.to_string()),
            }
            .into());
        }
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| syntax(e.to_string()))?;
    let id = match envelope.id {
        None => return Err(MalformedFrame::MissingId.into()),
        Some(0) => return Err(MalformedFrame::ZeroId.into()),
        Some(id) => id,
    };
    let bad = |message: String| ProtocolError::command(id, ErrorCode::BadRequest, message);

    let present = [
        envelope.subscribe.is_some(),
        envelope.unsubscribe.is_some(),
        envelope.publish.is_some(),
        envelope.presence.is_some(),
        envelope.history.is_some(),
    ]
    .into_iter()
    .filter(|&p| p)
    .count();
    if present > 1 {
        return Err(bad("more than one command in one message".into()));
    }

    let command = if let Some(raw) = envelope.subscribe {
        let body: SubscribeBody<'_> = parse_body(raw, "subscribe").map_err(bad)?;
        let recover = match body.recover {
            Some(raw) => Some(parse_body::<StreamPosition>(raw, "subscribe.recover").map_err(bad)?),
            None => None,
        };
        Command::Subscribe {
            channel: body.channel,
            recover,
        }
    } else if let Some(raw) = envelope.unsubscribe {
        let body: ChannelBody = parse_body(raw, "unsubscribe").map_err(bad)?;
        Command::Unsubscribe {
            channel: body.channel,
        }
    } else if let Some(raw) = envelope.publish {
        let body: PublishBody<'_> = parse_body(raw, "publish").map_err(bad)?;
        let data = Payload::from_json(body.data.get().as_bytes())
            .map_err(|e| bad(format!("publish.data: {e}")))?;
        Command::Publish {
            channel: body.channel,
            data,
        }
    } else if let Some(raw) = envelope.presence {
        let body: ChannelBody = parse_body(raw, "presence").map_err(bad)?;
        Command::Presence {
            channel: body.channel,
        }
    } else if let Some(raw) = envelope.history {
        let body: HistoryBody<'_> = parse_body(raw, "history").map_err(bad)?;
        let since = match body.since {
            Some(raw) => Some(parse_body::<StreamPosition>(raw, "history.since").map_err(bad)?),
            None => None,
        };
        Command::History {
            channel: body.channel,
            since,
            limit: body.limit,
        }
    } else {
        return Err(ProtocolError::command(
            id,
            ErrorCode::UnknownCommand,
            "no known command in the message",
        ));
    };

    validate_channel(command.channel())
        .map_err(|e| ProtocolError::command(id, e.error_code(), e.to_string()))?;
    Ok(Request { id, command })
}

/// Decodes a command body, which must be an object (serde's derive would
/// also take an array).
fn parse_body<'a, T: Deserialize<'a>>(raw: &'a RawValue, what: &str) -> Result<T, String> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err(format!("{what}: expected an object"));
    }
    serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))
}

/// MessagePack commands are transcoded to JSON text and decoded by the JSON
/// path, so that both encodings share one definition of every command.
/// Transcoding is cheap next to a command's work, and publication data must
/// become JSON text anyway.
fn decode_msgpack_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    match bytes.first() {
        None => {
            return Err(MalformedFrame::Syntax {
                encoding: Encoding::MsgPack,
                message: "empty message".into(),
            }
            .into())
        }
        Some(&marker) if is_msgpack_map_marker(marker) => {}
        Some(_) => {
            return Err(match skip_msgpack(bytes) {
                Ok(()) => MalformedFrame::NotAnObject,
                Err(message) => MalformedFrame::Syntax {
                    encoding: Encoding::MsgPack,
                    message,
                },
            }
            .into())
        }
    }
    match msgpack_to_json(bytes, MAX_FRAME_DEPTH) {
        Ok(json) => decode_json_request(&json, Encoding::MsgPack),
        // The frame has something JSON cannot express (or is malformed).
        // If its envelope still yields a usable id, the client gets an
        // error reply; otherwise the frame cannot be trusted.
        Err(message) => match msgpack_envelope_id(bytes) {
            Ok(Some(0)) => Err(MalformedFrame::ZeroId.into()),
            Ok(Some(id)) => Err(ProtocolError::command(
                id,
                ErrorCode::BadRequest,
                format!("no JSON equivalent: {message}"),
            )),
            Ok(None) => Err(MalformedFrame::MissingId.into()),
            Err(_) => Err(MalformedFrame::Syntax {
                encoding: Encoding::MsgPack,
                message,
            }
            .into()),
        },
    }
}

fn is_msgpack_map_marker(marker: u8) -> bool {
    matches!(marker, 0x80..=0x8f | 0xde | 0xdf)
}

/// Checks that `bytes` is exactly one well-formed MessagePack value.
fn skip_msgpack(bytes: &[u8]) -> Result<(), String> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    IgnoredAny::deserialize(&mut de).map_err(|e| e.to_string())?;
    ensure_consumed(de.position(), bytes.len())
}

fn ensure_consumed(position: u64, len: usize) -> Result<(), String> {
    if usize::try_from(position).ok() == Some(len) {
        Ok(())
    } else {
        Err("trailing bytes after the value".into())
    }
}

/// Reads only the `id` of a MessagePack map, skipping every other value
/// whatever it holds. `Err` if the frame is not one well-formed map with
/// string keys.
fn msgpack_envelope_id(bytes: &[u8]) -> Result<Option<u64>, String> {
    struct IdVisitor;
    impl<'de> Visitor<'de> for IdVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
            let mut id = None;
            while let Some(key) = map.next_key_seed(KeySeed)? {
                if key {
                    if id.is_some() {
                        return Err(de::Error::duplicate_field("id"));
                    }
                    id = Some(map.next_value::<u64>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(id)
        }
    }
    /// A string key; `true` if it is `id`.
    struct KeySeed;
    impl<'de> DeserializeSeed<'de> for KeySeed {
        type Value = bool;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl Visitor<'_> for KeySeed {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E>(self, key: &str) -> Result<bool, E> {
            Ok(key == "id")
        }
    }

    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    let id = de::Deserializer::deserialize_map(&mut de, IdVisitor).map_err(|e| e.to_string())?;
    ensure_consumed(de.position(), bytes.len())?;
    Ok(id)
}

// ---------------------------------------------------------------------------
// MessagePack to JSON

/// Transcodes exactly one MessagePack value to compact JSON text, refusing
/// what JSON cannot express and nesting deeper than `max_depth`.
fn msgpack_to_json(bytes: &[u8], max_depth: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
    // The reader-based deserializer (not the slice one) reports how far it
    // read, which the trailing-bytes check needs; it copies strings into a
    // scratch buffer, which the output copies anyway.
    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    ToJson {
        out: &mut out,
        depth: 0,
        max_depth,
        comma: false,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    ensure_consumed(de.position(), bytes.len())?;
    Ok(out)
}

/// Writes the value it is given as JSON to `out`, after a comma if `comma`
/// (the seed is only run when an element exists, which is how elements get
/// their separators without knowing the count).
struct ToJson<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    max_depth: usize,
    comma: bool,
}

impl ToJson<'_> {
    fn child(&mut self, comma: bool) -> Result<ToJson<'_>, String> {
        let depth = self.depth.saturating_add(1);
        if depth > self.max_depth {
            return Err(format!("nested deeper than {} levels", self.max_depth));
        }
        Ok(ToJson {
            out: self.out,
            depth,
            max_depth: self.max_depth,
            comma,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ToJson<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b',');
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToJson<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value with a JSON equivalent")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        push_u64(self.out, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        if v < 0 {
            self.out.push(b'-');
        }
        push_u64(self.out, v.unsigned_abs());
        Ok(())
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("NaN or infinity has no JSON equivalent"));
        }
        // Debug formatting of a finite float is a valid JSON number that
        // reads back as the same value ("1.0", "1e-7"), and keeps a
        // fraction so the value stays a float on the way back.
        self.out.extend_from_slice(format!("{v:?}").as_bytes());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("NaN or infinity has no JSON equivalent"));
        }
        self.out.extend_from_slice(format!("{v:?}").as_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        push_json_str(self.out, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.child(false).map_err(de::Error::custom)?;
        self.out.push(b'[');
        let mut first = true;
        while seq
            .next_element_seed(self.child(!first).map_err(de::Error::custom)?)?
            .is_some()
        {
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.child(false).map_err(de::Error::custom)?;
        self.out.push(b'{');
        let mut first = true;
        while map
            .next_key_seed(KeyToJson {
                out: self.out,
                comma: !first,
            })?
            .is_some()
        {
            first = false;
            self.out.push(b':');
            map.next_value_seed(self.child(false).map_err(de::Error::custom)?)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// Writes a map key, which must be a string (JSON has no other keys).
struct KeyToJson<'o> {
    out: &'o mut Vec<u8>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for KeyToJson<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyToJson<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string map key (JSON has no other keys)")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.comma {
            self.out.push(b',');
        }
        push_json_str(self.out, v);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Replies and pushes

/// A publication as delivered: its offset in the channel and its data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Publication {
    /// Offset in the channel's stream (strictly increasing, from 1).
    pub offset: u64,
    /// The data.
    pub data: Payload,
}

/// A client in a presence list or a join/leave push.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientInfo {
    /// The connection's id, unique on the server (cluster).
    pub client: String,
    /// The user the connection belongs to (may be empty for anonymous).
    pub user: String,
}

/// The recovery part of a subscribe reply, present when the client asked to
/// recover.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Recovery {
    /// True if `publications` are exactly the ones after the asked position;
    /// false if the position is gone (another epoch, or history moved past
    /// it): the client has missed data it cannot get back.
    pub recovered: bool,
    /// The missed publications in offset order (empty unless recovered).
    pub publications: Vec<Publication>,
}

/// A reply to a command (the id is passed to [`encode_reply`] beside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Subscribed.
    Subscribe {
        /// The channel's current epoch.
        epoch: String,
        /// The channel's current top offset (the last publication; 0 if
        /// none yet). Pushes on this subscription start after it.
        offset: u64,
        /// The outcome of `recover`, when it was asked.
        recovery: Option<Recovery>,
    },
    /// Unsubscribed.
    Unsubscribe,
    /// Published.
    Publish {
        /// The offset the publication got.
        offset: u64,
    },
    /// The channel's subscribers. Client ids must be unique (they become
    /// the keys of a JSON object).
    Presence {
        /// One entry per subscribed connection.
        clients: Vec<ClientInfo>,
    },
    /// The channel's history.
    History {
        /// The channel's current epoch.
        epoch: String,
        /// The channel's current top offset.
        offset: u64,
        /// The publications asked for, in offset order.
        publications: Vec<Publication>,
    },
    /// The command failed.
    Error(ErrorReply),
}

/// A message from the server that answers no command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    /// A publication on a subscribed channel.
    Pub {
        /// The channel.
        channel: String,
        /// The publication.
        publication: Publication,
    },
    /// A client subscribed to the channel (if the namespace enables
    /// join/leave).
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        info: ClientInfo,
    },
    /// A client unsubscribed from the channel (if the namespace enables
    /// join/leave).
    Leave {
        /// The channel.
        channel: String,
        /// Who left.
        info: ClientInfo,
    },
    /// The server ended this subscription; see [`unsubscribe_code`].
    Unsubscribe {
        /// The channel.
        channel: String,
        /// Why, as a number from [`unsubscribe_code`].
        code: u16,
        /// Why, for humans.
        reason: String,
    },
}

impl Push {
    /// The channel the push is about.
    pub fn channel(&self) -> &str {
        match self {
            Push::Pub { channel, .. }
            | Push::Join { channel, .. }
            | Push::Leave { channel, .. }
            | Push::Unsubscribe { channel, .. } => channel,
        }
    }
}

/// The shape of an outgoing message, written by one JSON and one
/// MessagePack writer so both encodings have the same fields by
/// construction.
enum Tree<'a> {
    Map(Vec<(&'a str, Tree<'a>)>),
    Array(Vec<Tree<'a>>),
    Str(&'a str),
    U64(u64),
    Bool(bool),
    Data(&'a Payload),
}

impl Tree<'_> {
    fn write(&self, encoding: Encoding, out: &mut Vec<u8>) {
        match encoding {
            Encoding::Json => self.write_json(out),
            Encoding::MsgPack => self.write_msgpack(out),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Map(entries) => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_str(out, key);
                    out.push(b':');
                    value.write_json(out);
                }
                out.push(b'}');
            }
            Tree::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Tree::Str(s) => push_json_str(out, s),
            Tree::U64(n) => push_u64(out, *n),
            Tree::Bool(b) => out.extend_from_slice(if *b { b"true" as &[u8] } else { b"false" }),
            Tree::Data(payload) => out.extend_from_slice(payload.as_json()),
        }
    }

    fn write_msgpack(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Map(entries) => {
                mp_map_len(out, entries.len());
                for (key, value) in entries {
                    mp_str(out, key);
                    value.write_msgpack(out);
                }
            }
            Tree::Array(items) => {
                mp_array_len(out, items.len());
                for item in items {
                    item.write_msgpack(out);
                }
            }
            Tree::Str(s) => mp_str(out, s),
            Tree::U64(n) => mp_uint(out, *n),
            Tree::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Tree::Data(payload) => payload.write_msgpack(out),
        }
    }
}

fn publications_tree(publications: &[Publication]) -> Tree<'_> {
    Tree::Array(
        publications
            .iter()
            .map(|p| {
                Tree::Map(vec![
                    ("offset", Tree::U64(p.offset)),
                    ("data", Tree::Data(&p.data)),
                ])
            })
            .collect(),
    )
}

fn client_tree(info: &ClientInfo) -> Tree<'_> {
    Tree::Map(vec![
        ("client", Tree::Str(&info.client)),
        ("user", Tree::Str(&info.user)),
    ])
}

fn position_tree(position: &StreamPosition) -> Tree<'_> {
    Tree::Map(vec![
        ("epoch", Tree::Str(&position.epoch)),
        ("offset", Tree::U64(position.offset)),
    ])
}

/// Encodes a reply to command `id` (the message payload, not yet framed).
pub fn encode_reply(encoding: Encoding, id: u64, reply: &Reply) -> Bytes {
    let (name, body) = match reply {
        Reply::Subscribe {
            epoch,
            offset,
            recovery,
        } => {
            let mut fields = vec![("epoch", Tree::Str(epoch)), ("offset", Tree::U64(*offset))];
            if let Some(recovery) = recovery {
                fields.push(("recovered", Tree::Bool(recovery.recovered)));
                fields.push(("publications", publications_tree(&recovery.publications)));
            }
            ("subscribe", Tree::Map(fields))
        }
        Reply::Unsubscribe => ("unsubscribe", Tree::Map(Vec::new())),
        Reply::Publish { offset } => ("publish", Tree::Map(vec![("offset", Tree::U64(*offset))])),
        Reply::Presence { clients } => {
            let map = clients
                .iter()
                .map(|c| (c.client.as_str(), client_tree(c)))
                .collect();
            ("presence", Tree::Map(vec![("clients", Tree::Map(map))]))
        }
        Reply::History {
            epoch,
            offset,
            publications,
        } => (
            "history",
            Tree::Map(vec![
                ("epoch", Tree::Str(epoch)),
                ("offset", Tree::U64(*offset)),
                ("publications", publications_tree(publications)),
            ]),
        ),
        Reply::Error(error) => (
            "error",
            Tree::Map(vec![
                ("code", Tree::U64(error.code.code().into())),
                ("message", Tree::Str(&error.message)),
            ]),
        ),
    };
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![("id", Tree::U64(id)), (name, body)]).write(encoding, &mut out);
    Bytes::from(out)
}

/// Encodes a push (the message payload, not yet framed). Called once per
/// publication per encoding; the result is shared by every subscriber.
pub fn encode_push(encoding: Encoding, push: &Push) -> Bytes {
    let (kind, body) = match push {
        Push::Pub {
            channel,
            publication,
        } => return encode_pub(encoding, channel, publication),
        Push::Join { info, .. } => ("join", client_tree(info)),
        Push::Leave { info, .. } => ("leave", client_tree(info)),
        Push::Unsubscribe { code, reason, .. } => (
            "unsubscribe",
            Tree::Map(vec![
                ("code", Tree::U64((*code).into())),
                ("reason", Tree::Str(reason)),
            ]),
        ),
    };
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![(
        "push",
        Tree::Map(vec![("channel", Tree::Str(push.channel())), (kind, body)]),
    )])
    .write(encoding, &mut out);
    Bytes::from(out)
}

/// Encodes the push of one publication, borrowing its parts: the hot path of
/// fan-out, written out by hand. In JSON the data bytes are spliced in
/// verbatim; in MessagePack they are transcoded once.
pub fn encode_pub(encoding: Encoding, channel: &str, publication: &Publication) -> Bytes {
    let data = publication.data.as_json();
    match encoding {
        Encoding::Json => {
            // 49 bytes of fixed text plus up to 20 offset digits; escapes
            // in the channel name may add more (the Vec grows then).
            let mut out = Vec::with_capacity(data.len() + channel.len() + 72);
            out.extend_from_slice(b"{\"push\":{\"channel\":");
            push_json_str(&mut out, channel);
            out.extend_from_slice(b",\"pub\":{\"offset\":");
            push_u64(&mut out, publication.offset);
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data);
            out.extend_from_slice(b"}}}");
            Bytes::from(out)
        }
        Encoding::MsgPack => {
            let mut out = Vec::with_capacity(data.len() + channel.len() + 48);
            mp_map_len(&mut out, 1);
            mp_str(&mut out, "push");
            mp_map_len(&mut out, 2);
            mp_str(&mut out, "channel");
            mp_str(&mut out, channel);
            mp_str(&mut out, "pub");
            mp_map_len(&mut out, 2);
            mp_str(&mut out, "offset");
            mp_uint(&mut out, publication.offset);
            mp_str(&mut out, "data");
            publication.data.write_msgpack(&mut out);
            Bytes::from(out)
        }
    }
}

/// Encodes a command as a client sends it: for Rust clients, tests, the
/// model and the fuzzers (the server itself never sends commands).
/// `decode_request(encoding, &encode_request(encoding, r))` gives back `r`
/// (for MessagePack, with data equal as a JSON value).
pub fn encode_request(encoding: Encoding, request: &Request) -> Bytes {
    let body = match &request.command {
        Command::Subscribe { channel, recover } => {
            let mut fields = vec![("channel", Tree::Str(channel))];
            if let Some(position) = recover {
                fields.push(("recover", position_tree(position)));
            }
            Tree::Map(fields)
        }
        Command::Unsubscribe { channel } | Command::Presence { channel } => {
            Tree::Map(vec![("channel", Tree::Str(channel))])
        }
        Command::Publish { channel, data } => Tree::Map(vec![
            ("channel", Tree::Str(channel)),
            ("data", Tree::Data(data)),
        ]),
        Command::History {
            channel,
            since,
            limit,
        } => {
            let mut fields = vec![("channel", Tree::Str(channel))];
            if let Some(position) = since {
                fields.push(("since", position_tree(position)));
            }
            if let Some(limit) = limit {
                fields.push(("limit", Tree::U64((*limit).into())));
            }
            Tree::Map(fields)
        }
    };
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![
        ("id", Tree::U64(request.id)),
        (request.command.name(), body),
    ])
    .write(encoding, &mut out);
    Bytes::from(out)
}

// ---------------------------------------------------------------------------
// Low-level writers

/// Writes `s` as a JSON string literal: escapes `"`, `\` and the control
/// characters below 0x20, nothing else (JSON allows every other character).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        let (plain, tail) = rest.split_at(i);
        out.extend_from_slice(plain);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

fn mp_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xcd);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xce);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn mp_int(out: &mut Vec<u8>, n: i64) {
    if let Ok(n) = u64::try_from(n) {
        mp_uint(out, n);
    } else if n >= -32 {
        // Negative fixint: the two's-complement byte itself.
        out.push(n as u8);
    } else if let Ok(n) = i8::try_from(n) {
        out.push(0xd0);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Writes a length-prefixed header: `fix` holds lengths below `fix_limit`
/// in its low bits, then 16- and 32-bit lengths follow markers `m16`/`m32`.
/// Lengths over u32::MAX cannot occur (every input is bounded by the
/// message size limit); they are clamped so the writer never panics.
fn mp_len(out: &mut Vec<u8>, len: usize, fix: u8, fix_limit: usize, m16: u8, m32: u8) {
    if len < fix_limit {
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(m16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    }
}

fn mp_map_len(out: &mut Vec<u8>, len: usize) {
    mp_len(out, len, 0x80, 16, 0xde, 0xdf);
}

fn mp_array_len(out: &mut Vec<u8>, len: usize) {
    mp_len(out, len, 0x90, 16, 0xdc, 0xdd);
}

fn mp_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else {
        mp_len(out, len, 0, 0, 0xda, 0xdb);
    }
    out.extend_from_slice(s.as_bytes());
}

fn mp_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                mp_uint(out, n);
            } else if let Some(n) = n.as_i64() {
                mp_int(out, n);
            } else if let Some(f) = n.as_f64() {
                out.push(0xcb);
                out.extend_from_slice(&f.to_be_bytes());
            } else {
                out.push(0xc0);
            }
        }
        Value::String(s) => mp_str(out, s),
        Value::Array(items) => {
            mp_array_len(out, items.len());
            for item in items {
                mp_value(out, item);
            }
        }
        Value::Object(map) => {
            mp_map_len(out, map.len());
            for (key, item) in map {
                mp_str(out, key);
                mp_value(out, item);
            }
        }
    }
}
