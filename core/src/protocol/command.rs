//! Client commands: [`Request`] and [`Command`], decoded from JSON or
//! MessagePack ([`decode_request`]) with every fault sorted into a
//! [`ProtocolError`], and encoded as a client sends them
//! ([`encode_request`], for Rust clients, tests, the model and fuzzers).

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::channel::validate_channel;
use super::encoding::{Encoding, MAX_FRAME_DEPTH};
use super::error::{ErrorCode, MalformedFrame, ProtocolError};
use super::payload::{trim_json_whitespace, Payload};
use super::transcode::{ensure_consumed, msgpack_to_json};
use super::tree::Tree;

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Subscribe to a channel; with `recover`, also get the publications
    /// after that position.
    Subscribe {
        /// The channel.
        channel: String,
        /// The last position the client saw, when resubscribing.
        recover: Option<StreamPosition>,
        /// A subscription token, for channels that require one.
        token: Option<String>,
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
        /// Return the newest of them, newest first ("the last 50 messages
        /// of a room").
        reverse: bool,
    },
    /// Authenticate: the first command of a connection where
    /// authentication is on. Without a token, an anonymous connect (where
    /// anonymous connections are allowed).
    Connect {
        /// The connection token (a JWT).
        token: Option<String>,
        /// Data for the connect proxy (ignored without one).
        data: Option<Payload>,
        /// Ask for application-level pings: a `ping` push every heartbeat
        /// interval (browsers cannot see WebSocket pings).
        ping: bool,
    },
    /// Replace the connection's token with a fresh one (same user) before
    /// it expires.
    Refresh {
        /// The new connection token.
        token: String,
    },
    /// Replace a subscription's token with a fresh one before it expires.
    SubRefresh {
        /// The channel.
        channel: String,
        /// The new subscription token.
        token: String,
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
            Command::Connect { .. } => "connect",
            Command::Refresh { .. } => "refresh",
            Command::SubRefresh { .. } => "sub_refresh",
        }
    }

    /// The channel the command is about (`None` for the connection's own
    /// commands, `connect` and `refresh`).
    pub fn channel(&self) -> Option<&str> {
        match self {
            Command::Subscribe { channel, .. }
            | Command::Unsubscribe { channel }
            | Command::Publish { channel, .. }
            | Command::Presence { channel }
            | Command::History { channel, .. }
            | Command::SubRefresh { channel, .. } => Some(channel),
            Command::Connect { .. } | Command::Refresh { .. } => None,
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
    #[serde(borrow, default)]
    connect: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refresh: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sub_refresh: Option<&'a RawValue>,
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
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
}

/// `connect` and `refresh`: the token is kept raw so that a token of the
/// wrong type (`null` included) is told apart from no token.
#[derive(Deserialize)]
struct TokenBody<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    /// `connect` only: data for the connect proxy.
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    /// `connect` only: application-level pings asked (`null`: not).
    #[serde(default)]
    ping: Option<bool>,
}

#[derive(Deserialize)]
struct SubRefreshBody<'a> {
    channel: String,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
}

/// A field that is present, whatever its value: `null` is kept as a value
/// (`Some`), so that `"token": null` is a wrong type, not a missing token.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
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
    #[serde(default)]
    reverse: bool,
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
        envelope.connect.is_some(),
        envelope.refresh.is_some(),
        envelope.sub_refresh.is_some(),
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
        let token = match body.token {
            Some(raw) => Some(token_string(raw, "subscribe.token").map_err(bad)?),
            None => None,
        };
        Command::Subscribe {
            channel: body.channel,
            recover,
            token,
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
            reverse: body.reverse,
        }
    } else if let Some(raw) = envelope.connect {
        let body: TokenBody<'_> = parse_body(raw, "connect").map_err(bad)?;
        let token = match body.token {
            Some(raw) => Some(token_string(raw, "connect.token").map_err(bad)?),
            None => None,
        };
        let data = match body.data {
            Some(raw) => Some(
                Payload::from_json(raw.get().as_bytes())
                    .map_err(|e| bad(format!("connect.data: {e}")))?,
            ),
            None => None,
        };
        Command::Connect {
            token,
            data,
            ping: body.ping.unwrap_or(false),
        }
    } else if let Some(raw) = envelope.refresh {
        let body: TokenBody<'_> = parse_body(raw, "refresh").map_err(bad)?;
        let raw = body
            .token
            .ok_or_else(|| bad("refresh: missing field `token`".into()))?;
        Command::Refresh {
            token: token_string(raw, "refresh.token").map_err(bad)?,
        }
    } else if let Some(raw) = envelope.sub_refresh {
        let body: SubRefreshBody<'_> = parse_body(raw, "sub_refresh").map_err(bad)?;
        let raw = body
            .token
            .ok_or_else(|| bad("sub_refresh: missing field `token`".into()))?;
        Command::SubRefresh {
            channel: body.channel,
            token: token_string(raw, "sub_refresh.token").map_err(bad)?,
        }
    } else {
        return Err(ProtocolError::command(
            id,
            ErrorCode::UnknownCommand,
            "no known command in the message",
        ));
    };

    if let Some(channel) = command.channel() {
        validate_channel(channel)
            .map_err(|e| ProtocolError::command(id, e.error_code(), e.to_string()))?;
    }
    Ok(Request { id, command })
}

/// A token field, which must be a string.
fn token_string(raw: &RawValue, what: &str) -> Result<String, String> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| format!("{what}: expected a string"))
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

/// Encodes a command as a client sends it: for Rust clients, tests, the
/// model and the fuzzers (the server itself never sends commands).
/// `decode_request(encoding, &encode_request(encoding, r))` gives back `r`
/// (for MessagePack, with data equal as a JSON value).
pub fn encode_request(encoding: Encoding, request: &Request) -> Bytes {
    let body = match &request.command {
        Command::Subscribe {
            channel,
            recover,
            token,
        } => {
            let mut fields = vec![("channel", Tree::Str(channel))];
            if let Some(position) = recover {
                fields.push(("recover", position_tree(position)));
            }
            if let Some(token) = token {
                fields.push(("token", Tree::Str(token)));
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
            reverse,
        } => {
            let mut fields = vec![("channel", Tree::Str(channel))];
            if let Some(position) = since {
                fields.push(("since", position_tree(position)));
            }
            if let Some(limit) = limit {
                fields.push(("limit", Tree::U64((*limit).into())));
            }
            if *reverse {
                fields.push(("reverse", Tree::Bool(true)));
            }
            Tree::Map(fields)
        }
        Command::Connect { token, data, ping } => {
            let mut fields: Vec<_> = token.iter().map(|t| ("token", Tree::Str(t))).collect();
            if let Some(data) = data {
                fields.push(("data", Tree::Data(data)));
            }
            if *ping {
                fields.push(("ping", Tree::Bool(true)));
            }
            Tree::Map(fields)
        }
        Command::Refresh { token } => Tree::Map(vec![("token", Tree::Str(token))]),
        Command::SubRefresh { channel, token } => Tree::Map(vec![
            ("channel", Tree::Str(channel)),
            ("token", Tree::Str(token)),
        ]),
    };
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![
        ("id", Tree::U64(request.id)),
        (request.command.name(), body),
    ])
    .write(encoding, &mut out);
    Bytes::from(out)
}

fn position_tree(position: &StreamPosition) -> Tree<'_> {
    Tree::Map(vec![
        ("epoch", Tree::Str(&position.epoch)),
        ("offset", Tree::U64(position.offset)),
    ])
}
