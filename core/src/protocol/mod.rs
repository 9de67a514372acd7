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
//!
//! # Files, bottom up
//!
//! - `encoding.rs`: the subprotocols, [`Encoding`], and the limits
//!   (nesting depth, channel name length);
//! - `error.rs`: error codes and replies, and why input was refused;
//! - `codes.rs`: wavecast's close codes ([`close`]) and unsubscribe codes
//!   ([`unsubscribe_code`]);
//! - `channel.rs`: channel names and their namespace;
//! - `write.rs`: low-level JSON and MessagePack writers;
//! - `transcode.rs`: MessagePack to JSON;
//! - `payload.rs`: publication data ([`Payload`]);
//! - `tree.rs`: the shape of an outgoing message, one writer per encoding;
//! - `command.rs`: client commands, decoded and encoded;
//! - `reply.rs`: replies and pushes, encoded;
//! - `server_message.rs`: replies and pushes, decoded (the client side);
//! - `sse.rs`: the Server-Sent Events of `GET /sse` and their ids.

mod channel;
mod codes;
mod command;
mod encoding;
mod error;
mod payload;
mod reply;
mod server_message;
pub mod sse;
mod transcode;
mod tree;
mod write;

pub use channel::{namespace, validate_channel};
pub use codes::{close, unsubscribe_code};
pub use command::{decode_request, encode_request, Command, Request, StreamPosition};
pub use encoding::{
    Encoding, MAX_CHANNEL_LEN, MAX_DATA_DEPTH, NAMESPACE_SEPARATOR, SUBPROTOCOLS, SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
};
pub use error::{
    ChannelError, ErrorCode, ErrorReply, MalformedFrame, PayloadError, ProtocolError,
    APP_ERROR_CODES,
};
pub use payload::Payload;
pub use reply::{
    encode_pub, encode_push, encode_reply, encode_reply_body, ping_frame, ClientInfo, Publication,
    Push, Recovery, Reply,
};
pub use server_message::{decode_server_message, ServerMessage, ServerMessageError};
