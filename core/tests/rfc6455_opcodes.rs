//! RFC 6455 5.2 and 5.5: opcodes and control frames. Reserved opcodes
//! (3-7 non-control, 11-15 control) fail with 1002 (Autobahn category 4);
//! control frames carry at most 125 bytes and are never fragmented
//! (Autobahn category 2 and 5.1/5.2).

mod common;

use bytes::BytesMut;
use wavecast_core::frame::{FrameDecoder, FrameError, OpCode, MAX_CONTROL_PAYLOAD};
use wavecast_core::message::CloseCode;

const CONTROL: [OpCode; 3] = [OpCode::Close, OpCode::Ping, OpCode::Pong];

fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> BytesMut {
    common::masked(fin, opcode, payload, [0xde, 0xad, 0xbe, 0xef])
}

#[test]
fn opcode_wire_values_follow_section_5_2() {
    let table = [
        (0x0, OpCode::Continuation, false),
        (0x1, OpCode::Text, false),
        (0x2, OpCode::Binary, false),
        (0x8, OpCode::Close, true),
        (0x9, OpCode::Ping, true),
        (0xA, OpCode::Pong, true),
    ];
    for (value, opcode, control) in table {
        assert_eq!(opcode.as_u8(), value);
        assert_eq!(OpCode::from_u8(value), Some(opcode));
        assert_eq!(opcode.is_control(), control, "{opcode:?}");
    }
    for v in (3..=7).chain(11..=15).chain(16..=255) {
        assert_eq!(OpCode::from_u8(v), None, "{v}");
    }
}

#[test]
fn reserved_non_control_opcodes_3_to_7_fail_with_1002() {
    for op in 3..=7u8 {
        // Masked, FIN, empty payload: only the opcode is wrong.
        let mut wire = BytesMut::from(&[0x80 | op, 0x80, 1, 2, 3, 4][..]);
        let err = FrameDecoder::new(1024).decode(&mut wire).unwrap_err();
        assert_eq!(err, FrameError::ReservedOpcode(op));
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn reserved_control_opcodes_11_to_15_fail_with_1002() {
    for op in 11..=15u8 {
        let mut wire = BytesMut::from(&[0x80 | op, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]);
        let err = FrameDecoder::new(1024).decode(&mut wire).unwrap_err();
        assert_eq!(err, FrameError::ReservedOpcode(op));
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn reserved_opcode_fails_on_the_first_two_bytes_even_without_fin() {
    for op in (3..=7u8).chain(11..=15) {
        let mut wire = BytesMut::from(&[op, 0x80 | 100][..]);
        assert_eq!(
            FrameDecoder::new(1024).decode(&mut wire),
            Err(FrameError::ReservedOpcode(op))
        );
    }
}

#[test]
fn control_frames_with_0_and_125_bytes_are_accepted() {
    for opcode in CONTROL {
        for len in [0, MAX_CONTROL_PAYLOAD] {
            // Close payloads are parsed later (message layer): the frame
            // layer accepts any bytes.
            let payload = vec![b'a'; len];
            let mut wire = masked(true, opcode, &payload);
            let f = FrameDecoder::new(1024).decode(&mut wire).unwrap().unwrap();
            assert_eq!((f.opcode, f.payload.len()), (opcode, len));
        }
    }
}

#[test]
fn control_frame_of_126_bytes_fails_with_1002() {
    for opcode in CONTROL {
        let mut wire = masked(true, opcode, &[b'a'; 126]);
        let err = FrameDecoder::new(1 << 20).decode(&mut wire).unwrap_err();
        assert_eq!(err, FrameError::ControlFrameTooLong(126), "{opcode:?}");
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn control_frame_too_long_fails_from_the_header_alone() {
    // 16-bit and 64-bit length forms, payload not sent.
    let mut wire = BytesMut::from(&[0x89, 0x80 | 126, 0x01, 0x00][..]);
    assert_eq!(
        FrameDecoder::new(1 << 20).decode(&mut wire),
        Err(FrameError::ControlFrameTooLong(256))
    );
    let mut wire = BytesMut::from(&[0x8A, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0][..]);
    assert_eq!(
        FrameDecoder::new(1 << 20).decode(&mut wire),
        Err(FrameError::ControlFrameTooLong(65536))
    );
}

#[test]
fn control_length_violation_is_a_protocol_error_not_a_size_limit() {
    // Even with a frame limit below 126, a 126-byte ping is 1002, not 1009:
    // the RFC rule is checked before the local limit.
    let mut wire = masked(true, OpCode::Ping, &[0; 126]);
    let err = FrameDecoder::new(10).decode(&mut wire).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn fragmented_ping_pong_and_close_fail_with_1002() {
    for opcode in CONTROL {
        let mut wire = masked(false, opcode, b"frag");
        let err = FrameDecoder::new(1024).decode(&mut wire).unwrap_err();
        assert_eq!(err, FrameError::FragmentedControlFrame, "{opcode:?}");
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
        // Fails on the first two bytes.
        let mut head = BytesMut::from(&masked(false, opcode, b"frag")[..2]);
        assert_eq!(
            FrameDecoder::new(1024).decode(&mut head),
            Err(FrameError::FragmentedControlFrame)
        );
    }
}

#[test]
fn non_fin_data_frames_are_fine_at_the_frame_level() {
    for opcode in [OpCode::Continuation, OpCode::Text, OpCode::Binary] {
        let mut wire = masked(false, opcode, b"part");
        let f = FrameDecoder::new(1024).decode(&mut wire).unwrap().unwrap();
        assert!(!f.fin);
        assert_eq!(f.opcode, opcode);
    }
}
