//! What a client receives, decoded: [`ServerMessage`] (a [`Reply`] with the
//! id of its command, or a [`Push`]) from JSON or MessagePack
//! ([`decode_server_message`]), symmetric to how the server decodes
//! commands ([`decode_request`](super::decode_request)).
//!
//! The server never calls this; Rust clients, the model, the tests and the
//! load tool do, so that the client side of the protocol is written once.
//! Unknown fields are ignored (a newer server may add some); a message
//! without exactly one known reply or push kind is refused, since a client
//! cannot act on it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::command::StreamPosition;
use super::encoding::{Encoding, MAX_FRAME_DEPTH};
use super::error::{ErrorCode, ErrorReply};
use super::payload::{trim_json_whitespace, Payload};
use super::reply::{ClientInfo, Publication, Push, Recovery, Reply};
use super::transcode::msgpack_to_json;

/// One message from the server, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// The answer to the command with this id.
    Reply {
        /// The id the client gave the command.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// A message that answers no command.
    Push(Push),
}

/// Why a server message could not be decoded. The server's fault (or a
/// server newer than this client in a way the client cannot follow): a
/// client closes the connection with 1002 (protocol error) or 1007
/// (invalid payload data) and reconnects.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerMessageError {
    /// Not one well-formed value of the encoding, or not an object.
    #[error("server sent a malformed {encoding:?} message: {message}")]
    Syntax {
        /// The encoding the message was decoded with.
        encoding: Encoding,
        /// The decoder's description of the fault.
        message: String,
    },
    /// Well-formed, but not a reply or push this client knows.
    #[error("server sent a message this client cannot use: {0}")]
    Shape(String),
}

/// Decodes one server message (the payload of one text frame for JSON, one
/// binary frame for MessagePack). `decode_server_message(e,
/// &encode_reply(e, id, r))` gives back `Reply { id, reply: r }` and the
/// same for pushes (presence lists come back in client-id order).
pub fn decode_server_message(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ServerMessage, ServerMessageError> {
    match encoding {
        Encoding::Json => decode_json(bytes, Encoding::Json),
        Encoding::MsgPack => {
            // As for commands: one definition of every message, in JSON;
            // MessagePack is transcoded first.
            let json = msgpack_to_json(bytes, MAX_FRAME_DEPTH)
                .map_err(|message| ServerMessageError::Syntax { encoding, message })?;
            decode_json(&json, Encoding::MsgPack)
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    push: Option<&'a RawValue>,
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
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    connect: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refresh: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sub_refresh: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ConnectBody<'a> {
    client: String,
    #[serde(default)]
    user: String,
    #[serde(flatten)]
    expiry: ExpiryBody,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    subs: std::collections::BTreeMap<String, StreamPosition>,
    #[serde(default)]
    ping: Option<u64>,
}

#[derive(Deserialize)]
struct ExpiryBody {
    expires: bool,
    #[serde(default)]
    ttl: Option<u64>,
}

#[derive(Deserialize)]
struct PublicationBody<'a> {
    offset: u64,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    info: Option<ClientBody>,
}

#[derive(Deserialize)]
struct SubscribeBody<'a> {
    epoch: String,
    offset: u64,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(borrow, default)]
    publications: Option<Vec<PublicationBody<'a>>>,
}

#[derive(Deserialize)]
struct PublishBody {
    offset: u64,
}

#[derive(Deserialize)]
struct PresenceBody {
    clients: BTreeMap<String, ClientBody>,
}

#[derive(Deserialize)]
struct ClientBody {
    client: String,
    #[serde(default)]
    user: String,
    #[serde(default, deserialize_with = "present_json")]
    conn_info: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present_json")]
    chan_info: Option<Box<RawValue>>,
}

/// A field present with any JSON value, `null` included (serde's `Option`
/// alone would read `null` as absent, and the server sends the field only
/// when it has a value, which may be `null`).
fn present_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct HistoryBody<'a> {
    epoch: String,
    offset: u64,
    #[serde(borrow, default)]
    publications: Vec<PublicationBody<'a>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: u16,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct PushBody<'a> {
    /// Every push but `ping` names its channel.
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ping: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    r#pub: Option<PublicationBody<'a>>,
    #[serde(default)]
    join: Option<ClientBody>,
    #[serde(default)]
    leave: Option<ClientBody>,
    #[serde(default)]
    unsubscribe: Option<UnsubscribeBody>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    code: u16,
    #[serde(default)]
    reason: String,
}

