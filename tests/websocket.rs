//! Integration tests of the `wavecast` binary over real sockets: RFC 6455
//! behaviour of `/echo` and `/ws` as a standard client (tokio-tungstenite)
//! and a raw client (hand-made frames) see it, heartbeats, the connection
//! limit, graceful shutdown, bad handshakes and garbage input.
//!
//! Every test starts its own server on port 0, so they run in parallel.
//! Waits are liveness bounds (something must happen before a generous
//! deadline), never timing measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test websocket`.
//!
//! Long (about eighty short tests) because it is one checklist of the
//! server's WebSocket behaviour over real sockets, sharing one set of
//! helpers; each test stands alone.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use wavecast_core::frame::OpCode;
use wavecast_tests::{
    close_code, expect_close, http_exchange, next_message, ws_connect, RawClient, Recv, Request,
    Server,
};

/// Liveness bound for anything the server should do "at once".
const T: Duration = Duration::from_secs(10);

/// The default `--max-message-size`: 64 KiB.
const LIMIT: usize = 64 * 1024;

// RFC 6455 7.4.1 status codes the tests expect.
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

/// A deterministic byte generator (xorshift64*) for garbage input; fixed
/// seeds keep a failure reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

/// Reads one whole data message from the raw client (assembling
/// continuation frames, in case the server fragments its own messages, which
/// RFC 6455 5.4 allows); pings are skipped, pongs are an error.
fn recv_message(c: &mut RawClient) -> (OpCode, Vec<u8>) {
    let first = c.expect_frame(T);
    assert!(
        matches!(first.opcode, OpCode::Text | OpCode::Binary),
        "expected a data frame, got {:?} {:?}",
        first.opcode,
        first.payload
    );
    let mut data = first.payload.to_vec();
    let mut fin = first.fin;
    while !fin {
        let f = c.expect_frame(T);
        assert_eq!(
            f.opcode,
            OpCode::Continuation,
            "a fragmented message must continue with continuation frames"
        );
        data.extend_from_slice(&f.payload);
        fin = f.fin;
    }
    (first.opcode, data)
}

/// Sends `frames` (fin, opcode, payload) and asserts the server fails the
/// connection with `code` and then closes TCP.
fn assert_closed_with(server: &Server, frames: &[(bool, OpCode, &[u8])], code: u16, what: &str) {
    let mut c = RawClient::connect(server.addr(), "/echo");
    for (fin, op, payload) in frames {
        c.send_frame(*fin, *op, payload).expect("send frame");
    }
    assert_eq!(c.expect_close(T), Some(code), "{what}: close code");
    c.expect_tcp_close(T);
}

/// Sends raw bytes and asserts the server fails the connection with `code`.
fn assert_raw_closed_with(server: &Server, bytes: &[u8], code: u16, what: &str) {
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_raw(bytes).expect("send");
    assert_eq!(c.expect_close(T), Some(code), "{what}: close code");
    c.expect_tcp_close(T);
}

/// Asserts `/healthz` answers 200 (the server is alive and serving).
fn assert_healthy(server: &Server) {
    let req = Request::get(server.addr(), "/healthz").to_bytes();
    let resp = http_exchange(server.addr(), &req, T).expect("GET /healthz");
    assert_eq!(resp.status, 200, "/healthz: {resp:?}");
}

// ---------------------------------------------------------------------------
// Echo with the standard client
// ---------------------------------------------------------------------------

#[tokio::test]
async fn echo_text_and_binary_up_to_the_limit() {
    let server = Server::echo(&[]);
    let mut ws = ws_connect(&server.url("/echo")).await;
    // "é" is 2 bytes: LIMIT/2 of them are exactly LIMIT bytes of UTF-8.
    let texts = [String::new(), "a".to_owned(), "é".repeat(LIMIT / 2)];
    for text in texts {
        assert!(text.len() <= LIMIT);
        ws.send(Message::text(text.clone()))
            .await
            .expect("send text");
        let got = next_message(&mut ws, T).await;
        assert_eq!(
            got,
            Some(Message::text(text.clone())),
            "text of {} bytes",
            text.len()
        );
    }
    for len in [0, 1, LIMIT] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        ws.send(Message::binary(data.clone()))
            .await
            .expect("send binary");
        let got = next_message(&mut ws, T).await;
        assert_eq!(got, Some(Message::binary(data)), "binary of {len} bytes");
    }
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn one_byte_over_the_limit_is_closed_with_1009() {
    let server = Server::echo(&[]);
    let over = LIMIT + 1;
    for msg in [
        Message::text("x".repeat(over)),
        Message::binary(vec![0x55; over]),
    ] {
        let mut ws = ws_connect(&server.url("/echo")).await;
        // The server may fail the connection while the payload is still
        // arriving; a failed send does not matter, the close frame does.
        let _ = ws.send(msg).await;
        assert_eq!(expect_close(&mut ws, T).await, Some(MESSAGE_TOO_BIG));
    }
    assert_healthy(&server);
}

