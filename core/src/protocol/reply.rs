//! What the server sends: [`Reply`] (the answer to a command) and [`Push`]
//! (a publication, join, leave or unsubscribe), with their encoders in both
//! encodings; a publication's frame is encoded once and shared by every
//! subscriber ([`encode_pub`]).

use bytes::Bytes;

use super::command::StreamPosition;
use super::encoding::Encoding;
use super::error::ErrorReply;
use super::payload::Payload;
use super::tree::Tree;
use super::write::{mp_map_len, mp_str, mp_uint, push_json_str, push_u64};

/// A publication as delivered: its offset in the channel, its data, and,
/// for one a client made, who made it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Publication {
    /// Offset in the channel's stream (strictly increasing, from 1).
    pub offset: u64,
    /// The data.
    pub data: Payload,
    /// The connection that published it (`None` for the HTTP API): set by
    /// the server, so a room knows who spoke without trusting the data.
    /// Boxed: most publications come from backends and carry none.
    pub info: Option<Box<ClientInfo>>,
}

/// A client in a presence list or a join/leave push, and the sender of a
/// client's publication. Encoded as `{"client", "user"}`, with
/// `conn_info` and `chan_info` only when present (so a client without
/// either encodes as it always did).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientInfo {
    /// The connection's id, unique on the server (cluster).
    pub client: String,
    /// The user the connection belongs to (may be empty for anonymous).
    pub user: String,
    /// Public JSON about the connection: the `info` claim of its
    /// connection token, or the `info` of the connect proxy's result.
    pub conn_info: Option<Payload>,
    /// Public JSON about this subscription: the `info` claim of its
    /// subscription token.
    pub chan_info: Option<Payload>,
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
    /// Connected (authenticated, or anonymous).
    Connect {
        /// The connection's client id.
        client: String,
        /// The user (`sub` of the token; empty when anonymous).
        user: String,
        /// Seconds until the token expires (`None`: it does not; the reply
        /// says `"expires": false`).
        ttl: Option<u64>,
        /// Data for the client from the connect proxy's result.
        data: Option<Payload>,
        /// Where each server-side subscription (the token's or proxy's
        /// `channels`) starts; its pushes follow the reply.
        subs: Vec<(String, StreamPosition)>,
        /// The interval of application-level pings in seconds, when the
        /// connect asked for them (`None`: not asked).
        ping: Option<u64>,
    },
    /// The token was replaced.
    Refresh {
        /// Seconds until the new token expires (`None`: it does not).
        ttl: Option<u64>,
    },
    /// A subscription's token was replaced.
    SubRefresh {
        /// Seconds until the new token expires (`None`: it does not).
        ttl: Option<u64>,
    },
    /// The command failed.
    Error(ErrorReply),
    /// The command was refused by the application's backend (a proxy's
    /// `{"error"}`), with the application's own code (400-1999, apart
    /// from wavecast's codes) in the same shape as [`Reply::Error`].
    AppError {
        /// The application's code.
        code: u16,
        /// For humans.
        message: String,
    },
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
    /// The server ended this subscription; see [`unsubscribe_code`](super::unsubscribe_code).
    Unsubscribe {
        /// The channel.
        channel: String,
        /// Why, as a number from [`unsubscribe_code`](super::unsubscribe_code).
        code: u16,
        /// Why, for humans.
        reason: String,
    },
    /// An application-level ping, every heartbeat interval to a
    /// connection that asked for them in `connect`: the one push about no
    /// channel. A node sends [`ping_frame`]'s shared bytes, not this.
    Ping,
}

impl Push {
    /// The channel the push is about (`None` for a [`Push::Ping`]).
    pub fn channel(&self) -> Option<&str> {
        match self {
            Push::Pub { channel, .. }
            | Push::Join { channel, .. }
            | Push::Leave { channel, .. }
            | Push::Unsubscribe { channel, .. } => Some(channel),
            Push::Ping => None,
        }
    }
}

