//! The reading half of a connection: frames in (fragments joined, control
//! frames surfaced), and each target's messages classified into
//! [`Event`]s. wavecast's replies and pushes are decoded by
//! `wavecast_core::protocol::decode_server_message`; the peers' protocols
//! (NATS's byte stream, Socket.IO's packets, plain broadcast) are read here.
//! With permessage-deflate negotiated (no context takeover either way, so
//! each message inflates on its own), a compressed message is inflated by
//! the core's codec, one per thread of the tool, not one per connection.

use std::cell::RefCell;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use wavecast_core::deflate::Codec;
use wavecast_core::frame::{FrameDecoder, OpCode};
use wavecast_core::protocol::{self, decode_server_message, Encoding, Push, ServerMessage};

use super::marker::parse_marker;
use super::{find, MAX_HEAD, MAX_MESSAGE, READ_CHUNK};
use crate::{BenchError, Target};

/// What the client must send back to keep the connection alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A WebSocket pong carrying the ping's payload.
    Pong(Bytes),
    /// A text frame (Socket.IO's `3` answering its `2`).
    Text(&'static [u8]),
    /// A binary frame (NATS's `PONG\r\n` answering `PING\r\n`).
    Binary(&'static [u8]),
}

/// One thing a server said, as far as the load tool cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publication arrived.
    Pub {
        /// Its sequence number.
        seq: u64,
        /// When the publisher sent it (monotonic nanoseconds).
        sent_ns: u64,
    },
    /// The subscription is in place (subscribe reply, Socket.IO `40`,
    /// NATS `PONG`).
    Subscribed,
    /// wavecast's `connect` reply: the connection is authenticated.
    Connected {
        /// The id of the command it answers.
        id: u64,
        /// The user the server took from the token.
        user: String,
    },
    /// A publish was acknowledged (wavecast's publish reply or HTTP 200).
    Ack,
    /// The server refused a command.
    Error(String),
    /// The server expects an answer.
    Reply(Reply),
    /// The server closed the connection.
    Closed,
    /// Anything else.
    Other,
}

/// The reading half of a connection: a read buffer and frame decoding.
#[derive(Debug)]
pub struct Reader {
    target: Target,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// A fragmented message being reassembled: its opcode, whether it is
    /// compressed (RSV1 on its first frame), and its payload so far.
    partial: Option<(OpCode, bool, BytesMut)>,
    /// NATS: the protocol byte stream carried in binary frames.
    stream: BytesMut,
    /// Bytes read from the socket since [`Reader::take_bytes_read`].
    bytes_read: u64,
}

thread_local! {
    /// The inflater of this thread's connections: with no context takeover
    /// nothing of one message is needed for the next, so connections share it.
    static CODEC: RefCell<Codec> = RefCell::new(Codec::new(1));
}

impl Reader {
    /// A reader that starts with `buf` (bytes that followed the handshake).
    pub fn new(target: Target, buf: BytesMut) -> Reader {
        Reader {
            target,
            buf,
            decoder: FrameDecoder::client(MAX_MESSAGE),
            partial: None,
            stream: BytesMut::new(),
            bytes_read: 0,
        }
    }

    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    pub fn with_deflate(mut self) -> Reader {
        self.decoder = self.decoder.with_rsv1();
        self
    }

    /// Whether permessage-deflate was negotiated.
    pub fn deflate(&self) -> bool {
        self.decoder.allows_rsv1()
    }

    /// Bytes read from the socket since the last call (frame headers and
    /// all: what the server sent on the wire, less TCP's own).
    pub fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// The bytes read but not yet decoded (the publisher takes them over
    /// from a subscribed connection).
    pub fn into_buf(self) -> BytesMut {
        self.buf
    }

