//! RFC 7692 (permessage-deflate) conformance of the server side, by
//! section, after Autobahn's categories 12 and 13: compressed messages of
//! many sizes, whole and fragmented at many sizes, offers with and without
//! the context takeover parameters, and bad ones (RSV1 where it may not
//! be, invalid deflate data, a decompression bomb, a client that keeps
//! context although it was told not to).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use wavecast_core::connection::{CloseCause, Connection, ConnectionConfig, Event};
use wavecast_core::deflate::{negotiate, InflateError};
use wavecast_core::frame::{self, Frame, FrameDecoder, FrameError, OpCode};
use wavecast_core::handshake::{self, HandshakeConfig};
use wavecast_core::message::{self, MessageError};
use wavecast_core::Timestamp;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX: usize = 256 * 1024;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn conn() -> Connection {
    let config = ConnectionConfig {
        heartbeat_interval: Duration::from_secs(60),
        max_message_size: MAX,
        ..ConnectionConfig::default()
    };
    let mut c = Connection::new(t(0), config);
    c.enable_deflate();
    c
}

/// What a client's deflater sends for one message (section 7.2.1): raw
/// deflate, sync flush, the `00 00 ff ff` tail removed. `z` carries
/// context from message to message unless reset by the caller.
fn client_deflate(z: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = z.total_in();
    loop {
        let done = (z.total_in() - start) as usize;
        out.reserve(data.len() - done + 64);
        z.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (z.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    client_deflate(&mut Compress::new(Compression::new(6), false), data)
}

/// A compressed message as the client puts it on the wire, in fragments
/// of `fragment` bytes (RSV1 on the first only, section 6.1).
fn wire(op: OpCode, compressed: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if compressed.is_empty() {
        vec![&[]]
    } else {
        compressed.chunks(fragment.max(1)).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { op } else { OpCode::Continuation };
        let mut f = common::masked(i + 1 == chunks.len(), opcode, chunk, MASK);
        if i == 0 {
            frame::set_rsv1(&mut f);
        }
        out.extend_from_slice(&f);
    }
    out
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn written(c: &mut Connection) -> Vec<Frame> {
    let bytes = common::take_queued(c.queue());
    let mut buf = BytesMut::from(&bytes[..]);
    let mut dec = FrameDecoder::client(1 << 20);
    std::iter::from_fn(|| dec.decode(&mut buf).unwrap()).collect()
}

/// The close code the server failed the connection with.
fn failed_with(c: &mut Connection) -> u16 {
    let frames = written(c);
    let close = frames.last().expect("a close frame");
    assert_eq!(close.opcode, OpCode::Close);
    message::parse_close(&close.payload)
        .unwrap()
        .map(|f| f.code.0)
        .unwrap()
}

/// Text that compresses like JSON and has multi-byte characters.
fn text(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < n {
        s.push_str(&format!("{{\"n\":{i},\"v\":\"κόσμε\"}}"));
        i += 1;
    }
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

const SIZES: &[usize] = &[
    0, 1, 16, 64, 125, 126, 256, 1024, 4096, 16384, 65535, 65536, 131072, MAX,
];

// ----- Section 6 / 7.2.2: compressed messages of many sizes (12.1, 13.1)

#[test]
fn s6_compressed_text_of_many_sizes_is_inflated() {
    for &n in SIZES {
        let msg = text(n);
        let mut c = conn();
        c.handle_read(
            t(1),
            &wire(OpCode::Text, &deflate(msg.as_bytes()), usize::MAX),
        );
        assert_eq!(
            events(&mut c),
            vec![Event::Text(msg.clone().into())],
            "size {n}"
        );
    }
}

#[test]
fn s6_compressed_binary_of_many_sizes_is_inflated() {
    for &n in SIZES {
        let msg: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = conn();
        c.handle_read(t(1), &wire(OpCode::Binary, &deflate(&msg), usize::MAX));
        assert_eq!(events(&mut c), vec![Event::Binary(msg.into())], "size {n}");
    }
}

/// Section 6.1: RSV1 set on the first frame only; fragments of many sizes
/// (Autobahn 12.2-12.5, 13.2-13.5 fragment the same messages).
#[test]
fn s6_1_fragmented_compressed_messages() {
    let msg = text(20_000);
    let z = deflate(msg.as_bytes());
    for fragment in [1, 2, 7, 64, 256, 1000, 4096, 65536] {
        let mut c = conn();
        c.handle_read(t(1), &wire(OpCode::Text, &z, fragment));
        assert_eq!(
            events(&mut c),
            vec![Event::Text(msg.clone().into())],
            "fragment {fragment}"
        );
    }
}

/// Uncompressed and compressed messages interleave (section 6: the bit is
/// per message), and a ping between two compressed fragments is answered.
#[test]
fn s6_compressed_and_plain_messages_interleave() {
    let mut c = conn();
    let z = deflate(b"compressed one");
    let mut bytes = common::masked(true, OpCode::Text, b"plain", MASK).to_vec();
    let frag = wire(OpCode::Text, &z, 4);
    let first = common::masked(false, OpCode::Text, &z[..4], MASK);
    let mut first = first.to_vec();
    frame::set_rsv1(&mut first);
    bytes.extend_from_slice(&first);
    bytes.extend_from_slice(&common::masked(true, OpCode::Ping, b"p", MASK));
    bytes.extend_from_slice(&common::masked(true, OpCode::Continuation, &z[4..], MASK));
    bytes.extend_from_slice(&frag);
    c.handle_read(t(1), &bytes);
    assert_eq!(
        events(&mut c),
        vec![
            Event::Text("plain".into()),
            Event::Text("compressed one".into()),
            Event::Text("compressed one".into()),
        ]
    );
    let out = written(&mut c);
    assert_eq!(out[0].opcode, OpCode::Pong);
}

/// Section 7.2.3.4: a message ending with a final (BFINAL) block.
#[test]
fn s7_2_3_4_bfinal_block_message() {
    let mut c = conn();
    c.handle_read(
        t(1),
        &wire(
            OpCode::Text,
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            99,
        ),
    );
    assert_eq!(events(&mut c), vec![Event::Text("Hello".into())]);
}

/// Section 7.2.3.3: stored (uncompressed) deflate blocks.
#[test]
fn s7_2_3_3_stored_block_message() {
    let mut c = conn();
    let z = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    c.handle_read(t(1), &wire(OpCode::Text, &z, 3));
    assert_eq!(events(&mut c), vec![Event::Text("Hello".into())]);
}

// ----- Section 6.1: RSV1 where it may not be (1002)

#[test]
fn s6_1_rsv1_on_a_continuation_frame_is_1002() {
    let mut c = conn();
    let z = deflate(b"hello hello hello");
    let mut bytes = wire(OpCode::Text, &z[..3], 99);
    bytes[0] &= 0x7f; // not FIN
    let mut cont = common::masked(true, OpCode::Continuation, &z[3..], MASK).to_vec();
    frame::set_rsv1(&mut cont);
    bytes.extend_from_slice(&cont);
    c.handle_read(t(1), &bytes);
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::Frame(
            FrameError::CompressedContinuation
        ))]
    );
    assert_eq!(failed_with(&mut c), 1002);
}

#[test]
fn s6_1_rsv1_on_control_frames_is_1002() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let mut c = conn();
        let mut f = common::masked(true, op, b"", MASK).to_vec();
        frame::set_rsv1(&mut f);
        c.handle_read(t(1), &f);
        assert_eq!(
            events(&mut c),
            vec![Event::Closed(CloseCause::Frame(
                FrameError::CompressedControlFrame
            ))],
            "{op:?}"
        );
        assert_eq!(failed_with(&mut c), 1002);
    }
}

