//! RFC 6455 5.4: fragmentation (Autobahn category 5, plus the message size
//! limits of category 9). A fragmented message is a text/binary frame
//! without FIN, continuation frames, and a final continuation with FIN;
//! control frames may be injected between fragments; a continuation with no
//! message in progress, or a new data frame inside one, is a protocol error.

mod common;

use bytes::{Bytes, BytesMut};
use wavecast_core::frame::{encode_masked, FrameDecoder, OpCode};
use wavecast_core::message::{Assembler, CloseCode, CloseFrame, Message, MessageError};

use common::frame;

#[test]
fn unfragmented_text_and_binary_are_returned_whole_without_buffering() {
    let mut a = Assembler::new(1024);
    assert_eq!(
        a.push(frame(true, OpCode::Text, b"hi")),
        Ok(Some(Message::Text(Bytes::from_static(b"hi"))))
    );
    assert_eq!(
        a.push(frame(true, OpCode::Binary, &[0, 255])),
        Ok(Some(Message::Binary(Bytes::from_static(&[0, 255]))))
    );
    assert_eq!(a.buffered(), 0);
}

#[test]
fn fragments_are_joined_in_order() {
    for (opcode, parts) in [
        (OpCode::Text, vec![&b"Hel"[..], b"lo", b", ", b"world"]),
        (OpCode::Binary, vec![&b"\x00\x01"[..], b"", b"\x02", b""]),
    ] {
        let mut a = Assembler::new(1024);
        let last = parts.len() - 1;
        let mut result = None;
        let mut expected_buffered = 0;
        for (i, part) in parts.iter().enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            let out = a.push(frame(i == last, op, part)).unwrap();
            if i < last {
                assert_eq!(out, None, "fragment {i} must not complete");
                expected_buffered += part.len();
                assert_eq!(a.buffered(), expected_buffered);
            } else {
                result = out;
            }
        }
        let joined: Vec<u8> = parts.concat();
        let expected = match opcode {
            OpCode::Text => Message::Text(joined.into()),
            _ => Message::Binary(joined.into()),
        };
        assert_eq!(result, Some(expected));
        assert_eq!(a.buffered(), 0, "idle after the final fragment");
    }
}

