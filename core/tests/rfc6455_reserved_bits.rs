//! RFC 6455 5.2: RSV1, RSV2 and RSV3 "MUST be 0 unless an extension is
//! negotiated that defines meanings for non-zero values". wavecast negotiates
//! no extension, so any set RSV bit fails the connection with 1002
//! (Autobahn category 3).

use bytes::BytesMut;
use wavecast_core::frame::{encode_header, encode_masked, FrameDecoder, FrameError, OpCode};
use wavecast_core::message::CloseCode;

const ALL_OPCODES: [OpCode; 6] = [
    OpCode::Continuation,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// A valid masked frame with the given RSV bits (RSV1 = 4, RSV2 = 2, RSV3 = 1)
/// forced into its first byte.
fn frame_with_rsv(rsv: u8, opcode: OpCode, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_masked(true, opcode, payload, [1, 2, 3, 4], &mut out);
    out[0] |= rsv << 4;
    out
}

#[test]
fn rsv1_rsv2_rsv3_each_set_fail_with_1002() {
    for (name, rsv) in [("RSV1", 4u8), ("RSV2", 2), ("RSV3", 1)] {
        let mut wire = frame_with_rsv(rsv, OpCode::Text, b"Hello");
        let err = FrameDecoder::new(1024).decode(&mut wire).unwrap_err();
        assert_eq!(err, FrameError::ReservedBits(rsv), "{name}");
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR, "{name}");
    }
}

#[test]
fn every_nonzero_rsv_combination_on_every_opcode_fails() {
    for rsv in 1..=7u8 {
        for opcode in ALL_OPCODES {
            let mut wire = frame_with_rsv(rsv, opcode, b"x");
            assert_eq!(
                FrameDecoder::new(1024).decode(&mut wire),
                Err(FrameError::ReservedBits(rsv)),
                "rsv {rsv:03b} opcode {opcode:?}"
            );
        }
    }
}

#[test]
fn rsv_bits_fail_fast_on_the_first_two_bytes() {
    // Autobahn 3.x sends the bad frame after valid ones and expects the
    // failure without waiting for the payload.
    let wire = frame_with_rsv(4, OpCode::Binary, &[0u8; 1000]);
    let mut head = BytesMut::from(&wire[..2]);
    assert_eq!(
        FrameDecoder::new(1 << 20).decode(&mut head),
        Err(FrameError::ReservedBits(4))
    );
}

#[test]
fn rsv_error_is_reported_after_the_valid_frames_before_it() {
    let mut wire = BytesMut::new();
    encode_masked(true, OpCode::Text, b"ok", [9, 9, 9, 9], &mut wire);
    wire.extend_from_slice(&frame_with_rsv(2, OpCode::Text, b"bad"));
    let mut dec = FrameDecoder::new(1024);
    let first = dec.decode(&mut wire).unwrap().unwrap();
    assert_eq!(&first.payload[..], b"ok");
    assert_eq!(dec.decode(&mut wire), Err(FrameError::ReservedBits(2)));
}

#[test]
fn rsv_takes_precedence_over_other_header_errors() {
    // RSV1 set, reserved opcode 3, unmasked: the first rule checked is RSV.
    let mut wire = BytesMut::from(&[0x40 | 0x80 | 0x03, 0x00][..]);
    assert_eq!(
        FrameDecoder::new(1024).decode(&mut wire),
        Err(FrameError::ReservedBits(4))
    );
}

#[test]
fn encoder_never_sets_rsv_bits() {
    let mut h = [0u8; 14];
    for opcode in ALL_OPCODES {
        for fin in [false, true] {
            for len in [0, 200, 70_000] {
                encode_header(fin, opcode, len, &mut h);
                assert_eq!(h[0] & 0x70, 0, "{opcode:?} fin {fin} len {len}");
            }
        }
    }
}