#[tokio::test]
async fn max_message_size_flag_sets_the_limit() {
    let server = Server::echo(&["--max-message-size", "1000"]);
    let mut ws = ws_connect(&server.url("/echo")).await;
    ws.send(Message::binary(vec![1; 1000])).await.expect("send");
    assert_eq!(
        next_message(&mut ws, T).await,
        Some(Message::binary(vec![1; 1000]))
    );
    let _ = ws.send(Message::binary(vec![1; 1001])).await;
    assert_eq!(expect_close(&mut ws, T).await, Some(MESSAGE_TOO_BIG));
}

/// The client shrinks its receive buffer and sends 8 MiB without reading,
/// so the server's writes of the echoes fill its send buffer and must wait
/// for writability while it goes on reading; once the client reads, every
/// echo arrives whole and in order.
#[test]
fn echoes_held_back_by_a_full_send_buffer_all_arrive_in_order() {
    use std::os::fd::AsRawFd;
    const SIZE: usize = 256 * 1024;
    const COUNT: u8 = 32;
    let server = Server::echo(&[
        "--max-message-size",
        "262144",
        "--max-queued-bytes",
        "67108864",
    ]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    let small: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket and a c_int option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            c.stream().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF)");
    c.stream()
        .set_write_timeout(Some(T))
        .expect("write timeout");
    for i in 0..COUNT {
        c.send_frame(true, OpCode::Binary, &vec![i; SIZE])
            .unwrap_or_else(|e| panic!("message {i}: the server stopped reading: {e}"));
    }
    for i in 0..COUNT {
        let (op, data) = recv_message(&mut c);
        assert_eq!(op, OpCode::Binary);
        assert_eq!(data.len(), SIZE, "echo {i} whole");
        assert!(data.iter().all(|&x| x == i), "echo {i} in order");
    }
}

#[tokio::test]
async fn ws_endpoint_accepts_and_closes_cleanly() {
    let server = Server::echo(&[]);
    let mut ws = ws_connect(&server.url("/ws")).await;
    ws.close(Some(TCloseFrame {
        code: TCloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .expect("send close");
    // RFC 6455 5.5.1: the server answers a close with a close.
    match next_message(&mut ws, T).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, TCloseCode::Normal),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    assert_eq!(
        next_message(&mut ws, T).await,
        None,
        "stream ends after the close handshake"
    );
}

// ---------------------------------------------------------------------------
// Fragmentation (RFC 6455 5.4)
// ---------------------------------------------------------------------------

#[test]
fn fragmented_text_is_echoed_as_one_message() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    // "€" (E2 82 AC) is split across fragments: validation must carry the
    // partial code point over (RFC 6455 5.6 applies to the whole message).
    let parts: [&[u8]; 4] = [b"Hello, ", b"w\xE2", b"\x82", b"\xACrld"];
    c.send_frame(false, OpCode::Text, parts[0]).unwrap();
    c.send_frame(false, OpCode::Continuation, parts[1]).unwrap();
    c.send_frame(false, OpCode::Continuation, parts[2]).unwrap();
    c.send_frame(true, OpCode::Continuation, parts[3]).unwrap();
    let (op, data) = recv_message(&mut c);
    assert_eq!(op, OpCode::Text);
    assert_eq!(data, "Hello, w€rld".as_bytes());
}

#[test]
fn fragmented_binary_is_echoed_as_one_message() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    // Empty fragments are legal (RFC 6455 5.4 puts no lower bound on them).
    c.send_frame(false, OpCode::Binary, &[]).unwrap();
    c.send_frame(false, OpCode::Continuation, &[1, 2, 3])
        .unwrap();
    c.send_frame(false, OpCode::Continuation, &[]).unwrap();
    c.send_frame(true, OpCode::Continuation, &[4]).unwrap();
    assert_eq!(recv_message(&mut c), (OpCode::Binary, vec![1, 2, 3, 4]));

    // Exactly the limit in four fragments is one message of LIMIT bytes.
    let quarter: Vec<u8> = (0..LIMIT / 4).map(|i| i as u8).collect();
    c.send_frame(false, OpCode::Binary, &quarter).unwrap();
    c.send_frame(false, OpCode::Continuation, &quarter).unwrap();
    c.send_frame(false, OpCode::Continuation, &quarter).unwrap();
    c.send_frame(true, OpCode::Continuation, &quarter).unwrap();
    let (op, data) = recv_message(&mut c);
    assert_eq!(op, OpCode::Binary);
    assert_eq!(data, quarter.repeat(4));
}

