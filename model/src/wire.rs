//! A client's side of its WebSocket link to a server: abstract commands
//! become masked JSON frames for `Node::handle_read`, and the node's
//! outbound bytes are decoded (client-side frame decoder, then the core's
//! `decode_server_message`) back into abstract [`Msg`]s.

use bytes::BytesMut;
use wavecast_core::frame::{self, FrameDecoder, OpCode};
use wavecast_core::protocol::{
    self, Command, Encoding, Payload, Push, Reply, Request, ServerMessage,
};

use crate::{Msg, CHANNELS};

/// Clients mask their frames; any key does.
pub(crate) const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
/// Request ids a client uses: subscribe to channel `c` is `SUB_RID + c`,
/// publish is `PUB_RID + c` (one request of each kind per channel is in
/// flight at a time, so ids need not be unique over time).
pub(crate) const SUB_RID: u64 = 1;
pub(crate) const PUB_RID: u64 = 11;
/// Request id of `connect` (once per connection).
pub(crate) const CONNECT_RID: u64 = 21;

/// One masked client frame carrying `request` in JSON.
pub(crate) fn request_frame(id: u64, command: Command) -> BytesMut {
    let payload = protocol::encode_request(Encoding::Json, &Request { id, command });
    let mut out = BytesMut::new();
    frame::encode_masked(true, OpCode::Text, &payload, MASK, &mut out);
    out
}

/// What a client makes of the server's bytes.
pub(crate) fn decode_frames(conn: u32, mut bytes: BytesMut) -> Vec<Msg> {
    let mut decoder = FrameDecoder::client(1 << 20);
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut bytes) {
            Ok(Some(f)) => match f.opcode {
                OpCode::Text => out.extend(decode_json(conn, &f.payload)),
                OpCode::Ping => out.push(Msg::Ping { conn }),
                OpCode::Close => {
                    let code = match f.payload.get(..2) {
                        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                        _ => 1005,
                    };
                    out.push(Msg::Closed { conn, code });
                }
                other => out.push(Msg::Garbage {
                    conn,
                    what: format!("{other:?} frame"),
                }),
            },
            Ok(None) => {
                if !bytes.is_empty() {
                    out.push(Msg::Garbage {
                        conn,
                        what: "partial frame".into(),
                    });
                }
                return out;
            }
            Err(e) => {
                out.push(Msg::Garbage {
                    conn,
                    what: e.to_string(),
                });
                return out;
            }
        }
    }
}

fn channel_index(name: &str) -> Option<u8> {
    CHANNELS
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The model's publication data: the number it published.
fn data_number(data: &Payload) -> Option<u64> {
    serde_json::from_slice(data.as_json()).ok()
}

/// What a client makes of one text message: the core's client-side decoder
/// ([`protocol::decode_server_message`]), then the abstract [`Msg`].
fn decode_json(conn: u32, payload: &[u8]) -> Option<Msg> {
    let garbage = |what: &str| {
        Some(Msg::Garbage {
            conn,
            what: format!("{what}: {}", String::from_utf8_lossy(payload)),
        })
    };
    let message = match protocol::decode_server_message(Encoding::Json, payload) {
        Ok(message) => message,
        Err(e) => return garbage(&e.to_string()),
    };
    let (rid, reply) = match message {
        ServerMessage::Push(push) => {
            let Some(ch) = push.channel().and_then(channel_index) else {
                return garbage("push on an unknown channel");
            };
            return match push {
                Push::Pub { publication, .. } => match data_number(&publication.data) {
                    Some(data) => Some(Msg::Pub {
                        conn,
                        ch,
                        offset: publication.offset,
                        data,
                    }),
                    None => garbage("publication data not a model number"),
                },
                Push::Unsubscribe { code, .. } => Some(Msg::Unsubscribed {
                    conn,
                    ch,
                    code: code.into(),
                }),
                // join/leave are off in every namespace of the model, and
                // its clients ask for no pings.
                Push::Join { .. } | Push::Leave { .. } | Push::Ping => garbage("unexpected push"),
            };
        }
        ServerMessage::Reply { id, reply } => (id, reply),
    };
    if rid == CONNECT_RID {
        return match reply {
            Reply::Connect { user, ttl, .. } => Some(Msg::Connected { conn, user, ttl }),
            Reply::Error(e) => Some(Msg::ConnectFailed {
                conn,
                code: e.code.code().into(),
            }),
            _ => garbage("unexpected reply to connect"),
        };
    }
    if (PUB_RID..PUB_RID + CHANNELS.len() as u64).contains(&rid) {
        // Publish replies (offset or error) carry nothing the properties
        // need; clients do not wait for them.
        return None;
    }
    let ch = rid
        .checked_sub(SUB_RID)
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| usize::from(*c) < CHANNELS.len());
    let Some(ch) = ch else {
        return garbage("reply to an unknown request");
    };
    match reply {
        Reply::Error(e) => Some(Msg::SubscribeFailed {
            conn,
            ch,
            code: e.code.code().into(),
        }),
        Reply::Subscribe {
            epoch,
            offset,
            recovery,
        } => {
            let recovery = match recovery {
                None => None,
                Some(r) => {
                    let pubs: Option<Vec<(u64, u64)>> = r
                        .publications
                        .iter()
                        .map(|p| data_number(&p.data).map(|d| (p.offset, d)))
                        .collect();
                    let Some(pubs) = pubs else {
                        return garbage("recovered data not a model number");
                    };
                    Some((r.recovered, pubs))
                }
            };
            Some(Msg::Subscribed {
                conn,
                ch,
                epoch,
                offset,
                recovery,
            })
        }
        _ => garbage("unexpected reply"),
    }
}
