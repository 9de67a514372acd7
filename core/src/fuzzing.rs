//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the test that
//! replays the committed seeds on stable (`core/tests/fuzz_seeds.rs`).
//!
//! Each takes arbitrary bytes, drives one part of the core with them, and
//! panics only if an invariant that must hold for *every* input breaks, so
//! a fuzzer finding is a real bug.

use bytes::BytesMut;

use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{self, FrameDecoder};
use crate::handshake::HandshakeConfig;
use crate::message::Assembler;
use crate::time::Timestamp;

/// Frames from an untrusted peer. Byte 0: bit 7 selects the client decoder
/// (else server), low 7 bits seed the chunk sizes; the rest is the stream.
/// Any chunking must give the same frames, first error and leftover; every
/// frame must obey section 5 and re-encode to itself; assembly must keep
/// text UTF-8, close codes wire-valid and its buffer bounded.
pub fn frame(data: &[u8]) {
    use crate::frame::{encode_frame, encode_masked, MAX_CONTROL_PAYLOAD};
    use crate::message::{CloseCode, Message};
    const MAX_PAYLOAD: usize = 1 << 16;
    const MASK: [u8; 4] = [0x5a, 0xa5, 0x0f, 0xf0];
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let client_side = control & 0x80 != 0;
    let new_decoder = || {
        if client_side {
            FrameDecoder::client(MAX_PAYLOAD)
        } else {
            FrameDecoder::new(MAX_PAYLOAD)
        }
    };

    // 1. The whole stream at once.
    let mut dec = new_decoder();
    let mut buf = BytesMut::from(stream);
    let mut whole = Vec::new();
    let whole_end = loop {
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => whole.push(frame),
            Ok(None) => break Ok(buf.len()),
            Err(e) => break Err(e),
        }
    };

    // 2. The same stream in chunks of 1..=17 bytes.
    let mut dec = new_decoder();
    let mut buf = BytesMut::new();
    let mut chunked = Vec::new();
    let mut rest = stream;
    let mut step = usize::from(control & 0x7f);
    let mut chunked_end = None;
    while chunked_end.is_none() && !rest.is_empty() {
        step = (step * 5 + 3) % 17;
        let (chunk, tail) = rest.split_at((step + 1).min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => chunked.push(frame),
                Ok(None) => break,
                Err(e) => {
                    chunked_end = Some(Err(e));
                    break;
                }
            }
        }
    }
    let chunked_end = chunked_end.unwrap_or(Ok(buf.len()));
    assert_eq!(whole, chunked);
    assert_eq!(whole_end, chunked_end);
    if let Err(e) = &whole_end {
        assert!(matches!(e.close_code().0, 1002 | 1009));
    }

    // 3. Every decoded frame obeys the section 5 rules and re-encodes to
    //    bytes that decode back to it.
    for frame in &whole {
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        if frame.opcode.is_control() {
            assert!(frame.fin && frame.payload.len() <= MAX_CONTROL_PAYLOAD);
        }
        let mut wire = BytesMut::new();
        if client_side {
            encode_frame(frame.fin, frame.opcode, &frame.payload, &mut wire);
        } else {
            encode_masked(frame.fin, frame.opcode, &frame.payload, MASK, &mut wire);
        }
        assert_eq!(new_decoder().decode(&mut wire), Ok(Some(frame.clone())));
        assert!(wire.is_empty());
    }

    // 4. Assembly.
    let mut assembler = Assembler::new(MAX_PAYLOAD);
    for frame in whole {
        match assembler.push(frame) {
            Ok(Some(Message::Text(text))) => assert!(std::str::from_utf8(&text).is_ok()),
            Ok(Some(Message::Close(Some(close)))) => {
                assert!(CloseCode::is_valid_on_wire(close.code.0));
                assert!(close.reason.len() <= MAX_CONTROL_PAYLOAD - 2);
            }
            Ok(Some(Message::Binary(data))) => assert!(data.len() <= MAX_PAYLOAD),
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e.close_code().0, 1002 | 1007 | 1009));
                assert_eq!(assembler.buffered(), 0);
                break;
            }
        }
        assert!(assembler.buffered() <= MAX_PAYLOAD);
    }
}