/// Encodes a reply to command `id` (the message payload, not yet framed).
pub fn encode_reply(encoding: Encoding, id: u64, reply: &Reply) -> Bytes {
    let (name, body) = reply_tree(reply);
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![("id", Tree::U64(id)), (name, body)]).write(encoding, &mut out);
    Bytes::from(out)
}

/// Encodes a reply's body alone (`{"offset": 7}` of `{"id": 1,
/// "publish": {"offset": 7}}`): the answer of a call over HTTP
/// ([`crate::call`]), the same as the command's reply.
pub fn encode_reply_body(encoding: Encoding, reply: &Reply) -> Bytes {
    let mut out = Vec::with_capacity(64);
    reply_tree(reply).1.write(encoding, &mut out);
    Bytes::from(out)
}

/// A reply's name and body.
fn reply_tree(reply: &Reply) -> (&'static str, Tree<'_>) {
    match reply {
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
        Reply::Connect {
            client,
            user,
            ttl,
            data,
            subs,
            ping,
        } => {
            let mut fields = vec![("client", Tree::Str(client)), ("user", Tree::Str(user))];
            expiry_fields(&mut fields, *ttl);
            if let Some(ping) = ping {
                fields.push(("ping", Tree::U64(*ping)));
            }
            if let Some(data) = data {
                fields.push(("data", Tree::Data(data)));
            }
            if !subs.is_empty() {
                let subs = subs
                    .iter()
                    .map(|(channel, position)| {
                        let at = vec![
                            ("epoch", Tree::Str(&position.epoch)),
                            ("offset", Tree::U64(position.offset)),
                        ];
                        (channel.as_str(), Tree::Map(at))
                    })
                    .collect();
                fields.push(("subs", Tree::Map(subs)));
            }
            ("connect", Tree::Map(fields))
        }
        Reply::Refresh { ttl } => {
            let mut fields = Vec::new();
            expiry_fields(&mut fields, *ttl);
            ("refresh", Tree::Map(fields))
        }
        Reply::SubRefresh { ttl } => {
            let mut fields = Vec::new();
            expiry_fields(&mut fields, *ttl);
            ("sub_refresh", Tree::Map(fields))
        }
        Reply::Error(error) => (
            "error",
            Tree::Map(vec![
                ("code", Tree::U64(error.code.code().into())),
                ("message", Tree::Str(&error.message)),
            ]),
        ),
        Reply::AppError { code, message } => (
            "error",
            Tree::Map(vec![
                ("code", Tree::U64((*code).into())),
                ("message", Tree::Str(message)),
            ]),
        ),
    }
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
        Push::Ping => ("ping", Tree::Map(Vec::new())),
    };
    let mut fields = Vec::with_capacity(2);
    if let Some(channel) = push.channel() {
        fields.push(("channel", Tree::Str(channel)));
    }
    fields.push((kind, body));
    let mut out = Vec::with_capacity(64);
    Tree::Map(vec![("push", Tree::Map(fields))]).write(encoding, &mut out);
    Bytes::from(out)
}

/// The application-level ping push, `{"push":{"ping":{}}}` (20 bytes of
/// JSON, 13 of MessagePack), as a whole server frame of `encoding`. A node
/// builds it once per encoding and queues clones of these bytes (a
/// reference count each) on every connection that asked for pings.
pub fn ping_frame(encoding: Encoding) -> Bytes {
    crate::frame::encode(encoding.frame_opcode(), &encode_push(encoding, &Push::Ping))
}