/// Without the extension negotiated RSV1 stays reserved (RFC 6455 5.2).
#[test]
fn rsv1_without_negotiation_is_1002() {
    let mut c = Connection::new(t(0), ConnectionConfig::default());
    c.handle_read(t(1), &wire(OpCode::Text, &deflate(b"x"), 99));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::Frame(FrameError::ReservedBits(
            4
        )))]
    );
    assert_eq!(failed_with(&mut c), 1002);
}

/// RSV2 and RSV3 stay reserved with permessage-deflate (it defines RSV1).
#[test]
fn rsv2_rsv3_with_negotiation_are_1002() {
    for bits in [0x20u8, 0x10, 0x60] {
        let mut c = conn();
        let mut f = common::masked(true, OpCode::Text, b"x", MASK).to_vec();
        f[0] |= bits;
        c.handle_read(t(1), &f);
        assert_eq!(failed_with(&mut c), 1002, "{bits:#x}");
    }
}

// ----- Section 7.2.2: bad compressed data

/// Data that is not deflate is invalid payload data (1007).
#[test]
fn s7_2_2_invalid_deflate_data_is_1007() {
    for bad in [&[0xff, 0xff, 0xff][..], &[0x07, 0x00, 0x00], &[0xfe; 40]] {
        let mut c = conn();
        c.handle_read(t(1), &wire(OpCode::Binary, bad, 99));
        assert_eq!(
            events(&mut c),
            vec![Event::Closed(CloseCause::Inflate(InflateError::Invalid))],
            "{bad:?}"
        );
        assert_eq!(failed_with(&mut c), 1007);
    }
}

/// Compressed text that inflates to invalid UTF-8 is 1007 (RFC 6455 8.1).
#[test]
fn compressed_invalid_utf8_is_1007() {
    let mut c = conn();
    c.handle_read(t(1), &wire(OpCode::Text, &deflate(b"ok \xff\xfe bad"), 99));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::Message(
            MessageError::InvalidUtf8
        ))]
    );
    assert_eq!(failed_with(&mut c), 1007);
}

