//! RFC 6455 5.6 and 8.1: text messages must be valid UTF-8 (RFC 3629),
//! otherwise the endpoint fails the connection with 1007 (Autobahn
//! category 6). Validation is incremental and fails fast: the fragment that
//! makes the received prefix impossible to complete fails at once.

// proptest's `prop_oneof!` builds its union strategy with `std::sync::Arc`;
// that is the test harness, not core, so core's no-Arc rule does not apply.
#![allow(clippy::disallowed_types)]

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use wavecast_core::frame::OpCode;
use wavecast_core::message::{Assembler, CloseCode, Message, MessageError, Utf8Validator};

use common::frame;

/// Sends `parts` as one fragmented text message; returns the result of each
/// push.
fn send_fragments(parts: &[&[u8]]) -> Vec<Result<Option<Message>, MessageError>> {
    let mut a = Assembler::new(1 << 20);
    let last = parts.len().saturating_sub(1);
    let mut results = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let r = a.push(frame(i == last, op, part));
        let failed = r.is_err();
        results.push(r);
        if failed {
            break;
        }
    }
    results
}

/// Byte sequences that are not UTF-8, with the length of the longest prefix
/// that is still a valid *prefix* (every byte up to and including that index
/// could still be completed).
const INVALID: &[(&str, &[u8], usize)] = &[
    ("overlong NUL, 2 bytes", b"\xC0\x80", 0),
    ("overlong '/', 2 bytes", b"\xC1\xAF", 0),
    ("overlong U+007F, 3 bytes", b"\xE0\x81\xBF", 1),
    ("overlong U+07FF, 3 bytes", b"\xE0\x9F\xBF", 1),
    ("overlong U+FFFF, 4 bytes", b"\xF0\x8F\xBF\xBF", 1),
    ("overlong NUL, 4 bytes", b"\xF0\x80\x80\x80", 1),
    ("surrogate U+D800", b"\xED\xA0\x80", 1),
    ("surrogate U+DBFF", b"\xED\xAF\xBF", 1),
    ("surrogate U+DC00", b"\xED\xB0\x80", 1),
    ("surrogate U+DFFF", b"\xED\xBF\xBF", 1),
    ("U+110000", b"\xF4\x90\x80\x80", 1),
    ("U+1FFFFF", b"\xF7\xBF\xBF\xBF", 0),
    ("lead byte F5", b"\xF5\x80\x80\x80", 0),
    ("lead byte FE", b"\xFE", 0),
    ("lead byte FF", b"\xFF", 0),
    ("lone continuation", b"\x80", 0),
    ("lead then ASCII", b"\xCE\x41", 1),
    ("3-byte lead then ASCII", b"\xE2\x82\x41", 2),
];

#[test]
fn valid_multibyte_text_split_at_every_byte_across_two_fragments() {
    // 1-, 2-, 3- and 4-byte sequences side by side.
    let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε € 𝄞 \u{10FFFF} \u{FFFD}";
    let bytes = text.as_bytes();
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let results = send_fragments(&[a, b]);
        assert_eq!(results.len(), 2, "cut {cut}");
        assert_eq!(results[0], Ok(None), "cut {cut}");
        assert_eq!(
            results[1],
            Ok(Some(Message::Text(Bytes::copy_from_slice(bytes)))),
            "cut {cut}"
        );
    }
}

#[test]
fn valid_multibyte_text_in_one_byte_fragments() {
    let text = "κόσμε 𝄞 €";
    let parts: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
    let results = send_fragments(&parts);
    assert_eq!(results.len(), parts.len());
    assert!(results[..parts.len() - 1].iter().all(|r| *r == Ok(None)));
    assert_eq!(
        results.last(),
        Some(&Ok(Some(Message::Text(Bytes::from_static(
            text.as_bytes()
        )))))
    );
}

#[test]
fn invalid_sequences_in_a_single_frame_fail_with_1007() {
    for (name, bad, _) in INVALID {
        let mut payload = b"ok ".to_vec();
        payload.extend_from_slice(bad);
        let mut a = Assembler::new(1024);
        let err = a.push(frame(true, OpCode::Text, &payload)).unwrap_err();
        assert_eq!(err, MessageError::InvalidUtf8, "{name}");
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD, "{name}");
    }
}

