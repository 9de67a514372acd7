//! RFC 6455 5.5.1 and 7.4: close frame payloads and status codes (Autobahn
//! category 7). A close payload is empty, or a 2-byte big-endian code that
//! may appear on the wire followed by a UTF-8 reason; a 1-byte payload or a
//! code outside the allowed ranges is a protocol error (1002), a reason that
//! is not UTF-8 is 1007.

use bytes::{Bytes, BytesMut};
use wavecast_core::frame::{encode_masked, Frame, FrameDecoder, FrameError, OpCode};
use wavecast_core::message::{
    encode_close_payload, parse_close, Assembler, CloseCode, CloseFrame, Message, MessageError,
};

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Codes the RFC defines (1000-1003, 1007-1011) or IANA registered since
/// (1012 service restart, 1013 try again later, 1014 bad gateway), and the
/// ranges for libraries (3000-3999) and private use (4000-4999).
const VALID: &[u16] = &[
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
];

/// 0-999 are unused; 1004 is reserved; 1005, 1006 and 1015 are for local
/// reporting only and "MUST NOT be set as a status code in a Close control
/// frame"; 1016-2999 are reserved for future revisions; 5000+ is outside
/// every range.
const INVALID: &[u16] = &[
    0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
];

#[test]
fn codes_allowed_on_the_wire_per_section_7_4() {
    for &code in VALID {
        assert!(CloseCode::is_valid_on_wire(code), "{code} must be valid");
    }
    for &code in INVALID {
        assert!(!CloseCode::is_valid_on_wire(code), "{code} must be invalid");
    }
}

#[test]
fn every_u16_is_classified_by_the_ranges() {
    let valid_count = (0..=u16::MAX)
        .filter(|&c| CloseCode::is_valid_on_wire(c))
        .count();
    // 4 (1000-1003) + 8 (1007-1014) + 2000 (3000-4999).
    assert_eq!(valid_count, 4 + 8 + 2000);
}

#[test]
fn named_constants_have_their_registry_values() {
    let table = [
        (CloseCode::NORMAL, 1000),
        (CloseCode::GOING_AWAY, 1001),
        (CloseCode::PROTOCOL_ERROR, 1002),
        (CloseCode::UNSUPPORTED_DATA, 1003),
        (CloseCode::NO_STATUS, 1005),
        (CloseCode::ABNORMAL, 1006),
        (CloseCode::INVALID_PAYLOAD, 1007),
        (CloseCode::POLICY_VIOLATION, 1008),
        (CloseCode::MESSAGE_TOO_BIG, 1009),
        (CloseCode::MANDATORY_EXTENSION, 1010),
        (CloseCode::INTERNAL_ERROR, 1011),
    ];
    for (code, value) in table {
        assert_eq!(code.0, value);
    }
    assert!(!CloseCode::is_valid_on_wire(CloseCode::NO_STATUS.0));
    assert!(!CloseCode::is_valid_on_wire(CloseCode::ABNORMAL.0));
}

#[test]
fn valid_codes_parse_with_and_without_reason() {
    for &code in VALID {
        assert_eq!(
            parse_close(&close_payload(code, b"")),
            Ok(Some(CloseFrame {
                code: CloseCode(code),
                reason: String::new()
            }))
        );
        assert_eq!(
            parse_close(&close_payload(code, "bye κόσμε".as_bytes())),
            Ok(Some(CloseFrame {
                code: CloseCode(code),
                reason: "bye κόσμε".into()
            }))
        );
    }
}

#[test]
fn invalid_codes_fail_with_1002() {
    for &code in INVALID {
        let err = parse_close(&close_payload(code, b"reason")).unwrap_err();
        assert_eq!(err, MessageError::InvalidCloseCode(code));
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR, "{code}");
    }
}

#[test]
fn empty_close_payload_has_no_status() {
    assert_eq!(parse_close(b""), Ok(None));
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    for b in [0u8, 0x03, 0xE8, 0xFF] {
        let err = parse_close(&[b]).unwrap_err();
        assert_eq!(err, MessageError::ClosePayloadTooShort);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn close_reason_that_is_not_utf8_fails_with_1007() {
    for bad in [&b"\xFF"[..], b"ok\xED\xA0\x80", b"cut \xE2\x82"] {
        let err = parse_close(&close_payload(1000, bad)).unwrap_err();
        assert_eq!(err, MessageError::InvalidCloseReason);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn close_frames_through_the_assembler() {
    let mut a = Assembler::new(1024);
    let push = |a: &mut Assembler, p: &[u8]| {
        a.push(Frame {
            fin: true,
            opcode: OpCode::Close,
            rsv1: false,
            payload: Bytes::copy_from_slice(p),
        })
    };
    assert_eq!(push(&mut a, b""), Ok(Some(Message::Close(None))));
    assert_eq!(
        push(&mut a, &close_payload(4001, b"app")),
        Ok(Some(Message::Close(Some(CloseFrame {
            code: CloseCode(4001),
            reason: "app".into()
        }))))
    );
    assert_eq!(push(&mut a, &[3]), Err(MessageError::ClosePayloadTooShort));
    assert_eq!(
        push(&mut a, &close_payload(1005, b"")),
        Err(MessageError::InvalidCloseCode(1005))
    );
}

#[test]
fn close_payload_of_125_bytes_is_fine_and_126_is_a_frame_error() {
    let reason = "r".repeat(123);
    let mut wire = BytesMut::new();
    encode_masked(
        true,
        OpCode::Close,
        &close_payload(1000, reason.as_bytes()),
        [1, 2, 3, 4],
        &mut wire,
    );
    let f = FrameDecoder::new(1024).decode(&mut wire).unwrap().unwrap();
    assert_eq!(parse_close(&f.payload).unwrap().unwrap().reason, reason);

    let mut wire = BytesMut::new();
    encode_masked(
        true,
        OpCode::Close,
        &close_payload(1000, "r".repeat(124).as_bytes()),
        [1, 2, 3, 4],
        &mut wire,
    );
    assert_eq!(
        FrameDecoder::new(1024).decode(&mut wire),
        Err(FrameError::ControlFrameTooLong(126))
    );
}

#[test]
fn encode_close_payload_round_trips_and_fits_a_control_frame() {
    assert_eq!(
        encode_close_payload(CloseCode::GOING_AWAY, "restart"),
        close_payload(1001, b"restart")
    );
    assert_eq!(encode_close_payload(CloseCode(3000), ""), vec![0x0B, 0xB8]);

    // ASCII longer than fits: cut to exactly 123 bytes of reason.
    let long = "x".repeat(500);
    let p = encode_close_payload(CloseCode::NORMAL, &long);
    assert_eq!(p.len(), 125);
    assert_eq!(&p[2..], "x".repeat(123).as_bytes());

    // Multi-byte chars are never split: 41 three-byte '€' are 123 bytes and
    // fit; with a leading ASCII byte, the last '€' no longer fits whole.
    let euros = "€".repeat(50);
    let p = encode_close_payload(CloseCode::NORMAL, &euros);
    assert_eq!(p.len(), 125);
    let shifted = format!("a{euros}");
    let p = encode_close_payload(CloseCode::NORMAL, &shifted);
    assert_eq!(p.len(), 2 + 1 + 40 * 3);
    let parsed = parse_close(&p).unwrap().unwrap();
    assert_eq!(parsed.reason, format!("a{}", "€".repeat(40)));
}