#[test]
fn fragmented_message_over_the_limit_is_closed_with_1009() {
    let server = Server::echo(&[]);
    let half = vec![7u8; LIMIT / 2];
    assert_closed_with(
        &server,
        &[
            (false, OpCode::Binary, &half),
            (false, OpCode::Continuation, &half),
            (true, OpCode::Continuation, &[7]),
        ],
        MESSAGE_TOO_BIG,
        "LIMIT + 1 bytes in fragments",
    );
}

#[test]
fn ping_between_fragments_is_answered() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(false, OpCode::Text, b"frag").unwrap();
    c.send_frame(true, OpCode::Ping, b"between").unwrap();
    // The pong comes before the message is complete (RFC 6455 5.4: control
    // frames may be injected in the middle of a fragmented message, and
    // 5.5.2: a ping is answered as soon as practical).
    let pong = c.expect_frame(T);
    assert_eq!(pong.opcode, OpCode::Pong);
    assert_eq!(
        &pong.payload[..],
        b"between",
        "pong carries the ping's payload (5.5.3)"
    );
    c.send_frame(true, OpCode::Continuation, b"ments").unwrap();
    assert_eq!(recv_message(&mut c), (OpCode::Text, b"fragments".to_vec()));
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/ws");
    for payload in [&b""[..], b"x", &[0xAB; 125]] {
        c.send_frame(true, OpCode::Ping, payload).unwrap();
        let pong = c.expect_frame(T);
        assert_eq!(pong.opcode, OpCode::Pong);
        assert_eq!(&pong.payload[..], payload);
    }
    // An unsolicited pong needs no answer (5.5.3); the connection stays.
    c.send_frame(true, OpCode::Pong, b"hi").unwrap();
    c.send_frame(true, OpCode::Ping, b"still").unwrap();
    let pong = c.expect_frame(T);
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (OpCode::Pong, &b"still"[..])
    );
}

#[test]
fn fragmentation_rule_violations_are_protocol_errors() {
    let server = Server::echo(&[]);
    assert_closed_with(
        &server,
        &[(true, OpCode::Continuation, b"orphan")],
        PROTOCOL_ERROR,
        "continuation without a started message",
    );
    assert_closed_with(
        &server,
        &[(false, OpCode::Text, b"a"), (true, OpCode::Text, b"b")],
        PROTOCOL_ERROR,
        "new data frame inside a fragmented message",
    );
    assert_closed_with(
        &server,
        &[(false, OpCode::Ping, b"p")],
        PROTOCOL_ERROR,
        "fragmented control frame (5.5)",
    );
    assert_closed_with(
        &server,
        &[(true, OpCode::Ping, &[0; 126])],
        PROTOCOL_ERROR,
        "control frame payload over 125 bytes (5.5)",
    );
}

// ---------------------------------------------------------------------------
// UTF-8 (RFC 6455 5.6, 8.1)
// ---------------------------------------------------------------------------

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let server = Server::echo(&[]);
    let cases: [&[u8]; 5] = [
        b"\xFF",               // never valid in UTF-8
        b"ok\xC0\xAF",         // overlong encoding of '/'
        b"\xED\xA0\x80",       // UTF-16 surrogate
        b"\xF4\x90\x80\x80",   // above U+10FFFF
        b"truncated \xE2\x82", // message ends inside a code point
    ];
    for bad in cases {
        assert_closed_with(
            &server,
            &[(true, OpCode::Text, bad)],
            INVALID_PAYLOAD,
            &format!("{bad:?}"),
        );
    }
    assert_closed_with(
        &server,
        &[
            (false, OpCode::Text, b"abc\xE2\x82"),
            (true, OpCode::Continuation, b""),
        ],
        INVALID_PAYLOAD,
        "fragmented message ending inside a code point",
    );
    assert_healthy(&server);
}

#[test]
fn invalid_utf8_fails_fast_before_the_final_fragment() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    // A valid prefix that ends inside a code point...
    c.send_frame(false, OpCode::Text, b"abc\xC3").unwrap();
    // ...then a byte that cannot continue it: the prefix is now invalid.
    c.send_frame(false, OpCode::Continuation, b"\x28more")
        .unwrap();
    // The final fragment is never sent: the close must come without it.
    assert_eq!(c.expect_close(T), Some(INVALID_PAYLOAD));
    c.expect_tcp_close(T);

    // Same with a prefix invalid from the first fragment on.
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(false, OpCode::Text, b"\xF8 never valid")
        .unwrap();
    assert_eq!(c.expect_close(T), Some(INVALID_PAYLOAD));
}