/// Encodes the push of one publication, borrowing its parts: the hot path of
/// fan-out, written out by hand. In JSON the data bytes are spliced in
/// verbatim; in MessagePack they are transcoded once.
pub fn encode_pub(encoding: Encoding, channel: &str, publication: &Publication) -> Bytes {
    let data = publication.data.as_json();
    // The sender's strings and JSON, and up to 64 bytes of field names and
    // headers around them.
    let info_size = publication
        .info
        .as_deref()
        .map_or(0, |info| info_len(info) + 64);
    match encoding {
        Encoding::Json => {
            // 49 bytes of fixed text plus up to 20 offset digits; escapes
            // in the channel name may add more (the Vec grows then).
            let mut out = Vec::with_capacity(data.len() + channel.len() + 72 + info_size);
            out.extend_from_slice(b"{\"push\":{\"channel\":");
            push_json_str(&mut out, channel);
            out.extend_from_slice(b",\"pub\":{\"offset\":");
            push_u64(&mut out, publication.offset);
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data);
            if let Some(info) = &publication.info {
                out.extend_from_slice(b",\"info\":{\"client\":");
                push_json_str(&mut out, &info.client);
                out.extend_from_slice(b",\"user\":");
                push_json_str(&mut out, &info.user);
                for (key, value) in info_payloads(info) {
                    out.push(b',');
                    push_json_str(&mut out, key);
                    out.push(b':');
                    out.extend_from_slice(value.as_json());
                }
                out.push(b'}');
            }
            out.extend_from_slice(b"}}}");
            Bytes::from(out)
        }
        Encoding::MsgPack => {
            let mut out = Vec::with_capacity(data.len() + channel.len() + 48 + info_size);
            mp_map_len(&mut out, 1);
            mp_str(&mut out, "push");
            mp_map_len(&mut out, 2);
            mp_str(&mut out, "channel");
            mp_str(&mut out, channel);
            mp_str(&mut out, "pub");
            mp_map_len(&mut out, if publication.info.is_some() { 3 } else { 2 });
            mp_str(&mut out, "offset");
            mp_uint(&mut out, publication.offset);
            mp_str(&mut out, "data");
            publication.data.write_msgpack(&mut out);
            if let Some(info) = &publication.info {
                mp_str(&mut out, "info");
                let payloads = info_payloads(info);
                mp_map_len(&mut out, 2 + payloads.clone().count());
                mp_str(&mut out, "client");
                mp_str(&mut out, &info.client);
                mp_str(&mut out, "user");
                mp_str(&mut out, &info.user);
                for (key, value) in payloads {
                    mp_str(&mut out, key);
                    value.write_msgpack(&mut out);
                }
            }
            Bytes::from(out)
        }
    }
}

/// `"expires": true, "ttl": N`, or `"expires": false`.
fn expiry_fields(fields: &mut Vec<(&'static str, Tree<'_>)>, ttl: Option<u64>) {
    fields.push(("expires", Tree::Bool(ttl.is_some())));
    if let Some(ttl) = ttl {
        fields.push(("ttl", Tree::U64(ttl)));
    }
}

fn publications_tree(publications: &[Publication]) -> Tree<'_> {
    Tree::Array(
        publications
            .iter()
            .map(|p| {
                let mut fields = vec![
                    ("offset", Tree::U64(p.offset)),
                    ("data", Tree::Data(&p.data)),
                ];
                if let Some(info) = &p.info {
                    fields.push(("info", client_tree(info)));
                }
                Tree::Map(fields)
            })
            .collect(),
    )
}

fn client_tree(info: &ClientInfo) -> Tree<'_> {
    let mut fields = vec![
        ("client", Tree::Str(&info.client)),
        ("user", Tree::Str(&info.user)),
    ];
    fields.extend(info_payloads(info).map(|(key, value)| (key, Tree::Data(value))));
    Tree::Map(fields)
}

/// The optional JSON fields of a client's info that are present, by name,
/// in wire order.
fn info_payloads(info: &ClientInfo) -> impl Iterator<Item = (&'static str, &Payload)> + Clone {
    [
        ("conn_info", &info.conn_info),
        ("chan_info", &info.chan_info),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|value| (key, value)))
}

/// Bytes of a client's info: its strings and JSON, before escaping.
fn info_len(info: &ClientInfo) -> usize {
    info_payloads(info).fold(info.client.len() + info.user.len(), |n, (_, value)| {
        n + value.len()
    })
}