#[test]
fn fail_fast_the_first_fragment_that_makes_the_prefix_invalid_errors() {
    // Each bad sequence is sent one byte per fragment, none of them final,
    // followed by more (valid) fragments. The push of byte `valid_prefix`
    // (the first byte that rules the sequence out) must fail; every push
    // before it must succeed.
    for (name, bad, valid_prefix) in INVALID {
        let mut a = Assembler::new(1024);
        assert_eq!(a.push(frame(false, OpCode::Text, b"start")), Ok(None));
        for (i, byte) in bad.iter().enumerate() {
            let r = a.push(frame(false, OpCode::Continuation, &[*byte]));
            if i < *valid_prefix {
                assert_eq!(r, Ok(None), "{name}: byte {i} is still a valid prefix");
            } else {
                assert_eq!(r, Err(MessageError::InvalidUtf8), "{name}: byte {i}");
                break;
            }
        }
        assert_eq!(a.buffered(), 0, "{name}: partial dropped on error");
    }
}

#[test]
fn surrogate_split_as_ed_then_a0_fails_on_the_second_fragment() {
    let results = send_fragments(&[b"\xED", b"\xA0\x80", b"never reached"]);
    assert_eq!(
        results,
        vec![Ok(None), Err(MessageError::InvalidUtf8)],
        "ED is a valid prefix (U+D000..U+D7FF); ED A0 is not"
    );
}

#[test]
fn invalid_first_fragment_fails_at_once() {
    let results = send_fragments(&[b"abc\xFF", b"def"]);
    assert_eq!(results, vec![Err(MessageError::InvalidUtf8)]);
}

#[test]
fn truncated_sequence_at_the_end_of_the_message_fails() {
    for truncated in [&b"\xCE"[..], b"\xE2\x82", b"\xF0\x9D\x84"] {
        // Single frame.
        let mut a = Assembler::new(1024);
        assert_eq!(
            a.push(frame(true, OpCode::Text, truncated)),
            Err(MessageError::InvalidUtf8),
            "{truncated:x?}"
        );
        // Fragmented: the non-final fragment is a valid prefix, the empty
        // final fragment ends the message mid-sequence.
        let results = send_fragments(&[b"x", truncated, b""]);
        assert_eq!(
            results,
            vec![Ok(None), Ok(None), Err(MessageError::InvalidUtf8)],
            "{truncated:x?}"
        );
    }
}

#[test]
fn binary_messages_are_not_validated() {
    let mut a = Assembler::new(1024);
    assert_eq!(
        a.push(frame(true, OpCode::Binary, b"\xFF\xED\xA0\x80")),
        Ok(Some(Message::Binary(Bytes::from_static(
            b"\xFF\xED\xA0\x80"
        ))))
    );
}

#[test]
fn validator_finish_fails_only_mid_sequence() {
    let mut v = Utf8Validator::new();
    v.feed(b"abc").unwrap();
    v.finish().unwrap();
    v.feed(b"\xF0\x9F").unwrap();
    assert!(v.finish().is_err());
    v.feed(b"\x98").unwrap();
    assert!(v.finish().is_err());
    v.feed(b"\x80").unwrap(); // U+1F600 complete
    v.finish().unwrap();
}

/// Is `bytes` a prefix of some valid UTF-8 string? (std's decoder reports an
/// incomplete tail with `error_len() == None`.)
fn is_valid_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

proptest! {
    /// For any bytes and any split into pieces: each feed succeeds exactly
    /// when everything fed so far is a valid prefix, and feed-all + finish
    /// accepts exactly what `std::str::from_utf8` accepts.
    #[test]
    fn validator_agrees_with_std_for_any_split(
        // Mostly UTF-8 with some raw bytes, so both outcomes are common.
        pieces in prop::collection::vec(
            prop_oneof![
                3 => any::<String>().prop_map(String::into_bytes),
                1 => prop::collection::vec(any::<u8>(), 0..4),
            ],
            0..8,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let stream: Vec<u8> = pieces.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut v = Utf8Validator::new();
        let mut failed = false;
        for w in points.windows(2) {
            let fed = v.feed(&stream[w[0]..w[1]]);
            prop_assert_eq!(fed.is_ok(), is_valid_prefix(&stream[..w[1]]));
            if fed.is_err() {
                failed = true;
                break;
            }
        }
        if !failed {
            prop_assert_eq!(v.finish().is_ok(), std::str::from_utf8(&stream).is_ok());
        } else {
            prop_assert!(std::str::from_utf8(&stream).is_err());
        }
    }
}