// ---------------------------------------------------------------------------
// Reserved bits, opcodes, masking (RFC 6455 5.2, 5.1)
// ---------------------------------------------------------------------------

#[test]
fn reserved_bits_without_extension_are_protocol_errors() {
    let server = Server::echo(&[]);
    for (bit, name) in [(0x40u8, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")] {
        let mut c = RawClient::connect(server.addr(), "/echo");
        let mut frame = c.masked_frame(true, OpCode::Text, b"hello");
        frame[0] |= bit;
        c.send_raw(&frame).unwrap();
        assert_eq!(c.expect_close(T), Some(PROTOCOL_ERROR), "{name} set");
        c.expect_tcp_close(T);
    }
    // RSV bits on a control frame too.
    let mut c = RawClient::connect(server.addr(), "/echo");
    let mut frame = c.masked_frame(true, OpCode::Ping, b"p");
    frame[0] |= 0x40;
    c.send_raw(&frame).unwrap();
    assert_eq!(c.expect_close(T), Some(PROTOCOL_ERROR), "RSV1 on a ping");
}

#[test]
fn reserved_opcodes_are_protocol_errors() {
    let server = Server::echo(&[]);
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let mut c = RawClient::connect(server.addr(), "/echo");
        let mut frame = c.masked_frame(true, OpCode::Binary, b"x");
        frame[0] = (frame[0] & 0xF0) | opcode;
        c.send_raw(&frame).unwrap();
        assert_eq!(
            c.expect_close(T),
            Some(PROTOCOL_ERROR),
            "opcode {opcode:#x}"
        );
        c.expect_tcp_close(T);
    }
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let server = Server::echo(&[]);
    // RFC 6455 5.1: the server MUST close on an unmasked client frame.
    let mut unmasked = bytes::BytesMut::new();
    wavecast_core::frame::encode_frame(true, OpCode::Text, b"hello", &mut unmasked);
    assert_raw_closed_with(&server, &unmasked, PROTOCOL_ERROR, "unmasked text frame");
}

#[test]
fn non_minimal_length_is_a_protocol_error() {
    let server = Server::echo(&[]);
    // 5 bytes announced with the 16-bit length form (5.2: the minimal
    // number of bytes MUST be used).
    let mut f = vec![0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4];
    f.extend_from_slice(&[9; 5]);
    assert_raw_closed_with(&server, &f, PROTOCOL_ERROR, "non-minimal 16-bit length");
    // 64-bit length with the most significant bit set.
    let f = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_raw(&f).unwrap();
    // 5.2: "the most significant bit MUST be 0".
    assert_eq!(
        c.expect_close(T),
        Some(PROTOCOL_ERROR),
        "64-bit length with the top bit set"
    );
}

// ---------------------------------------------------------------------------
// Close handshake (RFC 6455 5.5.1, 7)
// ---------------------------------------------------------------------------

#[test]
fn close_1000_is_echoed_and_the_server_closes_tcp() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_close(NORMAL, b"bye").unwrap();
    assert_eq!(c.expect_close(T), Some(NORMAL));
    // 7.1.1: the server should close the TCP connection first.
    c.expect_tcp_close(T);
}

#[test]
fn close_with_other_valid_codes_is_answered() {
    let server = Server::echo(&[]);
    for code in [GOING_AWAY, 1003, 1011, 3000, 4000, 4999] {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_close(code, b"").unwrap();
        let got = c.expect_close(T);
        // 5.5.1: the answer typically echoes the code; it must not call a
        // valid close a protocol error.
        assert!(
            got == Some(code) || got == Some(NORMAL),
            "close {code}: answered {got:?}"
        );
        c.expect_tcp_close(T);
    }
    // An empty close payload is valid too; the answer must not carry 1005,
    // which is never sent on the wire (7.4.1).
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(true, OpCode::Close, b"").unwrap();
    let got = c.expect_close(T);
    assert!(
        got.is_none() || got == Some(NORMAL),
        "empty close answered with {got:?}"
    );
    c.expect_tcp_close(T);
}

