//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the test that
//! replays the committed seeds on stable (`core/tests/fuzz_seeds.rs`).
//!
//! Each takes arbitrary bytes, drives one part of the core with them, and
//! panics only if an invariant that must hold for *every* input breaks, so
//! a fuzzer finding is a real bug.

use bytes::BytesMut;

use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{self, FrameDecoder};
use crate::handshake::{self, HandshakeConfig};
use crate::message::Assembler;
use crate::time::Timestamp;

/// Decodes frames from `data` in chunks whose sizes come from the data
/// itself, assembling messages; the frames and the first error must be the
/// same as when the whole input is decoded at once, and every decoded frame
/// must re-encode to a frame that decodes to itself.
pub fn frame(data: &[u8]) {
    let Some((&split_seed, data)) = data.split_first() else {
        return;
    };
    let whole = decode_all(data, data.len().max(1));
    let chunked = decode_all(data, usize::from(split_seed % 16) + 1);
    assert_eq!(whole, chunked, "chunking changed the decoded frames");
    let mut assembler = Assembler::new(1 << 16);
    for f in whole.0 {
        let mut out = BytesMut::new();
        frame::encode_masked(f.fin, f.opcode, &f.payload, [1, 2, 3, 4], &mut out);
        let mut dec = FrameDecoder::new(1 << 20);
        let again = dec.decode(&mut out).expect("re-encoded frame decodes");
        assert_eq!(again.as_ref(), Some(&f), "re-encoded frame differs");
        if assembler.push(f).is_err() {
            break;
        }
    }
}

type Decoded = (Vec<frame::Frame>, Option<frame::FrameError>);

fn decode_all(data: &[u8], chunk: usize) -> Decoded {
    let mut dec = FrameDecoder::new(1 << 16);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Parses a request head and, if complete, validates it as an upgrade. A
/// rejection must carry a 4xx/5xx status and a well-formed response; an
/// acceptance a 101 response.
pub fn handshake(data: &[u8]) {
    let config = HandshakeConfig {
        allowed_origins: Some(vec!["http://good.example".into()]),
        subprotocols: vec!["wavecast.json".into(), "wavecast.msgpack".into()],
        ..HandshakeConfig::default()
    };
    match handshake::parse_request(data, config.max_head_size) {
        Ok(None) => {}
        Ok(Some(head)) => {
            assert!(head.head_len <= data.len());
            match handshake::accept(&head, &config) {
                Ok(a) => assert!(a.response.starts_with(b"HTTP/1.1 101 ")),
                Err(e) => check_rejection(e.status(), &e.response()),
            }
        }
        Err(e) => check_rejection(e.status(), &e.response()),
    }
}

fn check_rejection(status: u16, response: &[u8]) {
    assert!((400..600).contains(&status), "rejection status {status}");
    assert!(response.starts_with(b"HTTP/1.1 "));
    assert!(response.windows(4).any(|w| w == b"\r\n\r\n"));
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
