//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the test that
//! replays the committed seeds on stable (`core/tests/fuzz_seeds.rs`).
//!
//! Each takes arbitrary bytes, drives one part of the core with them, and
//! panics only if an invariant that must hold for *every* input breaks, so
//! a fuzzer finding is a real bug.

use std::time::Duration;

use bytes::BytesMut;

use crate::auth::{AuthConfig, TokenConfig, Verifier};
use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{self, FrameDecoder};
use crate::handshake::HandshakeConfig;
use crate::message::Assembler;
use crate::node::NodeConfig;
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

/// An HTTP request head as a Server-Sent Events request: read by
/// [`crate::sse::parse_request`] (a refusal must be a complete response
/// of its status), then, if it reads, opened on a node (open, so every
/// request that reads gets a stream or a refusal from the node, whose
/// first bytes are a status line). Each position list it reads encodes
/// back to an id that reads the same. The same head is also read as a
/// client's call over HTTP ([`crate::call`]) and, if it reads, admitted by
/// a node for an action on the query's text as a channel: an answer or a
/// refusal with an error status, never a panic.
pub fn sse(data: &[u8]) {
    use crate::protocol::sse::{encode_id, parse_id};
    use crate::sse::{parse_request, SseConfig};
    use crate::standalone::Standalone;

    let Ok(Some(head)) = crate::handshake::parse_request(data, 8192) else {
        return;
    };
    let config = SseConfig {
        max_channels: 4,
        allowed_origins: Some(vec!["https://app.example.com".to_owned()]),
        ..SseConfig::default()
    };
    call(&head, &config);
    let request = match parse_request(&head, &config) {
        Ok(r) => r,
        Err(e) => {
            let response = e.response();
            assert!(response.starts_with(b"HTTP/1.1 "));
            assert_eq!(response.get(9..12), Some(e.status().to_string().as_bytes()));
            assert!(response.windows(4).any(|w| w == b"\r\n\r\n"));
            return;
        }
    };
    assert_eq!(request.channels.len(), request.positions.len());
    assert!(!request.channels.is_empty() && request.channels.len() <= 4);
    let id = encode_id(&request.positions);
    assert_eq!(
        parse_id(&id, request.positions.len()),
        Ok(request.positions.clone())
    );
    if let Some(text) = head.query.as_deref() {
        // Any text as an id: what reads, writes back to what reads the same.
        if let Ok(positions) = parse_id(text, text.split(',').count()) {
            assert_eq!(
                parse_id(&encode_id(&positions), positions.len()),
                Ok(positions)
            );
        }
    }
    let mut core = Standalone::new(NodeConfig::default(), 1);
    let now = Timestamp::ZERO;
    let conn = core
        .node
        .handle_sse(now, request, Duration::from_millis(1000));
    core.pump(now);
    core.node.handle_read(now, conn, data);
    core.pump(now);
    while core.node.poll_transmit().is_some() {}
    let out: Vec<u8> = core
        .node
        .queue(conn)
        .map(|q| q.slices().flat_map(|s| s.to_vec()).collect())
        .unwrap_or_default();
    assert!(out.starts_with(b"HTTP/1.1 "), "a status line first");
}

/// A request head as a call ([`sse`]'s second half).
fn call(head: &crate::handshake::RequestHead, config: &crate::sse::SseConfig) {
    use crate::admission::Action;
    use crate::call::{parse_call, preflight};
    use crate::standalone::Standalone;

    if let Ok(answer) = preflight(head, config) {
        assert!(answer.starts_with(b"HTTP/1.1 204 "));
    }
    let call = match parse_call(head, config) {
        Ok(call) => call,
        Err(e) => return assert!((400..500).contains(&e.status()), "{e:?}"),
    };
    let mut core = Standalone::new(NodeConfig::default(), 1);
    let channel = head.query.as_deref().unwrap_or("news");
    let action = match call.kind {
        crate::call::CallKind::Publish => Action::Publish,
        crate::call::CallKind::History => Action::History { limit: Some(10) },
        crate::call::CallKind::Presence => Action::Presence,
    };
    match core
        .node
        .admit_call(Timestamp::ZERO, call.token.as_deref(), channel, action)
    {
        Ok(admitted) => assert!(admitted.caller.client.is_empty()),
        Err(e) => assert!((400..600).contains(&e.status()), "{e:?}"),
    }
}