#[test]
fn invalid_close_codes_are_protocol_errors() {
    let server = Server::echo(&[]);
    // 7.4: below 1000 unused; 1004 reserved; 1005, 1006 and 1015 must not
    // be sent; 1016-2999 reserved; 5000 and up outside every range.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let mut c = RawClient::connect(server.addr(), "/echo");
        c.send_close(code, b"").unwrap();
        assert_eq!(c.expect_close(T), Some(PROTOCOL_ERROR), "close code {code}");
        c.expect_tcp_close(T);
    }
    // A 1-byte close payload (5.5.1: a body starts with a 2-byte code).
    assert_closed_with(
        &server,
        &[(true, OpCode::Close, &[3])],
        PROTOCOL_ERROR,
        "1-byte close payload",
    );
}

#[test]
fn close_reason_with_invalid_utf8_is_1007() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_close(NORMAL, b"bad \xFF reason").unwrap();
    assert_eq!(c.expect_close(T), Some(INVALID_PAYLOAD));
}

#[test]
fn no_echo_after_the_close_handshake() {
    let server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    // Close and a text frame in one write: 5.5.1 says the server sends no
    // data after its close frame, and the text comes after the close.
    let mut bytes = c.masked_frame(true, OpCode::Close, &NORMAL.to_be_bytes());
    bytes.extend(c.masked_frame(true, OpCode::Text, b"too late"));
    c.send_raw(&bytes).unwrap();
    assert_eq!(c.expect_close(T), Some(NORMAL));
    c.expect_tcp_close(T);
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

#[test]
fn silent_client_is_closed_after_heartbeat_expiry() {
    let server = Server::echo(&[
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "200ms",
    ]);
    let mut c = RawClient::connect(server.addr(), "/ws");
    let start = Instant::now();
    // Liveness bound: expiry is due at 400 ms; 3 s leaves room for a loaded
    // machine without measuring anything.
    let deadline = start + Duration::from_secs(3);
    let mut pings = 0;
    loop {
        match c.recv(deadline.saturating_duration_since(Instant::now())) {
            // Read but never answered.
            Recv::Frame(f) if f.opcode == OpCode::Ping => pings += 1,
            Recv::Frame(f) if f.opcode == OpCode::Close => {
                let code = close_code(&f.payload);
                assert!(
                    code.is_none_or(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)),
                    "heartbeat close with a code not valid on the wire: {code:?}"
                );
                break;
            }
            Recv::Eof | Recv::Io(_) => break,
            Recv::Frame(f) => panic!("unexpected {:?} frame on /ws", f.opcode),
            Recv::TimedOut => panic!("a client that never answered pings is still open after 3 s"),
            Recv::BadFrame(e) => panic!("server sent a bad frame: {e}"),
        }
    }
    assert!(
        pings >= 1,
        "the server must ping before it expires a connection"
    );
    assert_healthy(&server);
}

#[tokio::test]
async fn client_answering_pings_stays_open() {
    let server = Server::echo(&[
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "200ms",
    ]);
    let mut ws = ws_connect(&server.url("/echo")).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    // tokio-tungstenite queues a pong for every ping it reads and sends it
    // on the next read or write; it sends nothing else.
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("connection should stay open, got {other:?}"),
        }
    }
    assert!(
        pings >= 2,
        "expected heartbeat pings over 1.5 s at 200 ms, got {pings}"
    );
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(
        next_message(&mut ws, T).await,
        Some(Message::text("still here"))
    );
}

// ---------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn max_connections_rejects_with_503_until_one_closes() {
    let server = Server::echo(&["--max-connections", "3"]);
    let url = server.url("/echo");
    let mut held = Vec::new();
    for i in 0..3 {
        let mut ws = ws_connect(&url).await;
        ws.send(Message::text(format!("#{i}"))).await.unwrap();
        assert_eq!(
            next_message(&mut ws, T).await,
            Some(Message::text(format!("#{i}")))
        );
        held.push(ws);
    }
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        Err(e) => panic!("4th connection: expected HTTP 503, got error {e}"),
        Ok(_) => panic!("4th connection accepted over --max-connections 3"),
    }
    // The raw client sees the same answer.
    let refused = RawClient::handshake(server.addr(), &Request::upgrade(server.addr(), "/ws"));
    assert_eq!(refused.map(|_| ()).map_err(|r| r.status), Err(503));

    // Close one with the close handshake; its slot comes back once the
    // server has finished it, so retry up to a liveness bound.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(T, first.next()).await {}
    let deadline = tokio::time::Instant::now() + T;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 503 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slot not released after a close"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reconnect failed: {e}"),
        }
    };
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(next_message(&mut ws, T).await, Some(Message::text("again")));
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