#[test]
fn continuation_without_a_started_message_is_a_protocol_error() {
    for fin in [true, false] {
        let mut a = Assembler::new(1024);
        let err = a
            .push(frame(fin, OpCode::Continuation, b"orphan"))
            .unwrap_err();
        assert_eq!(err, MessageError::UnexpectedContinuation);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn continuation_after_a_completed_message_is_a_protocol_error() {
    let mut a = Assembler::new(1024);
    a.push(frame(false, OpCode::Text, b"a")).unwrap();
    a.push(frame(true, OpCode::Continuation, b"b")).unwrap();
    assert_eq!(
        a.push(frame(true, OpCode::Continuation, b"c")),
        Err(MessageError::UnexpectedContinuation)
    );
}

#[test]
fn text_or_binary_inside_a_fragmented_message_is_a_protocol_error() {
    for started in [OpCode::Text, OpCode::Binary] {
        for intruder in [OpCode::Text, OpCode::Binary] {
            for fin in [true, false] {
                let mut a = Assembler::new(1024);
                assert_eq!(a.push(frame(false, started, b"start")), Ok(None));
                let err = a.push(frame(fin, intruder, b"new")).unwrap_err();
                assert_eq!(err, MessageError::ExpectedContinuation);
                assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
                assert_eq!(a.buffered(), 0, "the partial message is dropped");
            }
        }
    }
}

#[test]
fn ping_pong_and_close_between_fragments_are_returned_at_once() {
    let mut a = Assembler::new(1024);
    assert_eq!(a.push(frame(false, OpCode::Text, b"frag1 ")), Ok(None));
    assert_eq!(
        a.push(frame(true, OpCode::Ping, b"p")),
        Ok(Some(Message::Ping(Bytes::from_static(b"p"))))
    );
    assert_eq!(
        a.push(frame(false, OpCode::Continuation, b"frag2 ")),
        Ok(None)
    );
    assert_eq!(
        a.push(frame(true, OpCode::Pong, b"")),
        Ok(Some(Message::Pong(Bytes::new())))
    );
    assert_eq!(a.buffered(), 12, "control frames do not touch the partial");
    assert_eq!(
        a.push(frame(true, OpCode::Continuation, b"frag3")),
        Ok(Some(Message::Text(Bytes::from_static(
            b"frag1 frag2 frag3"
        ))))
    );

    // A close in the middle is reported too; the connection layer decides
    // what happens to the unfinished message.
    let mut a = Assembler::new(1024);
    a.push(frame(false, OpCode::Binary, b"x")).unwrap();
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    assert_eq!(
        a.push(frame(true, OpCode::Close, &close)),
        Ok(Some(Message::Close(Some(CloseFrame {
            code: CloseCode::NORMAL,
            reason: "bye".into()
        }))))
    );
}

#[test]
fn fragmented_message_from_the_wire_with_ping_in_between() {
    // Autobahn 5.6-style: text fragment, ping, final fragment, all masked and
    // delivered in one read.
    let mut wire = BytesMut::new();
    encode_masked(false, OpCode::Text, b"fragment1", [1, 2, 3, 4], &mut wire);
    encode_masked(true, OpCode::Ping, b"ping", [5, 6, 7, 8], &mut wire);
    encode_masked(
        true,
        OpCode::Continuation,
        b"fragment2",
        [9, 9, 9, 9],
        &mut wire,
    );
    let mut dec = FrameDecoder::new(1024);
    let mut a = Assembler::new(1024);
    let mut messages = Vec::new();
    while let Some(f) = dec.decode(&mut wire).unwrap() {
        messages.extend(a.push(f).unwrap());
    }
    assert_eq!(
        messages,
        vec![
            Message::Ping(Bytes::from_static(b"ping")),
            Message::Text(Bytes::from_static(b"fragment1fragment2")),
        ]
    );
}

#[test]
fn many_one_byte_fragments() {
    let text = "fragmentation by the byte";
    let bytes = text.as_bytes();
    let mut a = Assembler::new(1024);
    for (i, b) in bytes.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let out = a.push(frame(i + 1 == bytes.len(), op, &[*b])).unwrap();
        assert_eq!(out.is_some(), i + 1 == bytes.len());
        if let Some(m) = out {
            assert_eq!(m, Message::Text(Bytes::from_static(text.as_bytes())));
        }
    }
}

#[test]
fn message_size_limit_is_inclusive_and_fails_at_the_fragment_that_exceeds_it() {
    // Exactly at the limit across fragments: accepted.
    let mut a = Assembler::new(10);
    a.push(frame(false, OpCode::Binary, &[0; 4])).unwrap();
    a.push(frame(false, OpCode::Continuation, &[0; 4])).unwrap();
    assert_eq!(
        a.push(frame(true, OpCode::Continuation, &[0; 2])),
        Ok(Some(Message::Binary(Bytes::from(vec![0; 10]))))
    );

    // One more byte: the non-final fragment that crosses the limit fails,
    // without waiting for FIN and without buffering it.
    let mut a = Assembler::new(10);
    a.push(frame(false, OpCode::Binary, &[0; 6])).unwrap();
    let err = a
        .push(frame(false, OpCode::Continuation, &[0; 5]))
        .unwrap_err();
    assert_eq!(err, MessageError::MessageTooLarge { max: 10 });
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(a.buffered(), 0);
}

#[test]
fn single_frame_over_the_message_limit_fails_with_1009() {
    for (opcode, fin) in [
        (OpCode::Text, true),
        (OpCode::Binary, true),
        (OpCode::Binary, false),
    ] {
        let mut a = Assembler::new(3);
        let err = a.push(frame(fin, opcode, b"four")).unwrap_err();
        assert_eq!(err, MessageError::MessageTooLarge { max: 3 });
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }
}

#[test]
fn control_frames_do_not_count_against_the_message_limit() {
    let mut a = Assembler::new(2);
    a.push(frame(false, OpCode::Binary, b"ab")).unwrap();
    assert!(a.push(frame(true, OpCode::Ping, &[0; 125])).is_ok());
    assert!(a.push(frame(true, OpCode::Continuation, b"")).is_ok());
}