    /// The next event.
    pub async fn next_event<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Event, BenchError> {
        loop {
            if self.target == Target::Nats {
                if let Some(ev) = self.nats_event()? {
                    return Ok(ev);
                }
            }
            let Some((opcode, payload)) = self.next_message(rd).await? else {
                return Ok(Event::Closed);
            };
            match opcode {
                OpCode::Ping => return Ok(Event::Reply(Reply::Pong(payload))),
                OpCode::Pong => {}
                OpCode::Close => return Ok(Event::Closed),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    if self.target == Target::Nats {
                        if self.stream.len().saturating_add(payload.len()) > MAX_MESSAGE {
                            return Err(BenchError::Server("NATS stream without line end".into()));
                        }
                        self.stream.extend_from_slice(&payload);
                    } else {
                        return Ok(classify(self.target, &payload));
                    }
                }
            }
        }
    }

    /// The next whole message (fragments joined) or control frame; `None`
    /// at end of stream.
    async fn next_message<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<(OpCode, Bytes)>, BenchError> {
        loop {
            let frame = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| BenchError::Server(format!("bad frame: {e}")))?;
            let Some(frame) = frame else {
                if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                    self.buf.reserve(READ_CHUNK);
                }
                let n = rd
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| BenchError::io("reading", e))?;
                if n == 0 {
                    return Ok(None);
                }
                self.bytes_read += n as u64;
                continue;
            };
            if frame.opcode.is_control() {
                return Ok(Some((frame.opcode, frame.payload)));
            }
            match (frame.opcode, frame.fin, self.partial.take()) {
                (OpCode::Continuation, fin, Some((op, compressed, mut acc))) => {
                    if acc.len().saturating_add(frame.payload.len()) > MAX_MESSAGE {
                        return Err(BenchError::Server("message too large".into()));
                    }
                    acc.extend_from_slice(&frame.payload);
                    if fin {
                        return Ok(Some((op, message(compressed, acc.freeze())?)));
                    }
                    self.partial = Some((op, compressed, acc));
                }
                (OpCode::Continuation, _, None) => {
                    return Err(BenchError::Server(
                        "continuation frame without a first frame".into(),
                    ))
                }
                (_, _, Some(_)) => {
                    return Err(BenchError::Server(
                        "new message inside a fragmented one".into(),
                    ))
                }
                (op, true, None) => return Ok(Some((op, message(frame.rsv1, frame.payload)?))),
                (op, false, None) => {
                    self.partial = Some((op, frame.rsv1, BytesMut::from(&frame.payload[..])))
                }
            }
        }
    }

    /// One event from the NATS byte stream, if a whole line (and payload)
    /// is there.
    fn nats_event(&mut self) -> Result<Option<Event>, BenchError> {
        let Some(eol) = find(&self.stream, b"\r\n") else {
            if self.stream.len() > MAX_HEAD && !self.stream.starts_with(b"MSG ") {
                return Err(BenchError::Server("NATS control line too long".into()));
            }
            return Ok(None);
        };
        let line = &self.stream[..eol];
        if line.starts_with(b"MSG ") {
            let size = line
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| BenchError::Server("NATS MSG line without a size".into()))?;
            let total = eol
                .checked_add(4)
                .and_then(|t| t.checked_add(size))
                .filter(|&t| t <= MAX_MESSAGE)
                .ok_or_else(|| BenchError::Server("NATS message too large".into()))?;
            if self.stream.len() < total {
                return Ok(None);
            }
            let ev = match self
                .stream
                .get(eol + 2..eol + 2 + size)
                .and_then(parse_marker)
            {
                Some((seq, sent_ns)) => Event::Pub { seq, sent_ns },
                None => Event::Other,
            };
            self.stream.advance(total);
            return Ok(Some(ev));
        }
        let ev = if line == b"PING" {
            Event::Reply(Reply::Binary(b"PONG\r\n"))
        } else if line == b"PONG" {
            Event::Subscribed
        } else if line.starts_with(b"-ERR") {
            Event::Error(String::from_utf8_lossy(line).into_owned())
        } else {
            Event::Other
        };
        self.stream.advance(eol + 2);
        Ok(Some(ev))
    }
}

/// How the server's JSON `pub` push of the bench channel starts
/// (`wavecast_core::protocol::encode_pub`).
const PUB_HEAD: &str = r#"{"push":{"channel":"bench","pub":{"#;

/// A whole message's payload: as it came, or inflated if `compressed`.
fn message(compressed: bool, payload: Bytes) -> Result<Bytes, BenchError> {
    if !compressed {
        return Ok(payload);
    }
    CODEC
        .with(|codec| codec.borrow_mut().inflate(&payload, MAX_MESSAGE))
        .map(Bytes::from)
        .map_err(|e| BenchError::Server(format!("bad compressed message: {e}")))
}

/// What a (non-NATS) text or binary message means for `target`.
pub fn classify(target: Target, msg: &[u8]) -> Event {
    let publication = || match parse_marker(msg) {
        Some((seq, sent_ns)) => Event::Pub { seq, sent_ns },
        None => Event::Other,
    };
    match target {
        Target::Wavecast => wavecast_event(msg),
        Target::Ws | Target::Tungstenite | Target::Nats => publication(),
        Target::Socketio => match msg {
            b"2" => Event::Reply(Reply::Text(b"3")),
            [b'4', b'2', ..] => publication(),
            [b'4', b'0', ..] => Event::Subscribed,
            [b'4', b'1', ..] => Event::Closed,
            [b'4', b'4', ..] => Event::Error(String::from_utf8_lossy(msg).into_owned()),
            _ => Event::Other,
        },
    }
}