fn decode_json(bytes: &[u8], label: Encoding) -> Result<ServerMessage, ServerMessageError> {
    let shape = |m: String| ServerMessageError::Shape(m);
    if trim_json_whitespace(bytes).first() != Some(&b'{') {
        return Err(ServerMessageError::Syntax {
            encoding: label,
            message: "not an object".into(),
        });
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| ServerMessageError::Syntax {
            encoding: label,
            message: e.to_string(),
        })?;
    if let Some(raw) = envelope.push {
        if envelope.id.is_some() {
            return Err(shape("a push carries an id".into()));
        }
        return decode_push(raw).map(ServerMessage::Push).map_err(shape);
    }
    let id = match envelope.id {
        Some(id) if id > 0 => id,
        _ => return Err(shape("neither a push nor a reply with an id >= 1".into())),
    };
    let kinds = [
        envelope.subscribe,
        envelope.unsubscribe,
        envelope.publish,
        envelope.presence,
        envelope.history,
        envelope.error,
        envelope.connect,
        envelope.refresh,
        envelope.sub_refresh,
    ];
    if kinds.iter().flatten().count() != 1 {
        return Err(shape(format!("reply {id} has not exactly one result")));
    }
    let reply = if let Some(raw) = envelope.subscribe {
        let body: SubscribeBody<'_> = body(raw, "subscribe")?;
        // The two come together: a recovery always lists its publications
        // (empty when none or not recovered).
        let recovery = match (body.recovered, body.publications) {
            (Some(recovered), Some(list)) => Some(Recovery {
                recovered,
                publications: publications(list)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(shape("subscribe: recovered without publications".into()))
            }
            (None, Some(_)) => {
                return Err(shape("subscribe: publications without recovered".into()))
            }
        };
        Reply::Subscribe {
            epoch: body.epoch,
            offset: body.offset,
            recovery,
        }
    } else if let Some(raw) = envelope.unsubscribe {
        let _: serde::de::IgnoredAny = body(raw, "unsubscribe")?;
        Reply::Unsubscribe
    } else if let Some(raw) = envelope.publish {
        let body: PublishBody = body(raw, "publish")?;
        Reply::Publish {
            offset: body.offset,
        }
    } else if let Some(raw) = envelope.presence {
        let body: PresenceBody = body(raw, "presence")?;
        Reply::Presence {
            clients: body
                .clients
                .into_values()
                .map(client_info)
                .collect::<Result<_, _>>()?,
        }
    } else if let Some(raw) = envelope.history {
        let body: HistoryBody<'_> = body(raw, "history")?;
        Reply::History {
            epoch: body.epoch,
            offset: body.offset,
            publications: publications(body.publications)?,
        }
    } else if let Some(raw) = envelope.connect {
        let body: ConnectBody<'_> = body(raw, "connect")?;
        let data = body
            .data
            .map(|d| Payload::from_json(d.get().as_bytes()))
            .transpose()
            .map_err(|e| shape(format!("connect.data: {e}")))?;
        Reply::Connect {
            client: body.client,
            user: body.user,
            ttl: ttl(body.expiry)?,
            data,
            subs: body.subs.into_iter().collect(),
            ping: body.ping,
        }
    } else if let Some(raw) = envelope.refresh {
        let body: ExpiryBody = body(raw, "refresh")?;
        Reply::Refresh { ttl: ttl(body)? }
    } else if let Some(raw) = envelope.sub_refresh {
        let body: ExpiryBody = body(raw, "sub_refresh")?;
        Reply::SubRefresh { ttl: ttl(body)? }
    } else if let Some(raw) = envelope.error {
        let body: ErrorBody = body(raw, "error")?;
        match ErrorCode::from_code(body.code) {
            Some(code) => Reply::Error(ErrorReply::new(code, body.message)),
            None if super::error::APP_ERROR_CODES.contains(&body.code) => Reply::AppError {
                code: body.code,
                message: body.message,
            },
            None => return Err(shape(format!("error: unknown error code {}", body.code))),
        }
    } else {
        unreachable!("exactly one kind is present")
    };
    Ok(ServerMessage::Reply { id, reply })
}

/// `expires` and `ttl` agree: a ttl exactly when the token expires.
fn ttl(body: ExpiryBody) -> Result<Option<u64>, ServerMessageError> {
    match (body.expires, body.ttl) {
        (true, Some(ttl)) => Ok(Some(ttl)),
        (false, None) => Ok(None),
        _ => Err(ServerMessageError::Shape("expires and ttl disagree".into())),
    }
}

fn decode_push(raw: &RawValue) -> Result<Push, String> {
    let body: PushBody<'_> = body(raw, "push").map_err(|e| e.to_string())?;
    let kinds = usize::from(body.r#pub.is_some())
        + usize::from(body.join.is_some())
        + usize::from(body.leave.is_some())
        + usize::from(body.unsubscribe.is_some())
        + usize::from(body.ping.is_some());
    if kinds != 1 {
        return Err(format!(
            "push on {:?} has not exactly one kind",
            body.channel
        ));
    }
    if body.ping.is_some() {
        return Ok(Push::Ping);
    }
    let channel = body.channel.ok_or("push without a channel")?;
    Ok(if let Some(p) = body.r#pub {
        Push::Pub {
            channel,
            publication: publication(p).map_err(|e| e.to_string())?,
        }
    } else if let Some(c) = body.join {
        Push::Join {
            channel,
            info: client_info(c).map_err(|e| e.to_string())?,
        }
    } else if let Some(c) = body.leave {
        Push::Leave {
            channel,
            info: client_info(c).map_err(|e| e.to_string())?,
        }
    } else if let Some(u) = body.unsubscribe {
        Push::Unsubscribe {
            channel,
            code: u.code,
            reason: u.reason,
        }
    } else {
        unreachable!("exactly one kind is present")
    })
}

/// Decodes a reply or push body, which must be an object.
fn body<'a, T: Deserialize<'a>>(raw: &'a RawValue, what: &str) -> Result<T, ServerMessageError> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err(ServerMessageError::Shape(format!(
            "{what}: expected an object"
        )));
    }
    serde_json::from_str(text).map_err(|e| ServerMessageError::Shape(format!("{what}: {e}")))
}

