//! A node driven as a client would see it: open connections, send JSON
//! commands, read back what each connection was sent (decoded frames and
//! the close code), with the clock in hand.

use bytes::BytesMut;
use serde_json::{json, Value};
use wavecast_core::frame::{FrameDecoder, OpCode};
use wavecast_core::node::{ConnId, Endpoint};
use wavecast_core::protocol::Encoding;
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

use super::{masked, take_queued};

/// Node time `secs` seconds after its origin.
pub fn at(secs: u64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000)
}

/// What a client saw: messages (JSON) and the close code, if one came.
#[derive(Default)]
pub struct Seen {
    pub messages: Vec<Value>,
    pub close: Option<u16>,
}

/// A node and the client side of its connections.
pub struct Harness {
    pub core: Standalone,
    /// Per connection: its frame decoder, bytes not yet decoded, and the
    /// close code once one came.
    decoders: Vec<(ConnId, FrameDecoder, BytesMut, Option<u16>)>,
}

impl Harness {
    /// A harness around a node.
    pub fn new(core: Standalone) -> Harness {
        Harness {
            core,
            decoders: Vec::new(),
        }
    }

    pub fn open(&mut self, now: Timestamp) -> ConnId {
        let id = self
            .core
            .node
            .handle_connect(now, Endpoint::PubSub(Encoding::Json), &[]);
        self.decoders
            .push((id, FrameDecoder::client(1 << 20), BytesMut::new(), None));
        id
    }

    pub fn send(&mut self, now: Timestamp, id: ConnId, v: Value) {
        let frame = masked(true, OpCode::Text, v.to_string().as_bytes(), [9, 8, 7, 6]);
        self.core.node.handle_read(now, id, &frame);
        self.core.pump(now);
    }

    pub fn tick(&mut self, now: Timestamp) {
        self.core.node.handle_timeout(now);
        self.core.pump(now);
    }

    /// Everything the connection was sent since the last look.
    pub fn seen(&mut self, id: ConnId) -> Seen {
        let node = &mut self.core.node;
        while node.poll_transmit().is_some() {}
        let (_, decoder, buf, close) = self
            .decoders
            .iter_mut()
            .find(|(c, ..)| *c == id)
            .expect("opened here");
        if let Some(q) = node.queue(id) {
            buf.extend_from_slice(&take_queued(q));
        }
        let mut seen = Seen::default();
        while let Some(frame) = decoder.decode(buf).expect("the server sends valid frames") {
            match frame.opcode {
                OpCode::Text => seen
                    .messages
                    .push(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => {
                    *close = frame
                        .payload
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]))
                }
                _ => {}
            }
        }
        seen.close = *close;
        seen
    }

    /// Sends a command and returns the one reply to it.
    pub fn ask(&mut self, now: Timestamp, id: ConnId, v: Value) -> Value {
        let rid = v["id"].clone();
        self.send(now, id, v);
        let seen = self.seen(id);
        seen.messages
            .into_iter()
            .find(|m| m["id"] == rid)
            .unwrap_or_else(|| panic!("no reply to {rid}"))
    }

    pub fn error_code(&mut self, now: Timestamp, id: ConnId, v: Value) -> u64 {
        let r = self.ask(now, id, v);
        r["error"]["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("expected an error, got {r}"))
    }

    pub fn connect(&mut self, now: Timestamp, id: ConnId, token: &str) -> Value {
        self.ask(now, id, json!({"id": 1, "connect": {"token": token}}))
    }

    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.node.ids().any(|i| i == id)
    }
}
