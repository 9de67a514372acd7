//! Helpers shared by the core's conformance and state-machine tests: a
//! client's masked frame on the wire, a frame as the decoder yields it,
//! taking everything an outbound queue holds, and a stream position.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod harness;
pub mod keys;

use bytes::{Bytes, BytesMut};
use wavecast_core::frame::{encode_masked, Frame, OpCode};
use wavecast_core::protocol::StreamPosition;
use wavecast_core::queue::OutQueue;

/// A client frame as it goes on the wire: masked with `mask` (RFC 6455
/// 5.3), so the server side decodes it.
pub fn masked(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_masked(fin, opcode, payload, mask, &mut out);
    out
}

/// A decoded frame, as the message assembler takes it.
pub fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Frame {
    Frame {
        fin,
        opcode,
        rsv1: false,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// Takes everything `queue` holds, as the peer would read it (the queue is
/// left empty).
pub fn take_queued(queue: &mut OutQueue) -> Vec<u8> {
    let bytes: Vec<u8> = queue.slices().flat_map(|s| s.to_vec()).collect();
    let n = queue.len();
    queue.advance(n);
    bytes
}

/// The stream position `offset` in `epoch`.
pub fn pos(epoch: &str, offset: u64) -> StreamPosition {
    StreamPosition {
        epoch: epoch.into(),
        offset,
    }
}