fn publication(body: PublicationBody<'_>) -> Result<Publication, ServerMessageError> {
    let data = Payload::from_json(body.data.get().as_bytes())
        .map_err(|e| ServerMessageError::Shape(format!("publication data: {e}")))?;
    Ok(Publication {
        offset: body.offset,
        data,
        info: body.info.map(client_info).transpose()?.map(Box::new),
    })
}

fn publications(bodies: Vec<PublicationBody<'_>>) -> Result<Vec<Publication>, ServerMessageError> {
    bodies.into_iter().map(publication).collect()
}

fn client_info(body: ClientBody) -> Result<ClientInfo, ServerMessageError> {
    let json = |raw: Option<Box<RawValue>>, what: &str| {
        raw.map(|raw| Payload::from_json(raw.get().as_bytes()))
            .transpose()
            .map_err(|e| ServerMessageError::Shape(format!("{what}: {e}")))
    };
    Ok(ClientInfo {
        conn_info: json(body.conn_info, "conn_info")?,
        chan_info: json(body.chan_info, "chan_info")?,
        client: body.client,
        user: body.user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_push, encode_reply};

    fn both(check: impl Fn(Encoding)) {
        check(Encoding::Json);
        check(Encoding::MsgPack);
    }

    fn data(json: &str) -> Payload {
        Payload::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn every_reply_decodes_to_what_was_encoded() {
        let publications = vec![
            Publication {
                offset: 4,
                data: data(r#"{"a":[1,2.5,"x"]}"#),
                info: Some(Box::new(ClientInfo {
                    client: "c-4".into(),
                    user: "42".into(),
                    conn_info: None,
                    chan_info: None,
                })),
            },
            Publication {
                offset: 5,
                data: data("null"),
                info: None,
            },
        ];
        let replies = [
            Reply::Subscribe {
                epoch: "e1".into(),
                offset: 7,
                recovery: None,
            },
            Reply::Subscribe {
                epoch: "e1".into(),
                offset: 5,
                recovery: Some(Recovery {
                    recovered: true,
                    publications: publications.clone(),
                }),
            },
            Reply::Subscribe {
                epoch: "e2".into(),
                offset: 0,
                recovery: Some(Recovery {
                    recovered: false,
                    publications: Vec::new(),
                }),
            },
            Reply::Unsubscribe,
            Reply::Publish { offset: u64::MAX },
            Reply::Presence {
                clients: vec![
                    ClientInfo {
                        client: "a-1".into(),
                        user: String::new(),
                        conn_info: None,
                        chan_info: None,
                    },
                    ClientInfo {
                        client: "b-2".into(),
                        user: "bob".into(),
                        conn_info: None,
                        chan_info: None,
                    },
                ],
            },
            Reply::History {
                epoch: "e1".into(),
                offset: 5,
                publications,
            },
            Reply::Error(ErrorReply::new(ErrorCode::NotSubscribed, "not subscribed")),
            Reply::Connect {
                client: "c-1".into(),
                user: "42".into(),
                ttl: Some(600),
                data: None,
                subs: Vec::new(),
                ping: None,
            },
            Reply::Connect {
                client: "c-2".into(),
                user: String::new(),
                ttl: None,
                data: None,
                subs: Vec::new(),
                ping: Some(25),
            },
            Reply::Refresh { ttl: Some(3600) },
            Reply::Refresh { ttl: None },
            Reply::SubRefresh { ttl: Some(60) },
            Reply::Error(ErrorReply::new(ErrorCode::Unauthorized, "unauthorized")),
        ];
        both(|e| {
            for (i, reply) in replies.iter().enumerate() {
                let id = i as u64 + 1;
                let bytes = encode_reply(e, id, reply);
                assert_eq!(
                    decode_server_message(e, &bytes),
                    Ok(ServerMessage::Reply {
                        id,
                        reply: reply.clone()
                    }),
                    "{e:?} {reply:?}"
                );
            }
        });
    }

    #[test]
    fn every_push_decodes_to_what_was_encoded() {
        let info = ClientInfo {
            client: "c-9".into(),
            user: "ann".into(),
            conn_info: None,
            chan_info: None,
        };
        let pushes = [
            Push::Pub {
                channel: "chat:room".into(),
                publication: Publication {
                    offset: 13,
                    data: data("[1]"),
                    info: Some(Box::new(ClientInfo {
                        client: "c-\"1".into(),
                        user: "ann\n".into(),
                        conn_info: None,
                        chan_info: None,
                    })),
                },
            },
            Push::Pub {
                channel: "chat:room \u{e9}".into(),
                publication: Publication {
                    offset: 12,
                    data: data(r#""text""#),
                    info: None,
                },
            },
            Push::Join {
                channel: "a".into(),
                info: info.clone(),
            },
            Push::Leave {
                channel: "a".into(),
                info,
            },
            Push::Unsubscribe {
                channel: "a".into(),
                code: 2500,
                reason: "insufficient state".into(),
            },
            Push::Ping,
        ];
        both(|e| {
            for push in &pushes {
                let bytes = encode_push(e, push);
                assert_eq!(
                    decode_server_message(e, &bytes),
                    Ok(ServerMessage::Push(push.clone())),
                    "{e:?} {push:?}"
                );
            }
        });
    }

    #[test]
    fn an_application_error_code_is_kept_as_the_backend_sent_it() {
        let text = br#"{"id":4,"error":{"code":1000,"message":"banned"}}"#;
        assert_eq!(
            decode_server_message(Encoding::Json, text).unwrap(),
            ServerMessage::Reply {
                id: 4,
                reply: Reply::AppError {
                    code: 1000,
                    message: "banned".into()
                }
            }
        );
        let reply = Reply::AppError {
            code: 1000,
            message: "banned".into(),
        };
        assert_eq!(&encode_reply(Encoding::Json, 4, &reply)[..], &text[..]);
    }

    #[test]
    fn a_connect_reply_lists_its_server_side_subscriptions_and_data() {
        let reply = Reply::Connect {
            client: "c".into(),
            user: "42".into(),
            ttl: None,
            data: Some(Payload::from_json(br#"{"a":1}"#).unwrap()),
            subs: vec![(
                "news".into(),
                StreamPosition {
                    epoch: "e".into(),
                    offset: 7,
                },
            )],
            ping: None,
        };
        let json = encode_reply(Encoding::Json, 1, &reply);
        assert_eq!(
            &json[..],
            br#"{"id":1,"connect":{"client":"c","user":"42","expires":false,"data":{"a":1},"subs":{"news":{"epoch":"e","offset":7}}}}"#
        );
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encode_reply(enc, 1, &reply);
            assert_eq!(
                decode_server_message(enc, &bytes).unwrap(),
                ServerMessage::Reply {
                    id: 1,
                    reply: reply.clone()
                }
            );
        }
    }

    #[test]
    fn client_infos_round_trip_with_and_without_their_json() {
        let with = |conn: Option<&str>, chan: Option<&str>| ClientInfo {
            client: "c-1".into(),
            user: "42".into(),
            conn_info: conn.map(data),
            chan_info: chan.map(data),
        };
        let infos = [
            with(None, None),
            // Keys in order: MessagePack writes a value's keys sorted.
            with(Some(r#"{"n":[1,2.5,-3],"name":"Ann"}"#), None),
            with(None, Some(r#"{"role":"mod"}"#)),
            // `null` is a value like any other: present, not absent.
            with(Some("null"), Some(r#""text""#)),
        ];
        both(|e| {
            for info in &infos {
                let publication = Publication {
                    offset: 3,
                    data: data("1"),
                    info: Some(Box::new(info.clone())),
                };
                let replies = [
                    Reply::Presence {
                        clients: vec![info.clone()],
                    },
                    Reply::History {
                        epoch: "e".into(),
                        offset: 3,
                        publications: vec![publication.clone()],
                    },
                    Reply::Subscribe {
                        epoch: "e".into(),
                        offset: 3,
                        recovery: Some(Recovery {
                            recovered: true,
                            publications: vec![publication.clone()],
                        }),
                    },
                ];
                for reply in replies {
                    let bytes = encode_reply(e, 8, &reply);
                    assert_eq!(
                        decode_server_message(e, &bytes),
                        Ok(ServerMessage::Reply { id: 8, reply }),
                        "{e:?} {info:?}"
                    );
                }
                let pushes = [
                    Push::Join {
                        channel: "a".into(),
                        info: info.clone(),
                    },
                    Push::Leave {
                        channel: "a".into(),
                        info: info.clone(),
                    },
                    Push::Pub {
                        channel: "a".into(),
                        publication,
                    },
                ];
                for push in pushes {
                    let bytes = encode_push(e, &push);
                    assert_eq!(
                        decode_server_message(e, &bytes),
                        Ok(ServerMessage::Push(push)),
                        "{e:?} {info:?}"
                    );
                }
            }
        });
        // Infos written in another way still decode (spaces, order), and
        // an info that is not valid data is refused.
        let text =
            r#"{"push":{"channel":"a","join":{"chan_info": [ 1 ],"user":"u","client":"c"}}}"#;
        assert_eq!(
            decode_server_message(Encoding::Json, text.as_bytes()),
            Ok(ServerMessage::Push(Push::Join {
                channel: "a".into(),
                info: ClientInfo {
                    client: "c".into(),
                    user: "u".into(),
                    conn_info: None,
                    chan_info: Some(data("[ 1 ]")),
                },
            }))
        );
        let deep = format!(
            r#"{{"push":{{"channel":"a","join":{{"client":"c","conn_info":{}1{}}}}}}}"#,
            "[".repeat(crate::protocol::MAX_DATA_DEPTH + 1),
            "]".repeat(crate::protocol::MAX_DATA_DEPTH + 1)
        );
        assert!(matches!(
            decode_server_message(Encoding::Json, deep.as_bytes()),
            Err(ServerMessageError::Shape(_))
        ));
    }

    #[test]
    fn messages_a_client_cannot_act_on_are_refused_not_guessed() {
        let refused = [
            "",
            "[1]",
            "not json",
            r#"{"id":1}"#,
            r#"{"id":0,"publish":{"offset":1}}"#,
            r#"{"publish":{"offset":1}}"#,
            r#"{"id":1,"publish":{"offset":1},"unsubscribe":{}}"#,
            r#"{"id":1,"publish":[1]}"#,
            r#"{"id":1,"publish":{"offset":-1}}"#,
            r#"{"id":1,"error":{"code":99,"message":"?"}}"#,
            r#"{"id":1,"error":{"code":2000,"message":"?"}}"#,
            r#"{"id":1,"push":{"channel":"a","leave":{"client":"x"}}}"#,
            r#"{"push":{"channel":"a"}}"#,
            r#"{"push":{"channel":"a","join":{"client":"x"},"leave":{"client":"x"}}}"#,
            r#"{"push":{"channel":"a","pub":{"offset":1}}}"#,
            r#"{"id":2,"subscribe":{"epoch":"e","offset":1,"publications":[{"offset":1,"data":1}]}}"#,
            r#"{"id":2,"subscribe":{"epoch":"e","offset":1,"recovered":true}}"#,
            r#"{"id":3,"connect":{"client":"c","user":"u","expires":true}}"#,
            r#"{"id":3,"refresh":{"expires":false,"ttl":5}}"#,
        ];
        for text in refused {
            assert!(
                decode_server_message(Encoding::Json, text.as_bytes()).is_err(),
                "accepted {text:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored_for_newer_servers() {
        let text = r#"{"id":3,"publish":{"offset":9,"extra":true},"meta":{"x":1}}"#;
        assert_eq!(
            decode_server_message(Encoding::Json, text.as_bytes()),
            Ok(ServerMessage::Reply {
                id: 3,
                reply: Reply::Publish { offset: 9 }
            })
        );
    }
}