/// A wavecast message (JSON, the server's default encoding), decoded once
/// by the core's client side: a `pub` push is a publication (its data
/// carries the marker), a connect, subscribe or publish reply confirms, an error
/// reply or a message no client could act on is an error (the server broke
/// its protocol; a subscriber ignores it, the publisher stops).
///
/// A `pub` push of the bench channel is recognised by its head (as the
/// server writes it) and its data's marker, without parsing the data: a
/// 4 KiB JSON object costs the tool several microseconds to validate per
/// delivery, which made the tool, not the server, the limit of the large
/// runs (every peer's publication is found by its marker alone too). Any
/// other message, or a push whose marker is not found, is decoded in full.
fn wavecast_event(msg: &[u8]) -> Event {
    if let Some(rest) = msg.strip_prefix(PUB_HEAD.as_bytes()) {
        if let Some((seq, sent_ns)) = parse_marker(rest) {
            return Event::Pub { seq, sent_ns };
        }
    }
    match decode_server_message(Encoding::Json, msg) {
        Ok(ServerMessage::Push(Push::Pub { publication, .. })) => {
            match parse_marker(publication.data.as_json()) {
                Some((seq, sent_ns)) => Event::Pub { seq, sent_ns },
                None => Event::Other,
            }
        }
        Ok(ServerMessage::Push(_)) => Event::Other,
        Ok(ServerMessage::Reply { id, reply }) => match reply {
            protocol::Reply::Connect { user, .. } => Event::Connected { id, user },
            protocol::Reply::Subscribe { .. } => Event::Subscribed,
            protocol::Reply::Publish { .. } => Event::Ack,
            protocol::Reply::Error(e) => Event::Error(format!("command {id}: {e}")),
            _ => Event::Other,
        },
        Err(e) => Event::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_inside_each_targets_envelope() {
        let wrapped = br#"{"push":{"channel":"bench","pub":{"offset":3,"data":"~7:8:xx"}}}"#;
        assert_eq!(
            classify(Target::Wavecast, wrapped),
            Event::Pub { seq: 7, sent_ns: 8 }
        );
        assert_eq!(
            classify(Target::Socketio, b"42[\"msg\",\"~1:2:x\"]"),
            Event::Pub { seq: 1, sent_ns: 2 }
        );
        assert_eq!(
            classify(Target::Ws, b"~5:6:xxxx"),
            Event::Pub { seq: 5, sent_ns: 6 }
        );
        // The head the fast path looks for is the one the server writes.
        let push = wavecast_core::protocol::encode_pub(
            Encoding::Json,
            crate::CHANNEL,
            &wavecast_core::protocol::Publication {
                offset: 9,
                data: wavecast_core::protocol::Payload::from_json(br#"{"m":"~1:2:","n":3}"#)
                    .unwrap(),
                info: None,
            },
        );
        assert!(push.starts_with(PUB_HEAD.as_bytes()), "{push:?}");
        assert_eq!(
            classify(Target::Wavecast, &push),
            Event::Pub { seq: 1, sent_ns: 2 }
        );
        // A publication whose data carries no marker is not one of the run's.
        let foreign = br#"{"push":{"channel":"bench","pub":{"offset":4,"data":{"a":1}}}}"#;
        assert_eq!(classify(Target::Wavecast, foreign), Event::Other);
    }

    #[test]
    fn wavecast_replies_are_told_apart() {
        assert_eq!(
            classify(
                Target::Wavecast,
                br#"{"id":1,"subscribe":{"epoch":"e","offset":0}}"#
            ),
            Event::Subscribed
        );
        assert_eq!(
            classify(Target::Wavecast, br#"{"id":2,"publish":{"offset":1}}"#),
            Event::Ack
        );
        assert_eq!(
            classify(
                Target::Wavecast,
                br#"{"id":1,"connect":{"client":"c-0-1.1","user":"u7","expires":true,"ttl":3599}}"#
            ),
            Event::Connected {
                id: 1,
                user: "u7".into()
            }
        );
        assert_eq!(
            classify(
                Target::Wavecast,
                br#"{"id":3,"connect":{"client":"c","user":"","expires":false}}"#
            ),
            Event::Connected {
                id: 3,
                user: String::new()
            }
        );
        match classify(
            Target::Wavecast,
            br#"{"id":1,"error":{"code":112,"message":"bad token signature"}}"#,
        ) {
            Event::Error(e) => assert!(e.contains("112"), "{e}"),
            other => panic!("{other:?}"),
        }
        match classify(
            Target::Wavecast,
            br#"{"id":2,"error":{"code":104,"message":"no"}}"#,
        ) {
            Event::Error(e) => assert!(e.contains("104") && e.contains("no"), "{e}"),
            other => panic!("{other:?}"),
        }
        // Other pushes and replies are not the run's business.
        for other in [
            &br#"{"push":{"channel":"bench","join":{"client":"c","user":""}}}"#[..],
            br#"{"id":3,"unsubscribe":{}}"#,
        ] {
            assert_eq!(classify(Target::Wavecast, other), Event::Other);
        }
        // What no client can act on is the server breaking its protocol.
        for broken in [
            &b"not json"[..],
            br#"{"id":1}"#,
            br#"{"push":{"channel":"bench","pub":{"offset":1}}}"#,
        ] {
            assert!(
                matches!(classify(Target::Wavecast, broken), Event::Error(_)),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
        assert_eq!(
            classify(Target::Socketio, b"2"),
            Event::Reply(Reply::Text(b"3"))
        );
        assert_eq!(
            classify(Target::Socketio, b"40{\"sid\":\"x\"}"),
            Event::Subscribed
        );
    }

    /// Compressed messages (RSV1, whole or fragmented) are inflated and
    /// classified like plain ones; the bytes read are counted as they
    /// came, compressed.
    #[tokio::test]
    async fn compressed_messages_are_inflated_and_bytes_counted() {
        let text = format!("~3:4:{}", "abc".repeat(500));
        let compressed = Codec::new(1).compress(text.as_bytes()).unwrap().to_vec();
        assert!(compressed.len() < text.len() / 10);
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&wavecast_core::frame::encode_compressed(
            OpCode::Text,
            &compressed,
        ));
        // The same message in two fragments: RSV1 on the first only.
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let mut first = BytesMut::new();
        wavecast_core::frame::encode_frame(false, OpCode::Text, a, &mut first);
        wavecast_core::frame::set_rsv1(&mut first);
        wire.extend_from_slice(&first);
        wavecast_core::frame::encode_frame(true, OpCode::Continuation, b, &mut wire);
        // And one uncompressed.
        wavecast_core::frame::encode_frame(true, OpCode::Text, b"~5:6:x", &mut wire);
        let total = wire.len() as u64;
        let mut reader = Reader::new(Target::Ws, BytesMut::new()).with_deflate();
        let mut rd = &wire[..];
        let mut events = Vec::new();
        loop {
            match reader.next_event(&mut rd).await.unwrap() {
                Event::Closed => break,
                ev => events.push(ev),
            }
        }
        assert_eq!(
            events,
            vec![
                Event::Pub { seq: 3, sent_ns: 4 },
                Event::Pub { seq: 3, sent_ns: 4 },
                Event::Pub { seq: 5, sent_ns: 6 },
            ]
        );
        assert_eq!(reader.take_bytes_read(), total);
        assert_eq!(reader.take_bytes_read(), 0);
        // Without the extension, RSV1 is the server breaking the protocol.
        let mut plain = Reader::new(Target::Ws, BytesMut::new());
        let mut rd = &wire[..];
        assert!(plain.next_event(&mut rd).await.is_err());
    }

    #[tokio::test]
    async fn nats_stream_is_parsed_across_and_within_frames() {
        // Two binary frames: a MSG split in the middle of its payload, then
        // the rest plus a PING and a PONG in one frame.
        let mut wire = BytesMut::new();
        let f1 = b"INFO {}\r\nMSG bench 1 7\r\n~1:2";
        let f2 = b":xx\r\nPING\r\nPONG\r\n";
        for f in [&f1[..], &f2[..]] {
            wavecast_core::frame::encode_frame(true, OpCode::Binary, f, &mut wire);
        }
        let mut reader = Reader::new(Target::Nats, BytesMut::new());
        let mut rd = &wire[..];
        let mut events = Vec::new();
        loop {
            let ev = reader.next_event(&mut rd).await.unwrap();
            if ev == Event::Closed {
                break;
            }
            events.push(ev);
        }
        assert_eq!(
            events,
            vec![
                Event::Other,
                Event::Pub { seq: 1, sent_ns: 2 },
                Event::Reply(Reply::Binary(b"PONG\r\n")),
                Event::Subscribed,
            ]
        );
    }
}