/// Parses a request head and, if complete, validates it as an upgrade, with
/// the default head limit and a tiny one (so short inputs reach 431). A
/// rejection must be a complete 4xx/5xx response whose status line matches;
/// an acceptance a 101 with a subprotocol we speak; bytes after the head
/// must never change it.
pub fn handshake(data: &[u8]) {
    use crate::handshake::{accept, parse_request, HandshakeError};

    fn check_rejection(e: &HandshakeError) {
        let status = e.status();
        assert!((400..600).contains(&status), "{e:?} -> {status}");
        let response = e.response();
        assert!(response.starts_with(b"HTTP/1.1 "));
        assert_eq!(response.get(9..12), Some(status.to_string().as_bytes()));
        assert!(response.windows(4).any(|w| w == b"\r\n\r\n"));
    }

    let config = HandshakeConfig {
        allowed_origins: Some(vec!["https://app.example.com".to_owned()]),
        subprotocols: vec!["wavecast.json".into(), "wavecast.msgpack".into()],
        ..HandshakeConfig::default()
    };
    for max in [config.max_head_size, 64] {
        match parse_request(data, max) {
            Ok(None) => assert!(data.len() <= max, "incomplete beyond the limit"),
            Ok(Some(head)) => {
                assert!(head.head_len <= data.len() && head.head_len <= max);
                let again = data.get(..head.head_len).map(|h| parse_request(h, max));
                assert_eq!(again, Some(Ok(Some(head.clone()))));
                match accept(&head, &config) {
                    Ok(accepted) => {
                        assert!(head.wants_websocket());
                        assert!(accepted
                            .response
                            .starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                        assert!(accepted.response.ends_with(b"\r\n\r\n"));
                        if let Some(p) = &accepted.subprotocol {
                            assert!(config.subprotocols.contains(p));
                        }
                    }
                    Err(e) => check_rejection(&e),
                }
            }
            Err(e) => check_rejection(&e),
        }
    }
}

/// Feeds `data` to a connection as a client byte stream, in chunks whose
/// sizes come from the data, with timeouts in between. Whatever happens,
/// the connection must end up either open or closed with exactly one
/// `Closed` event, never hold more input than one frame plus one message,
/// and release everything once closed.
pub fn connection(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let config = ConnectionConfig {
        max_message_size: 1024,
        max_queued_bytes: 4096,
        ..ConnectionConfig::default()
    };
    let mut now = Timestamp::ZERO;
    let mut conn = Connection::new(now, config.clone());
    let mut closed = 0;
    let chunk = usize::from(seed % 32) + 1;
    for piece in data.chunks(chunk) {
        now = now + std::time::Duration::from_millis(u64::from(piece[0]));
        conn.handle_read(now, piece);
        conn.handle_timeout(now);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Closed(_) => closed += 1,
                Event::Text(t) => {
                    assert!(std::str::from_utf8(&t).is_ok(), "text event not UTF-8");
                    let _ = conn.send(now, frame::encode(frame::OpCode::Text, &t));
                }
                Event::Binary(b) => {
                    let _ = conn.send(now, frame::encode(frame::OpCode::Binary, &b));
                }
            }
        }
        assert!(conn.buffered_input() <= 2 * (1024 + frame::MAX_HEADER_LEN));
        // A slow client: take at most half of what is queued.
        let q = conn.queue().len();
        conn.queue().advance(q / 2);
    }
    let far = now + std::time::Duration::from_secs(3600);
    conn.handle_timeout(far);
    conn.handle_eof(far);
    while let Some(ev) = conn.poll_event() {
        if matches!(ev, Event::Closed(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one Closed event");
    assert_eq!(conn.buffered_input(), 0);
    assert_eq!(conn.poll_timeout(), None, "no timer after close");
}

/// Decodes `data` as a client command in both encodings. A command that
/// decodes must re-encode (in both encodings) to a command that decodes to
/// the same thing; one that does not must fall in exactly one error class
/// (close with 4500, or an error reply whose id is usable and which
/// encodes). Bytes that make a valid payload must survive JSON ->
/// MessagePack -> JSON, and their pub push must splice the JSON verbatim and
/// carry the same value in MessagePack.
pub fn protocol(data: &[u8]) {
    use crate::protocol::{self as p, Encoding, Payload};

    for enc in Encoding::ALL {
        match p::decode_request(enc, data) {
            Ok(request) => {
                assert!(request.id > 0, "decoded id 0");
                assert!(
                    request
                        .command
                        .channel()
                        .is_none_or(|c| p::validate_channel(c).is_ok()),
                    "decoded an invalid channel name"
                );
                for out in Encoding::ALL {
                    let bytes = p::encode_request(out, &request);
                    let again = p::decode_request(out, &bytes)
                        .unwrap_or_else(|e| panic!("re-encoded command does not decode: {e}"));
                    assert_eq!(again.id, request.id);
                    assert_eq!(
                        without_data(&again.command),
                        without_data(&request.command),
                        "re-encoded command differs"
                    );
                    if let (
                        p::Command::Publish { data: a, .. },
                        p::Command::Publish { data: b, .. },
                    ) = (&again.command, &request.command)
                    {
                        if enc == Encoding::Json && out == Encoding::Json {
                            assert_eq!(a, b, "JSON data not kept verbatim");
                        } else {
                            assert_eq!(
                                json_value(a),
                                json_value(b),
                                "data changed value through MessagePack"
                            );
                        }
                    }
                }
                if let p::Command::Publish { data, .. } = &request.command {
                    check_payload(data);
                }
            }
            Err(e) => match (e.close_code(), e.error_reply()) {
                (Some(code), None) => assert_eq!(code, p::close::BAD_COMMAND),
                (None, Some((id, reply))) => {
                    assert!(id > 0, "error reply to id 0");
                    for out in Encoding::ALL {
                        let bytes = p::encode_reply(out, id, &p::Reply::Error(reply.clone()));
                        let value: serde_json::Value = match out {
                            Encoding::Json => serde_json::from_slice(&bytes).ok(),
                            Encoding::MsgPack => rmp_serde::from_slice(&bytes).ok(),
                        }
                        .expect("error reply encodes to a valid message");
                        assert_eq!(value["error"]["code"], u64::from(reply.code.code()));
                    }
                }
                _ => panic!("protocol error in no class or in both: {e:?}"),
            },
        }
    }
    if let Ok(payload) = Payload::from_json(data) {
        check_payload(&payload);
    }
    if let Ok(payload) = Payload::from_msgpack(data) {
        check_payload(&payload);
    }
}

fn check_payload(payload: &crate::protocol::Payload) {
    use crate::protocol::{self as p, Encoding, Payload, Publication};

    let value = json_value(payload);
    let back = Payload::from_msgpack(&payload.to_msgpack())
        .unwrap_or_else(|e| panic!("payload does not transcode back from MessagePack: {e}"));
    assert_eq!(
        json_value(&back),
        value,
        "payload changed value through MessagePack"
    );
    let publication = Publication {
        offset: u64::MAX,
        data: payload.clone(),
    };
    let json = p::encode_pub(Encoding::Json, "ns:c", &publication);
    let mut expected =
        br#"{"push":{"channel":"ns:c","pub":{"offset":18446744073709551615,"data":"#.to_vec();
    expected.extend_from_slice(payload.as_json());
    expected.extend_from_slice(b"}}}");
    assert_eq!(
        &json[..],
        &expected[..],
        "JSON pub push does not splice data"
    );
    let from_json: serde_json::Value =
        serde_json::from_slice(&json).expect("JSON pub push is JSON");
    let from_msgpack: serde_json::Value =
        rmp_serde::from_slice(&p::encode_pub(Encoding::MsgPack, "ns:c", &publication))
            .expect("MessagePack pub push decodes");
    assert_eq!(
        from_json, from_msgpack,
        "pub push differs between encodings"
    );
}

/// The command with its data blanked (data is compared separately).
fn without_data(command: &crate::protocol::Command) -> crate::protocol::Command {
    use crate::protocol::{Command, Payload};
    match command {
        Command::Publish { channel, .. } => Command::Publish {
            channel: channel.clone(),
            data: Payload::null(),
        },
        other => other.clone(),
    }
}

fn json_value(payload: &crate::protocol::Payload) -> serde_json::Value {
    serde_json::from_slice(payload.as_json()).expect("a payload is valid JSON")
}