/// A decompression bomb: 64 MiB of zeros in about 64 KiB of deflate gets
/// 1009 once the output passes `max_message_size`; exactly the limit
/// passes, one byte more does not.
#[test]
fn decompression_bomb_is_1009() {
    let zeros = vec![0u8; 64 << 20];
    let z = deflate(&zeros);
    assert!(z.len() < MAX, "the bomb itself is within the frame limit");
    let mut c = conn();
    c.handle_read(t(1), &wire(OpCode::Binary, &z, 60_000));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::Inflate(InflateError::TooLarge {
            max: MAX
        }))]
    );
    assert_eq!(failed_with(&mut c), 1009);

    let mut c = conn();
    c.handle_read(t(1), &wire(OpCode::Binary, &deflate(&zeros[..MAX]), 999));
    assert!(matches!(&events(&mut c)[..], [Event::Binary(b)] if b.len() == MAX));
    let mut c = conn();
    c.handle_read(
        t(1),
        &wire(OpCode::Binary, &deflate(&zeros[..MAX + 1]), 999),
    );
    assert_eq!(failed_with(&mut c), 1009);
}

/// Section 7.1.1.2: we told the client `client_no_context_takeover`. A
/// client that keeps its window anyway sends a second message that
/// refers back into the first; inflated alone it is invalid (1007).
#[test]
fn s7_1_1_2_client_that_keeps_context_is_failed() {
    let mut z = Compress::new(Compression::new(6), false);
    let msg = text(3000);
    let first = client_deflate(&mut z, msg.as_bytes());
    let second = client_deflate(&mut z, msg.as_bytes());
    assert!(second.len() < first.len() / 4, "the second one refers back");
    let mut c = conn();
    let mut bytes = wire(OpCode::Text, &first, 999);
    bytes.extend_from_slice(&wire(OpCode::Text, &second, 999));
    c.handle_read(t(1), &bytes);
    let ev = events(&mut c);
    assert_eq!(ev[0], Event::Text(msg.clone().into()));
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(ev[1], Event::Closed(_)), "{ev:?}");
    assert_eq!(failed_with(&mut c), 1007);
}

/// The compressed size counts against the frame limit too (RFC 6455:
/// a frame over `max_message_size` is 1009 before it is read).
#[test]
fn compressed_frame_over_the_limit_is_1009() {
    let mut c = conn();
    let noise: Vec<u8> = (0..MAX + 10)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    c.handle_read(t(1), &wire(OpCode::Binary, &noise, usize::MAX));
    assert_eq!(failed_with(&mut c), 1009);
}

// ----- Section 5 and 7.1: negotiation in the opening handshake

fn upgrade(extensions: &[&str], compression: bool) -> handshake::Accepted {
    let mut req = String::from(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for e in extensions {
        req.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    req.push_str("\r\n");
    let head = handshake::parse_request(req.as_bytes(), 8192)
        .unwrap()
        .unwrap();
    let config = HandshakeConfig {
        compression,
        ..HandshakeConfig::default()
    };
    handshake::accept(&head, &config).unwrap()
}

fn extension_header(a: &handshake::Accepted) -> Option<String> {
    let text = String::from_utf8(a.response.clone()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_owned)
}

/// Sections 7.1.1.1 and 7.1.1.2: with or without the context takeover
/// parameters in the offer, the answer has both.
#[test]
fn s7_1_1_offers_with_and_without_context_takeover_get_both() {
    for offer in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=12",
    ] {
        let a = upgrade(&[offer], true);
        assert!(a.compression, "{offer}");
        assert_eq!(
            extension_header(&a).as_deref(),
            Some(negotiate::RESPONSE),
            "{offer}"
        );
    }
}

/// Section 7.1.2.1: a `server_max_window_bits` of 15 is answered; below
/// it is declined (our deflater keeps a 32 KiB window), and the next
/// offer of the list is taken.
#[test]
fn s7_1_2_1_server_window_bits() {
    let a = upgrade(&["permessage-deflate; server_max_window_bits=15"], true);
    assert_eq!(
        extension_header(&a).as_deref(),
        Some(negotiate::RESPONSE_WINDOW_15)
    );
    let a = upgrade(&["permessage-deflate; server_max_window_bits=9"], true);
    assert!(!a.compression);
    assert_eq!(extension_header(&a), None);
    let a = upgrade(
        &[
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate",
        ],
        true,
    );
    assert_eq!(extension_header(&a).as_deref(), Some(negotiate::RESPONSE));
}

/// Section 7: bad offers are declined; the upgrade still succeeds
/// without the extension.
#[test]
fn s7_bad_offers_are_declined_not_refused() {
    for offer in [
        "permessage-deflate; unknown_param",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover=true",
    ] {
        let a = upgrade(&[offer], true);
        assert!(!a.compression, "{offer}");
        assert_eq!(extension_header(&a), None, "{offer}");
    }
}

/// Off by default: an offer gets no extension.
#[test]
fn compression_off_declines_every_offer() {
    let a = upgrade(&["permessage-deflate"], false);
    assert!(!a.compression);
    assert_eq!(extension_header(&a), None);
    let a = upgrade(&[], true);
    assert!(!a.compression);
}
