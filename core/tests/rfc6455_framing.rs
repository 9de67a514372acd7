//! RFC 6455 section 5.2/5.3 and 5.7: base framing, payload lengths and
//! their minimal encodings, masking direction, size limits (Autobahn
//! categories 1 "framing" and 9 "limits", at the frame level).

mod common;

use bytes::{Bytes, BytesMut};
use wavecast_core::frame::{
    apply_mask, encode, encode_frame, encode_header, Frame, FrameDecoder, FrameError, OpCode,
};
use wavecast_core::message::CloseCode;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn decode_one(dec: &mut FrameDecoder, bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    dec.decode(&mut buf)
}

fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> BytesMut {
    common::masked(fin, opcode, payload, MASK)
}

#[test]
fn rfc_5_7_single_frame_unmasked_text_decodes_on_client_side() {
    let mut dec = FrameDecoder::client(1024);
    let frame = decode_one(&mut dec, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        .unwrap()
        .unwrap();
    assert_eq!(
        frame,
        Frame {
            fin: true,
            opcode: OpCode::Text,
            rsv1: false,
            payload: Bytes::from_static(b"Hello")
        }
    );
}

#[test]
fn rfc_5_7_single_frame_masked_text_decodes_on_server_side() {
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut dec = FrameDecoder::new(1024);
    let frame = decode_one(&mut dec, &wire).unwrap().unwrap();
    assert_eq!(frame.payload, Bytes::from_static(b"Hello"));
    assert!(frame.fin);
    assert_eq!(frame.opcode, OpCode::Text);
    // And encode_masked reproduces the RFC's bytes exactly.
    assert_eq!(&masked(true, OpCode::Text, b"Hello")[..], &wire[..]);
}

#[test]
fn rfc_5_7_fragmented_unmasked_text() {
    let mut dec = FrameDecoder::client(1024);
    let mut buf = BytesMut::from(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f][..]);
    let a = dec.decode(&mut buf).unwrap().unwrap();
    let b = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        (a.fin, a.opcode, &a.payload[..]),
        (false, OpCode::Text, &b"Hel"[..])
    );
    assert_eq!(
        (b.fin, b.opcode, &b.payload[..]),
        (true, OpCode::Continuation, &b"lo"[..])
    );
    assert!(buf.is_empty());
    assert_eq!(dec.decode(&mut buf), Ok(None));
}

