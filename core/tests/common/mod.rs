//! Helpers shared by the core's conformance and state-machine tests: a
//! client's masked frame on the wire, and a frame as the decoder yields it.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use wavecast_core::frame::{encode_masked, Frame, OpCode};

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
        payload: Bytes::copy_from_slice(payload),
    }
}