/// A client byte stream, driven twice: into a bare connection
/// ([`connection_alone`]) and into a pub/sub connection of a node with
/// authentication on ([`node_with_auth`]), so that the fuzzer's frames
/// reach `connect`, `refresh` and `subscribe` with tokens. Byte 0 seeds the
/// chunk sizes (low 5 bits), whether the bare connection negotiated
/// permessage-deflate (bit 5) and, for the node, the encoding (bit 6:
/// MessagePack), whether anonymous connections are allowed (bit 7), and
/// whether the connection negotiated compression with every publication
/// compressed (an odd number of bits set), so that the client side checks
/// the node's compressed frames.
pub fn connection(data: &[u8]) {
    connection_alone(data);
    node_with_auth(data);
}

/// Feeds `data` to a connection as a client byte stream, in chunks whose
/// sizes come from the data, with timeouts in between; with bit 5 of the
/// first byte set, the connection has permessage-deflate negotiated (so
/// RSV1 frames reach the shard's one inflater, shared over the run as in a
/// node). Whatever happens,
/// the connection must end up either open or closed with exactly one
/// `Closed` event, never hold more input than one frame plus one message,
/// and release everything once closed.
fn connection_alone(data: &[u8]) {
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
    let mut codec = crate::deflate::Codec::new(1);
    if seed & 0x20 != 0 {
        conn.enable_deflate();
    }
    let mut closed = 0;
    let chunk = usize::from(seed % 32) + 1;
    for piece in data.chunks(chunk) {
        now = now + Duration::from_millis(u64::from(piece[0]));
        conn.handle_read_with(now, piece, Some(&mut codec));
        conn.handle_timeout(now);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Closed(_) => closed += 1,
                Event::Text(t) => {
                    assert!(std::str::from_utf8(&t).is_ok(), "text event not UTF-8");
                    assert!(t.len() <= 1024, "message over the limit");
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
    let far = now + Duration::from_secs(3600);
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

/// permessage-deflate's codec on any bytes: byte 0 picks the level and the
/// limit. Inflating the rest gives at most the limit or an error (never a
/// panic); compressing the rest and inflating it gives it back; the codec
/// is reused, as a shard's is, so no state may leak from call to call.
pub fn deflate(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let mut codec = crate::deflate::Codec::new(u32::from(seed % 10));
    let max = usize::from(seed) * 64;
    if let Ok(out) = codec.inflate(data, max) {
        assert!(out.len() <= max, "inflated past the limit");
    }
    let z = codec.compress(data).map(<[u8]>::to_vec);
    assert!(z.is_some(), "compression does not fail");
    let z = z.unwrap_or_default();
    assert_eq!(
        codec.inflate(&z, data.len()).as_deref(),
        Ok(data),
        "round trip"
    );
    if let Some(short) = data.len().checked_sub(1) {
        assert!(codec.inflate(&z, short).is_err(), "a byte over the limit");
    }
}

/// The HMAC secret of the tokens the fuzz targets verify (the seeds in
/// fuzz/seeds/connection/ and fuzz/seeds/token/ are signed with it).
pub const TOKEN_SECRET: &[u8] = b"wavecast fuzz token secret 32 b!";
/// The Unix time, in seconds, of the fuzzed node's `Timestamp::ZERO` and
/// the time [`token`] verifies at.
pub const UNIX_ORIGIN: u64 = 1_800_000_000;
/// The user of the seeds' subscription tokens, which [`token`] checks
/// subscription tokens for.
pub const TOKEN_USER: &str = "42";
/// The channel [`token`] checks subscription tokens for; its namespace
/// `vip` wants one in the fuzzed node.
pub const TOKEN_CHANNEL: &str = "vip:a";

/// The verifier of the fuzz targets: HS* tokens signed with
/// [`TOKEN_SECRET`], 5 s of leeway, at most 8 KiB, `exp` required.
pub fn token_verifier() -> Verifier {
    Verifier::new(TokenConfig {
        hmac_secret: Some(TOKEN_SECRET.to_vec()),
        leeway: Duration::from_secs(5),
        max_size: 8192,
        ..TokenConfig::default()
    })
    .expect("the fuzz secret is a key")
}

/// `data[1..]` as a client byte stream of one pub/sub connection of a node
/// (wired to a hub) that verifies tokens with [`token_verifier`], in
/// chunks with time passing in between; everything the node sends is read
/// at once. The node must send only valid frames whose messages decode,
/// with error codes of ours; keep no more timers than one connection can
/// have; subscribe nothing for a connection that must but did not
/// authenticate, and close such a connection by the connect timeout; and
/// hold nothing once it ended.
fn node_with_auth(data: &[u8]) {
    use crate::message::{CloseCode, Message};
    use crate::namespace::{NamespaceOptions, Namespaces, Permission};
    use crate::node::{Endpoint, NodeConfig};
    use crate::protocol::{Encoding, ErrorCode};
    use crate::standalone::Standalone;

    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let allow_anonymous = seed & 0x80 != 0;
    // Every proxy on, and a key set that is asked for on unknown key ids:
    // the asks are answered from the input (below).
    let asking = seed & 0x20 != 0;
    let enc = if seed & 0x40 != 0 {
        Encoding::MsgPack
    } else {
        Encoding::Json
    };
    let mut namespaces = Namespaces {
        default: NamespaceOptions::secured(),
        named: Default::default(),
    };
    namespaces
        .named
        .insert("open".into(), NamespaceOptions::default());
    namespaces.named.insert(
        "vip".into(),
        NamespaceOptions {
            allow_subscribe: Permission::Token,
            join_leave: true,
            ..NamespaceOptions::secured()
        },
    );
    let config = NodeConfig {
        connection: ConnectionConfig {
            // Room for a token of the verifier's largest size.
            max_message_size: 16 * 1024,
            max_queued_bytes: 1 << 20,
            ..ConnectionConfig::default()
        },
        namespaces,
        proxies: crate::proxy::Proxies {
            connect: asking,
            refresh: asking,
            subscribe: asking,
            publish: asking,
        },
        auth: AuthConfig {
            verifier: Some(if asking {
                let mut config = token_verifier().config().clone();
                config.jwks = true;
                Verifier::new(config).expect("the fuzz secret is a key")
            } else {
                token_verifier()
            }),
            allow_anonymous,
            connect_timeout: Duration::from_secs(10),
            refresh_grace: Duration::from_secs(30),
            unix_origin_micros: UNIX_ORIGIN * 1_000_000,
        },
        ..NodeConfig::default()
    };
    // permessage-deflate negotiated, every publication compressed, when
    // byte 0 has an odd number of bits set (all eight bits are taken).
    let compression = seed.count_ones() % 2 == 1;
    let config = NodeConfig {
        compression: compression.then_some(crate::deflate::CompressionConfig {
            level: 1,
            threshold: 0,
        }),
        ..config
    };
    let mut core = Standalone::new(config, 1);
    let mut now = Timestamp::ZERO;
    let id = core
        .node
        .handle_connect_with(now, Endpoint::PubSub(enc), &[], compression);

    // The client's view of what the node sent.
    let mut decoder = if compression {
        FrameDecoder::client(1 << 22).with_rsv1()
    } else {
        FrameDecoder::client(1 << 22)
    };
    let mut inflater = crate::deflate::Codec::new(1);
    let mut assembler = Assembler::new(1 << 22);
    let mut wire = BytesMut::new();
    let mut connected = false;
    let mut close_seen = false;
    let mut read_output = |core: &mut Standalone, connected: &mut bool, close_seen: &mut bool| {
        while core.node.poll_transmit().is_some() {}
        if let Some(queue) = core.node.queue(id) {
            for slice in queue.slices() {
                wire.extend_from_slice(slice);
            }
            let n = queue.len();
            queue.advance(n);
        }
        loop {
            let frame = match decoder.decode(&mut wire) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => panic!("the node sent a bad frame: {e:?}"),
            };
            let message = match assembler.push(frame) {
                Ok(Some(Message::Compressed { text, data })) => {
                    let inflated = inflater
                        .inflate(&data, 1 << 22)
                        .unwrap_or_else(|e| panic!("the node sent bad deflate data: {e}"));
                    if text {
                        Message::Text(inflated.into())
                    } else {
                        Message::Binary(inflated.into())
                    }
                }
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => panic!("the node sent a bad message: {e:?}"),
            };
            let value: serde_json::Value = match (message, enc) {
                (Message::Text(t), Encoding::Json) => serde_json::from_slice(&t)
                    .unwrap_or_else(|e| panic!("the node sent bad JSON: {e}")),
                (Message::Binary(b), Encoding::MsgPack) => rmp_serde::from_slice(&b)
                    .unwrap_or_else(|e| panic!("the node sent bad MessagePack: {e}")),
                (Message::Close(close), _) => {
                    assert!(!*close_seen, "two close frames");
                    *close_seen = true;
                    if let Some(close) = close {
                        assert!(CloseCode::is_valid_on_wire(close.code.0));
                    }
                    continue;
                }
                (Message::Ping(_) | Message::Pong(_), _) => continue,
                (m, enc) => panic!("{m:?} in a {enc:?} connection"),
            };
            if let Some(err) = value.get("error") {
                let code = err["code"].as_u64().expect("an error has a code");
                let known = u16::try_from(code).ok().is_some_and(|c| {
                    ErrorCode::from_code(c).is_some()
                        || crate::protocol::APP_ERROR_CODES.contains(&c)
                });
                assert!(
                    known,
                    "error code {code} is neither ours nor an application's"
                );
            } else if let Some(reply) = value.get("connect") {
                assert!(reply["user"].is_string(), "connect reply without user");
                *connected = true;
            }
        }
    };

    let chunk = usize::from(seed % 32) + 1;
    for piece in data.chunks(chunk) {
        now = now + Duration::from_millis(u64::from(piece[0]));
        core.node.handle_read(now, id, piece);
        core.node.handle_timeout(now);
        core.pump(now);
        answer_asks(&mut core, now, piece);
        core.pump(now);
        read_output(&mut core, &mut connected, &mut close_seen);
        // Its connection timer, its authentication deadline, and one
        // expiry per subscription made with a token.
        let subs = core.node.subscriptions(id).len();
        assert!(
            core.node.timers() <= 2 + subs,
            "more timers than it can have"
        );
        if !allow_anonymous && !connected {
            assert_eq!(
                core.node.subscriptions(id),
                Vec::<String>::new(),
                "subscribed before connect"
            );
        }
    }
    // Past the connect timeout: a connection that had to authenticate and
    // did not is being closed.
    let far = now + Duration::from_secs(3600);
    core.node.handle_timeout(far);
    core.pump(far);
    answer_asks(&mut core, far, &[0]);
    core.pump(far);
    read_output(&mut core, &mut connected, &mut close_seen);
    if !allow_anonymous && !connected {
        assert!(
            close_seen || !core.node.ids().any(|i| i == id),
            "an unauthenticated connection outlived the connect timeout"
        );
    }
    core.node.handle_eof(far, id);
    core.pump(far);
    read_output(&mut core, &mut connected, &mut close_seen);
    while core.node.poll_finished().is_some() {}
    assert_eq!(core.node.connections(), 0);
    assert_eq!(core.node.timers(), 0);
    assert_eq!(core.node.requests_in_flight(), 0);
    assert!(
        core.node.channels().all(|(_, n)| n == 0),
        "a subscriber outlived its connection"
    );
}

/// Answers every ask of the fuzzed node, each with an answer the input
/// picks: a result of several shapes (a user, an expiry, channels, data,
/// nonsense), an application or out-of-range error, a disconnect with any
/// code, or unavailable; a key-set fetch that brings nothing.
fn answer_asks(core: &mut crate::standalone::Standalone, now: Timestamp, piece: &[u8]) {
    use crate::node::Ask;
    use crate::protocol::Payload;
    use crate::proxy::ProxyAnswer;

    let mut pick = piece.iter().copied().cycle();
    while let Some(ask) = core.node.poll_ask() {
        let Ask::Proxy { ask, .. } = ask else {
            core.node.handle_keys(now, None);
            continue;
        };
        let b = pick.next().unwrap_or(0);
        let exp = UNIX_ORIGIN + u64::from(b);
        let result = |json: String| {
            ProxyAnswer::Result(Payload::from_json(json.as_bytes()).expect("valid JSON"))
        };
        let answer = match b % 8 {
            0 => result(format!(
                r#"{{"user":"42","expire_at":{exp},"channels":["open:a","vip:a","x"]}}"#
            )),
            1 => result(r#"{"user":"","data":{"d":1}}"#.into()),
            2 => result(format!(
                r#"{{"expired":{},"expire_at":{exp},"data":[1]}}"#,
                b & 1 == 0
            )),
            3 => result(r#"{"user":7,"data":"x"}"#.into()),
            4 => ProxyAnswer::Error {
                code: u16::from(b) * 9,
                message: "no".into(),
            },
            5 => ProxyAnswer::Disconnect {
                code: u16::from(b) * 40,
                reason: "é".repeat(usize::from(b)),
            },
            6 => result("{}".into()),
            _ => ProxyAnswer::Unavailable("down".into()),
        };
        core.node.handle_proxy(now, ask, answer);
    }
}

/// Arbitrary bytes (as UTF-8, lossily) as a connection token and as a
/// subscription token for [`TOKEN_USER`] on [`TOKEN_CHANNEL`], verified at
/// [`UNIX_ORIGIN`] with [`token_verifier`]. Every refusal must be 111
/// (expired) or 112; verification must be deterministic; an expired token
/// stays expired later; and what verifies must be within the limits
/// (size, `exp`, `info`), a subscription token being a valid connection
/// token of its user as well.
pub fn token(data: &[u8]) {
    use crate::auth::{TokenError, MAX_INFO_SIZE};

    fn check_error(e: &TokenError) {
        let code = e.code().code();
        assert!(code == 111 || code == 112, "{e:?} -> {code}");
        assert_eq!(code == 111, *e == TokenError::Expired);
    }

    let text = String::from_utf8_lossy(data);
    let verifier = token_verifier();
    let leeway = verifier.config().leeway.as_secs();
    let now = UNIX_ORIGIN;
    let later = UNIX_ORIGIN + 100_000;

    let connection = verifier.connection(&text, now);
    assert_eq!(
        connection,
        verifier.connection(&text, now),
        "not deterministic"
    );
    match &connection {
        Ok(claims) => {
            assert!(text.len() <= verifier.config().max_size);
            let exp = claims.expires.expect("exp is required");
            assert!(exp.saturating_add(leeway) >= now, "expired token accepted");
            if let Some(info) = &claims.info {
                assert!(info.as_json().len() <= MAX_INFO_SIZE);
            }
        }
        Err(e) => {
            check_error(e);
            if *e == TokenError::Expired {
                assert_eq!(
                    verifier.connection(&text, later),
                    Err(TokenError::Expired),
                    "an expired token became valid"
                );
            }
        }
    }

    match verifier.subscription(&text, now, TOKEN_USER, TOKEN_CHANNEL) {
        Ok(claims) => {
            let exp = claims.expires.expect("exp is required");
            assert!(exp.saturating_add(leeway) >= now, "expired token accepted");
            if let Some(info) = &claims.info {
                assert!(info.as_json().len() <= MAX_INFO_SIZE);
            }
            let user = connection.as_ref().map(|c| c.user.as_str());
            assert_eq!(user, Ok(TOKEN_USER), "subscription token of another user");
        }
        Err(e) => check_error(&e),
    }
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
        info: None,
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