#[test]
fn rfc_5_7_ping_and_256_and_65536_byte_binary_headers() {
    let mut out = BytesMut::new();
    encode_frame(true, OpCode::Ping, b"Hello", &mut out);
    assert_eq!(&out[..], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    let mut h = [0u8; 14];
    let n = encode_header(true, OpCode::Binary, 256, &mut h);
    assert_eq!(&h[..n], &[0x82, 0x7E, 0x01, 0x00]);
    let n = encode_header(true, OpCode::Binary, 65536, &mut h);
    assert_eq!(
        &h[..n],
        &[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
}

#[test]
fn payload_sizes_at_every_length_boundary_round_trip_both_directions() {
    // 0, the largest 7-bit, the smallest/largest 16-bit, the smallest 64-bit.
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let expected_header = match len {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        };

        let wire = masked(true, OpCode::Binary, &payload);
        assert_eq!(wire.len(), expected_header + 4 + len, "masked len {len}");
        let f = decode_one(&mut FrameDecoder::new(1 << 20), &wire)
            .unwrap()
            .unwrap();
        assert_eq!(&f.payload[..], &payload[..], "masked len {len}");

        let wire = encode(OpCode::Binary, &payload);
        assert_eq!(wire.len(), expected_header + len, "unmasked len {len}");
        let f = decode_one(&mut FrameDecoder::client(1 << 20), &wire)
            .unwrap()
            .unwrap();
        assert_eq!(&f.payload[..], &payload[..], "unmasked len {len}");
    }
}

#[test]
fn sixteen_bit_length_for_less_than_126_is_non_minimal() {
    for len in [0u16, 1, 125] {
        let wire = [0x82, 0x80 | 126, (len >> 8) as u8, len as u8];
        let err = decode_one(&mut FrameDecoder::new(1 << 20), &wire).unwrap_err();
        assert_eq!(err, FrameError::NonMinimalLength, "len {len}");
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
    // 126 is the smallest value the 16-bit form may carry.
    let wire = [0x82, 0x80 | 126, 0, 126];
    assert_eq!(decode_one(&mut FrameDecoder::new(1 << 20), &wire), Ok(None));
}

#[test]
fn sixty_four_bit_length_for_less_than_65536_is_non_minimal() {
    for len in [0u64, 125, 126, 65535] {
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&len.to_be_bytes());
        let err = decode_one(&mut FrameDecoder::new(1 << 20), &wire).unwrap_err();
        assert_eq!(err, FrameError::NonMinimalLength, "len {len}");
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
    let mut wire = vec![0x82, 0x80 | 127];
    wire.extend_from_slice(&65536u64.to_be_bytes());
    assert_eq!(decode_one(&mut FrameDecoder::new(1 << 20), &wire), Ok(None));
}

#[test]
fn sixty_four_bit_length_with_top_bit_set_is_rejected() {
    for len in [1u64 << 63, u64::MAX, (1 << 63) | 5] {
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&len.to_be_bytes());
        // Even with no limit to speak of, the top bit is a protocol error.
        let err = decode_one(&mut FrameDecoder::new(usize::MAX), &wire).unwrap_err();
        assert_eq!(err, FrameError::LengthTopBitSet);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn too_large_frame_fails_from_the_header_alone_with_1009() {
    let mut dec = FrameDecoder::new(1000);
    // Only the header of a 1001-byte frame: no payload byte has arrived.
    let wire = [0x82, 0x80 | 126, 0x03, 0xE9];
    let err = decode_one(&mut dec, &wire).unwrap_err();
    assert_eq!(
        err,
        FrameError::FrameTooLarge {
            len: 1001,
            max: 1000
        }
    );
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);

    // A 2^62-byte announcement fails just as fast.
    let mut wire = vec![0x82, 0x80 | 127];
    wire.extend_from_slice(&(1u64 << 62).to_be_bytes());
    assert_eq!(
        decode_one(&mut dec, &wire),
        Err(FrameError::FrameTooLarge {
            len: 1 << 62,
            max: 1000
        })
    );

    // Exactly at the limit is fine.
    let payload = vec![7u8; 1000];
    let f = decode_one(&mut dec, &masked(true, OpCode::Binary, &payload))
        .unwrap()
        .unwrap();
    assert_eq!(f.payload.len(), 1000);
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let wire = encode(OpCode::Text, b"hi");
    let err = decode_one(&mut FrameDecoder::new(1024), &wire).unwrap_err();
    assert_eq!(err, FrameError::UnmaskedFrame);
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    // Fails on the 2 fixed header bytes, before any payload.
    assert_eq!(
        decode_one(&mut FrameDecoder::new(1024), &wire[..2]),
        Err(FrameError::UnmaskedFrame)
    );
}

#[test]
fn masked_server_frame_is_a_protocol_error_on_the_client_side() {
    let wire = masked(true, OpCode::Text, b"hi");
    let err = decode_one(&mut FrameDecoder::client(1024), &wire).unwrap_err();
    assert_eq!(err, FrameError::MaskedFrame);
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn every_prefix_is_incomplete_and_untouched_then_byte_at_a_time_decodes() {
    let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let wire = masked(true, OpCode::Binary, &payload);
    let mut dec = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        assert_eq!(dec.decode(&mut buf), Ok(None), "after {i} bytes");
        assert_eq!(&buf[..], &wire[..i], "incomplete decode must not consume");
        buf.extend_from_slice(&[*byte]);
    }
    let f = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&f.payload[..], &payload[..]);
    assert!(buf.is_empty());
}

#[test]
fn several_frames_in_one_buffer_decode_in_order_leaving_the_partial_tail() {
    let mut wire = masked(true, OpCode::Text, b"one");
    wire.extend_from_slice(&masked(true, OpCode::Ping, b"two"));
    wire.extend_from_slice(&masked(false, OpCode::Binary, b"three"));
    let tail = masked(true, OpCode::Continuation, b"four");
    wire.extend_from_slice(&tail[..3]);

    let mut dec = FrameDecoder::new(1024);
    let got: Vec<(bool, OpCode, Vec<u8>)> = std::iter::from_fn(|| dec.decode(&mut wire).unwrap())
        .map(|f| (f.fin, f.opcode, f.payload.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (true, OpCode::Text, b"one".to_vec()),
            (true, OpCode::Ping, b"two".to_vec()),
            (false, OpCode::Binary, b"three".to_vec()),
        ]
    );
    assert_eq!(&wire[..], &tail[..3]);
}

#[test]
fn masking_follows_section_5_3_byte_i_xor_key_i_mod_4() {
    let payload: Vec<u8> = (0..37u8).collect();
    let wire = masked(true, OpCode::Binary, &payload);
    let body = &wire[6..];
    for (i, (m, p)) in body.iter().zip(&payload).enumerate() {
        assert_eq!(*m, p ^ MASK[i % 4], "byte {i}");
    }
    let mut again = body.to_vec();
    apply_mask(&mut again, MASK);
    assert_eq!(again, payload);
}

#[test]
fn encode_is_encode_frame_with_fin() {
    let mut out = BytesMut::new();
    encode_frame(true, OpCode::Binary, b"abc", &mut out);
    assert_eq!(encode(OpCode::Binary, b"abc"), out.freeze());
    let mut out = BytesMut::new();
    encode_frame(false, OpCode::Text, b"abc", &mut out);
    assert_eq!(out[0], 0x01, "no FIN, no RSV, opcode 1");
}