/// The close code a `/ws` (pub/sub) client gets at shutdown: the
/// protocol's "server shutdown, reconnect and recover" code (docs/PROTOCOL.md),
/// in place of the bare 1001 that `/echo` clients get.
const PUBSUB_SHUTDOWN: u16 = wavecast_core::protocol::close::SHUTDOWN.0;

/// Liveness bound for the server to install its signal handlers.
const HANDLER_WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sigterm_closes_every_client_and_exits_0() {
    let mut server = Server::echo(&["--workers", "2"]);
    let mut clients = Vec::new();
    for path in ["/ws", "/echo", "/ws", "/echo"] {
        clients.push((path, ws_connect(&server.url(path)).await));
    }
    let mut raw = RawClient::connect(server.addr(), "/echo");
    // Make sure the echo connections are fully up before the signal.
    for (_, ws) in clients.iter_mut().skip(1).step_by(2) {
        ws.send(Message::text("up")).await.unwrap();
        assert_eq!(next_message(ws, T).await, Some(Message::text("up")));
    }
    // See `signal_right_after_startup_is_graceful` for why this wait.
    server.wait_catches_signal(libc::SIGTERM, HANDLER_WAIT);
    server.signal(libc::SIGTERM);
    // RFC 6455 7.4.1: 1001 "going away", e.g. a server going down.
    assert_eq!(raw.expect_close(T), Some(GOING_AWAY), "raw /echo client");
    raw.send_close(GOING_AWAY, b"").unwrap();
    for (i, (path, ws)) in clients.iter_mut().enumerate() {
        let want = if *path == "/ws" {
            PUBSUB_SHUTDOWN
        } else {
            GOING_AWAY
        };
        assert_eq!(
            expect_close(ws, T).await,
            Some(want),
            "client {i} on {path}"
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn sigint_closes_with_1001_and_exits_0() {
    let mut server = Server::echo(&[]);
    let mut echo = RawClient::connect(server.addr(), "/echo");
    let mut pubsub = RawClient::connect(server.addr(), "/ws");
    server.wait_catches_signal(libc::SIGINT, HANDLER_WAIT);
    server.signal(libc::SIGINT);
    assert_eq!(echo.expect_close(T), Some(GOING_AWAY));
    echo.send_close(GOING_AWAY, b"").unwrap();
    assert_eq!(pubsub.expect_close(T), Some(PUBSUB_SHUTDOWN));
    pubsub.send_close(PUBSUB_SHUTDOWN, b"").unwrap();
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGINT");
    assert!(status.success(), "exit status after SIGINT: {status:?}");
}

#[test]
fn shutdown_does_not_wait_forever_for_a_silent_client() {
    // A client that never answers the server's close frame must not keep
    // the process alive: the exit comes within "a few seconds".
    let mut server = Server::echo(&[]);
    let mut c = RawClient::connect(server.addr(), "/echo");
    server.wait_catches_signal(libc::SIGTERM, HANDLER_WAIT);
    server.signal(libc::SIGTERM);
    assert_eq!(c.expect_close(T), Some(GOING_AWAY));
    let status = server
        .wait_exit(Duration::from_secs(8))
        .expect("server still running 8 s after SIGTERM with a silent client");
    assert!(status.success(), "exit status: {status:?}");
}

#[test]
fn signal_right_after_startup_is_graceful() {
    // The listening line tells scripts and tests that the server is up; a
    // SIGTERM sent as soon as it is read must get the graceful shutdown
    // (exit 0), not the default action of the signal. The window is narrow,
    // so try a few times.
    for attempt in 0..5 {
        let mut server = Server::start(&[]);
        server.signal(libc::SIGTERM);
        let status = server
            .wait_exit(Duration::from_secs(5))
            .expect("server still running 5 s after SIGTERM");
        assert!(
            status.success(),
            "attempt {attempt}: SIGTERM right after the listening line: {status:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Opening handshake (RFC 6455 4.2)
// ---------------------------------------------------------------------------

fn status_of(server: &Server, req: &Request) -> wavecast_tests::HttpResponse {
    http_exchange(server.addr(), &req.to_bytes(), T).expect("HTTP exchange")
}

#[test]
fn bad_handshakes_get_their_status() {
    let server = Server::echo(&[]);
    let addr = server.addr();
    let up = || Request::upgrade(addr, "/echo");

    // 4.2.2 / 4.4: a version we do not speak -> 426 naming the one we do.
    let resp = status_of(&server, &up().set("Sec-WebSocket-Version", "8"));
    assert_eq!(resp.status, 426);
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));
    let resp = status_of(&server, &up().remove("Sec-WebSocket-Version"));
    assert_eq!(resp.status, 426, "missing version");
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));

    // 4.2.1: key missing or not 16 bytes of base64 -> 400.
    assert_eq!(
        status_of(&server, &up().remove("Sec-WebSocket-Key")).status,
        400,
        "missing key"
    );
    assert_eq!(
        status_of(&server, &up().set("Sec-WebSocket-Key", "c2hvcnQ=")).status,
        400,
        "short key"
    );
    // 4.2.1: Host is required; Connection must contain Upgrade.
    assert_eq!(
        status_of(&server, &up().remove("Host")).status,
        400,
        "missing Host"
    );
    assert_eq!(
        status_of(&server, &up().set("Connection", "keep-alive")).status,
        400,
        "no Upgrade token"
    );

    // 4.2.1: the method must be GET.
    let resp = status_of(&server, &up().method("POST"));
    assert_eq!(resp.status, 405, "POST upgrade");

    // A head over the 8 KiB bound -> 431.
    let resp = status_of(&server, &up().set("X-Fill", &"a".repeat(9000)));
    assert_eq!(resp.status, 431, "9 KB head");
    // Over the bound before the head even ends.
    let mut endless = up().to_bytes();
    endless.truncate(endless.len() - 2);
    endless.extend(std::iter::repeat_n(b'b', 9000));
    let resp = http_exchange(addr, &endless, T).expect("HTTP exchange");
    assert_eq!(resp.status, 431, "unterminated head over 8 KiB");

    // Unknown paths -> 404, for upgrades and plain requests alike.
    assert_eq!(
        status_of(&server, &Request::upgrade(addr, "/nope")).status,
        404
    );
    assert_eq!(status_of(&server, &Request::get(addr, "/nope")).status, 404);

    // Bytes that are not HTTP at all -> 400.
    let resp = http_exchange(addr, b"\x16\x03\x01 not http\r\n\r\n", T).expect("HTTP exchange");
    assert_eq!(resp.status, 400, "garbage request line");

    // And a good one still works.
    assert!(RawClient::handshake(addr, &up()).is_ok());
}

#[test]
fn echo_is_off_by_default() {
    let server = Server::start(&[]);
    let resp = status_of(&server, &Request::upgrade(server.addr(), "/echo"));
    assert_eq!(resp.status, 404, "/echo without --echo");
    assert!(RawClient::handshake(server.addr(), &Request::upgrade(server.addr(), "/ws")).is_ok());
}

#[test]
fn origin_allow_list() {
    let server = Server::echo(&[
        "--allowed-origins",
        "http://good.example,https://other.example",
    ]);
    let addr = server.addr();
    let up = || Request::upgrade(addr, "/echo");
    assert_eq!(
        status_of(&server, &up().set("Origin", "http://evil.example")).status,
        403
    );
    assert_eq!(
        status_of(&server, &up().set("Origin", "http://good.example.evil")).status,
        403
    );
    assert!(RawClient::handshake(addr, &up().set("Origin", "http://good.example")).is_ok());
    assert!(RawClient::handshake(addr, &up().set("Origin", "https://other.example")).is_ok());
}

#[test]
fn healthz_answers_200() {
    let server = Server::start(&[]);
    let resp = status_of(&server, &Request::get(server.addr(), "/healthz"));
    assert_eq!(resp.status, 200);
    assert!(!resp.body.is_empty(), "a short body says it is healthy");
}

#[test]
fn sample_key_gets_the_rfc_accept_value() {
    let server = Server::echo(&[]);
    // RawClient::handshake asserts Sec-WebSocket-Accept against RFC 6455
    // section 1.3's worked example.
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(true, OpCode::Text, b"hi").unwrap();
    assert_eq!(recv_message(&mut c), (OpCode::Text, b"hi".to_vec()));
}

#[test]
fn frames_pipelined_behind_the_request_are_handled() {
    // A client may send its first frames in the same write as the request.
    let server = Server::echo(&[]);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let mut bytes = Request::upgrade(server.addr(), "/echo").to_bytes();
    let mut frame = bytes::BytesMut::new();
    wavecast_core::frame::encode_masked(true, OpCode::Text, b"early", [1, 2, 3, 4], &mut frame);
    bytes.extend_from_slice(&frame);
    stream.write_all(&bytes).unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + T;
    // The echo frame: 0x81, length 5, "early", after the 101 head.
    let want: &[u8] = b"\x81\x05early";
    while !all.windows(want.len()).any(|w| w == want) {
        assert!(
            Instant::now() < deadline,
            "no echo of the pipelined frame: {all:?}"
        );
        stream.set_read_timeout(Some(T)).unwrap();
        let mut chunk = [0u8; 1024];
        let n = std::io::Read::read(&mut stream, &mut chunk).unwrap();
        assert!(
            n > 0,
            "closed before the echo: {:?}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&chunk[..n]);
    }
    assert!(
        all.starts_with(b"HTTP/1.1 101 "),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
}

/// Reads from `stream` until `want` has arrived; returns everything read.
fn read_until(stream: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut all = Vec::new();
    let deadline = Instant::now() + T;
    stream.set_read_timeout(Some(T)).unwrap();
    while !all.windows(want.len()).any(|w| w == want) {
        assert!(
            Instant::now() < deadline,
            "never got {:?}: {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&all)
        );
        let mut chunk = [0u8; 1024];
        let n = std::io::Read::read(stream, &mut chunk).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&chunk[..n]);
    }
    all
}

/// A proxy that keeps its upstream connections open sends an upgrade on a
/// connection that already carried plain HTTP requests: it is upgraded
/// like one on a fresh connection, frames sent in the same write are not
/// lost, and a refused one gets the handshake's own answer.
#[test]
fn upgrade_on_a_keep_alive_connection_after_http_requests() {
    let server = Server::echo(&[]);
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    let health = Request::get(addr, "/healthz").set("Connection", "keep-alive");
    for _ in 0..2 {
        stream.write_all(&health.to_bytes()).unwrap();
        let resp = read_until(&mut stream, b"\r\n\r\nok\n");
        assert!(resp.starts_with(b"HTTP/1.1 200"), "{resp:?}");
    }
    let mut bytes = Request::upgrade(addr, "/echo").to_bytes();
    let mut frame = bytes::BytesMut::new();
    wavecast_core::frame::encode_masked(true, OpCode::Text, b"early", [1, 2, 3, 4], &mut frame);
    bytes.extend_from_slice(&frame);
    stream.write_all(&bytes).unwrap();
    let all = read_until(&mut stream, b"\x81\x05early");
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101 "), "{text:?}");
    assert!(
        text.contains(&format!(
            "sec-websocket-accept: {}",
            wavecast_tests::SAMPLE_ACCEPT.to_ascii_lowercase()
        )),
        "{text:?}"
    );

    // Refused: the handshake's status and headers, as on a fresh connection.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&health.to_bytes()).unwrap();
    read_until(&mut stream, b"\r\n\r\nok\n");
    let bad = Request::upgrade(addr, "/echo").set("Sec-WebSocket-Version", "8");
    stream.write_all(&bad.to_bytes()).unwrap();
    let resp = String::from_utf8_lossy(&read_until(&mut stream, b"\r\n\r\n")).to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 426"), "{resp:?}");
    assert!(resp.contains("sec-websocket-version: 13"), "{resp:?}");
}

// ---------------------------------------------------------------------------
// Garbage input never crashes the server
// ---------------------------------------------------------------------------

#[test]
fn garbage_bytes_never_crash_the_server() {
    let mut server = Server::echo(&["--workers", "2"]);
    for seed in 1..=16u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let len = 1 + (rng.next() % 4096) as usize;
        let garbage = rng.bytes(len);

        // Before any handshake: as a request head.
        let mut s = TcpStream::connect(server.addr()).unwrap();
        let _ = s.write_all(&garbage);
        drop(s);

        // Garbage request line followed by a complete head end.
        let mut with_end = garbage.clone();
        with_end.extend_from_slice(b"\r\n\r\n");
        let _ = http_exchange(server.addr(), &with_end, Duration::from_secs(3));

        // After a good handshake: as frames, then close the socket.
        let mut c = RawClient::connect(server.addr(), "/echo");
        let _ = c.send_raw(&garbage);
        // Whatever the server makes of it, it must not send a malformed
        // frame; read briefly, then hang up mid-whatever.
        match c.recv(Duration::from_millis(100)) {
            Recv::BadFrame(e) => panic!("seed {seed}: server sent a bad frame: {e}"),
            Recv::Frame(f) if f.opcode == OpCode::Close => {
                let _ = close_code(&f.payload);
            }
            _ => {}
        }
        drop(c);
        assert!(
            server.try_status().is_none(),
            "server exited after garbage seed {seed}"
        );
    }
    assert_healthy(&server);
    // And it still serves WebSockets.
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(true, OpCode::Binary, b"alive").unwrap();
    assert_eq!(recv_message(&mut c), (OpCode::Binary, b"alive".to_vec()));
    assert!(server.try_status().is_none(), "server exited");
}
