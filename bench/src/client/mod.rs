//! The load tool's client side: a raw WebSocket client over a tokio
//! `TcpStream` and each target's protocol on top of it.
//!
//! A raw client rather than a WebSocket library, so that a subscriber costs
//! the tool one read buffer and a few bytes of state, decoding a frame
//! allocates nothing (the frame's payload is a view into the read buffer),
//! and the figures measure the server. wavecast's own side of the protocol
//! is not written here a second time: the opening handshake is
//! `wavecast_core::handshake::ClientHandshake`, wavecast's commands are
//! `encode_request` and its replies and pushes `decode_server_message`
//! (one serde_json pass per delivery, the data kept raw). The peers'
//! protocols (NATS, Socket.IO, plain broadcast) are read here.
//!
//! Every publication's data is the same ASCII text in every protocol:
//! `~SEQ:SENT_NS:` padded with `x` to the payload size ([`marker`]). The
//! `~` marks where it starts inside whatever envelope the target wraps it
//! in (channel and protocol names never contain `~`).
//!
//! The parts, bottom up:
//! - [`connect`]: TCP connections (from a chosen source address) and the
//!   opening handshake.
//! - [`marker`]: writing and parsing the `~SEQ:SENT_NS:` data.
//! - [`reader`]: frames in, each target's messages classified into
//!   [`Event`]s.
//! - [`writer`]: masked frames out.
//! - [`token`]: the HS256 connection tokens of `--token-hmac-secret`.
//! - [`subscriber`]: a subscribed (and, with a token, authenticated)
//!   connection and its delivery loop.
//! - [`publisher`]: the publisher (WebSocket or wavecast's HTTP API) and
//!   its acknowledgements.

pub mod connect;
pub mod marker;
pub mod publisher;
pub mod reader;
pub mod subscriber;
pub mod token;
pub mod writer;

pub use connect::{open_tcp, websocket_handshake};
pub use marker::{parse_marker, write_payload};
pub use publisher::{publish, PublishConfig, Published, PublisherConnection};
pub use reader::{classify, Event, Reader, Reply};
pub use subscriber::{connect_subscriber, run_subscriber, Conn};
pub use token::{user_for, Credentials, TokenSigner, PUBLISHER_USER};
pub use writer::Writer;

use bytes::Bytes;
use wavecast_core::protocol::{encode_request, Command, Encoding, Request};

/// Largest frame or message the tool accepts from a server (a bound on
/// what a broken server can make it buffer).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest HTTP response head or NATS control line.
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 4096;

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A wavecast command as sent: the core's encoder, JSON (the server's
/// encoding when no subprotocol is asked for).
fn wavecast_request(id: u64, command: Command) -> Bytes {
    encode_request(Encoding::Json, &Request { id, command })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavecast_core::protocol::{decode_request, Payload};

    #[test]
    fn wavecast_commands_are_what_the_server_reads() {
        let subscribe = wavecast_request(
            1,
            Command::Subscribe {
                channel: crate::CHANNEL.into(),
                recover: None,
                token: None,
            },
        );
        assert_eq!(
            &subscribe[..],
            br#"{"id":1,"subscribe":{"channel":"bench"}}"#
        );
        let data = Payload::from_json(br#""~7:8:xx""#).unwrap();
        let publish = wavecast_request(
            8,
            Command::Publish {
                channel: crate::CHANNEL.into(),
                data: data.clone(),
            },
        );
        assert_eq!(
            &publish[..],
            br#"{"id":8,"publish":{"channel":"bench","data":"~7:8:xx"}}"#
        );
        let connect = wavecast_request(
            1,
            Command::Connect {
                token: Some("a.b.c".into()),
                data: None,
                ping: false,
            },
        );
        assert_eq!(&connect[..], br#"{"id":1,"connect":{"token":"a.b.c"}}"#);
        assert_eq!(
            decode_request(Encoding::Json, &connect).unwrap().command,
            Command::Connect {
                token: Some("a.b.c".into()),
                data: None,
                ping: false,
            }
        );
        let request = decode_request(Encoding::Json, &publish).unwrap();
        assert_eq!(request.id, 8);
        assert_eq!(
            request.command,
            Command::Publish {
                channel: crate::CHANNEL.into(),
                data
            }
        );
    }
}
