//! RFC 6455 section 4 (opening handshake, server side) against
//! `wavecast_core::handshake`.
//!
//! Every response the module produces is read back with httparse, so these
//! tests also check that what goes on the wire is well-formed HTTP/1.1 (a
//! status line, headers, a Content-Length that matches the body).
//!
//! One file for all of section 4 (about a hundred cases, each a few lines)
//! so that the section reads in order, as the RFC does; a split would cut
//! one list of requirements in arbitrary places.

// core/clippy.toml keeps `Arc` out of the core itself; proptest's
// `prop_oneof!` expands to one.
#![allow(clippy::disallowed_types)]

use base64::Engine as _;
use proptest::prelude::*;
use wavecast_core::handshake::{
    accept, accept_key, parse_request, reject_response, Accepted, HandshakeConfig, HandshakeError,
    RequestHead, MAX_HEADERS,
};

/// The sample nonce of RFC 6455 section 1.3 and the accept value the RFC
/// gives for it.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A minimal valid upgrade request, one header per line.
fn valid_lines() -> Vec<String> {
    [
        "GET /connect HTTP/1.1",
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Key: {RFC_KEY}"),
        "Sec-WebSocket-Version: 13",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Joins a request line and header lines into a head ending with CRLFCRLF.
fn request(lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The valid request with every header named `name` removed.
fn without(name: &str) -> Vec<String> {
    valid_lines()
        .into_iter()
        .filter(|l| {
            !l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// The valid request with the header `name` replaced by `name: value`.
fn with_header(name: &str, value: &str) -> Vec<String> {
    let mut lines = without(name);
    lines.push(format!("{name}: {value}"));
    lines
}

/// The valid request with an extra header line appended.
fn plus(line: &str) -> Vec<String> {
    let mut lines = valid_lines();
    lines.push(line.to_owned());
    lines
}

fn parse_complete(bytes: &[u8]) -> RequestHead {
    parse_request(bytes, 8192)
        .expect("the request parses")
        .expect("the request is complete")
}

fn try_accept(lines: &[String], config: &HandshakeConfig) -> Result<Accepted, HandshakeError> {
    accept(&parse_complete(&request(lines)), config)
}

fn reject(lines: &[String], config: &HandshakeConfig) -> HandshakeError {
    match try_accept(lines, config) {
        Ok(a) => panic!(
            "expected a rejection, got {:?}",
            String::from_utf8_lossy(&a.response)
        ),
        Err(e) => e,
    }
}

/// A response read back: status, headers (names lowercased), body.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
    fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n == &name.to_ascii_lowercase())
            .count()
    }
}

/// Parses a complete HTTP/1.1 response; the body is what follows the head,
/// and must be exactly Content-Length bytes when that header is present.
fn read_response(bytes: &[u8]) -> Response {
    assert!(bytes.starts_with(b"HTTP/1.1 "), "{bytes:?}");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(bytes).expect("a well-formed response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("incomplete response head"),
    };
    assert_eq!(resp.version, Some(1), "responses are HTTP/1.1");
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).expect("ASCII header value"),
            )
        })
        .collect();
    let out = Response {
        status: resp.code.expect("status"),
        reason: resp.reason.expect("reason").to_owned(),
        headers,
        body: bytes[n..].to_vec(),
    };
    if let Some(len) = out.header("content-length") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            out.body.len(),
            "Content-Length"
        );
    }
    out
}

/// Checks the shape every error response must have, and returns it.
fn check_error_response(err: &HandshakeError, status: u16) -> Response {
    assert_eq!(err.status(), status, "{err:?}");
    let r = read_response(&err.response());
    assert_eq!(r.status, status);
    assert!(!r.reason.is_empty());
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("content-length").is_some());
    assert!(!r.body.is_empty(), "the body says what was wrong");
    r
}

fn check_400(err: HandshakeError) {
    let r = check_error_response(&err, 400);
    assert_eq!(r.header("allow"), None);
    assert_eq!(r.header("sec-websocket-version"), None);
}

// ---------------------------------------------------------------------------
// Accepting (section 4.2.2)

#[test]
fn rfc_sample_key_gives_rfc_accept_value() {
    assert_eq!(accept_key(RFC_KEY.as_bytes()), RFC_ACCEPT);
}

#[test]
fn valid_request_gets_101_with_rfc_headers() {
    let accepted = try_accept(&valid_lines(), &HandshakeConfig::default()).unwrap();
    assert_eq!(accepted.subprotocol, None);
    assert!(accepted.response.ends_with(b"\r\n\r\n"));
    let r = read_response(&accepted.response);
    assert_eq!(r.status, 101);
    assert!(r
        .header("upgrade")
        .unwrap()
        .eq_ignore_ascii_case("websocket"));
    assert!(r
        .header("connection")
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    assert_eq!(r.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    assert_eq!(r.header("sec-websocket-protocol"), None);
    // Nothing follows the head: frames start right after it.
    assert!(r.body.is_empty());
}

/// The sample client handshake of RFC 6455 section 1.2.
#[test]
fn rfc_section_1_2_sample_request() {
    let bytes = b"GET /chat HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
    let head = parse_complete(bytes);
    assert_eq!(head.method, "GET");
    assert_eq!(head.path, "/chat");
    assert_eq!(head.query, None);
    assert_eq!(head.head_len, bytes.len());
    assert!(head.wants_websocket());
    let config = HandshakeConfig {
        allowed_origins: Some(vec!["http://example.com".into()]),
        subprotocols: vec!["superchat".into(), "chat".into()],
        ..HandshakeConfig::default()
    };
    let accepted = accept(&head, &config).unwrap();
    // The client listed chat first, and the server speaks it.
    assert_eq!(accepted.subprotocol.as_deref(), Some("chat"));
    let r = read_response(&accepted.response);
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    assert_eq!(r.header("sec-websocket-protocol"), Some("chat"));
}

#[test]
fn accept_value_is_computed_from_the_clients_key() {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let accepted = try_accept(
        &with_header("Sec-WebSocket-Key", &key),
        &HandshakeConfig::default(),
    )
    .unwrap();
    let r = read_response(&accepted.response);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some(accept_key(key.as_bytes()).as_str())
    );
    assert_ne!(accept_key(key.as_bytes()), RFC_ACCEPT);
}

#[test]
fn whitespace_around_the_key_is_not_part_of_it() {
    let accepted = try_accept(
        &with_header("Sec-WebSocket-Key", &format!(" \t{RFC_KEY}  ")),
        &HandshakeConfig::default(),
    )
    .unwrap();
    assert_eq!(
        read_response(&accepted.response).header("sec-websocket-accept"),
        Some(RFC_ACCEPT)
    );
}

// ---------------------------------------------------------------------------
// Rejections (section 4.2.1), each with its status and required header

#[test]
fn method_other_than_get_is_405_with_allow_get() {
    for method in ["POST", "PUT", "HEAD", "get"] {
        let mut lines = valid_lines();
        lines[0] = format!("{method} /connect HTTP/1.1");
        let err = reject(&lines, &HandshakeConfig::default());
        assert_eq!(err, HandshakeError::MethodNotAllowed, "{method}");
        let r = check_error_response(&err, 405);
        assert_eq!(r.header("allow"), Some("GET"));
    }
}

#[test]
fn http_1_0_is_400() {
    let mut lines = valid_lines();
    lines[0] = "GET /connect HTTP/1.0".into();
    let err = reject(&lines, &HandshakeConfig::default());
    assert_eq!(err, HandshakeError::HttpVersion);
    check_400(err);
}

#[test]
fn other_http_versions_are_malformed_400() {
    for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/11", "FTP/1.1"] {
        let bytes = format!("GET / {version}\r\nHost: a\r\n\r\n");
        let err = parse_request(bytes.as_bytes(), 8192).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Malformed(_)),
            "{version}: {err:?}"
        );
        check_400(err);
    }
}

#[test]
fn missing_host_is_400() {
    let err = reject(&without("Host"), &HandshakeConfig::default());
    assert_eq!(err, HandshakeError::MissingHost);
    check_400(err);
}

#[test]
fn two_host_headers_are_400() {
    // RFC 7230 section 5.4: more than one Host is a 400.
    let err = reject(&plus("Host: evil.example"), &HandshakeConfig::default());
    assert_eq!(err, HandshakeError::DuplicateHeader("Host"));
    check_400(err);
}

#[test]
fn missing_or_wrong_upgrade_is_400() {
    let config = HandshakeConfig::default();
    for lines in [
        without("Upgrade"),
        with_header("Upgrade", "h2c"),
        with_header("Upgrade", "websockets"),
        with_header("Upgrade", "web socket"),
        with_header("Upgrade", ""),
    ] {
        let err = reject(&lines, &config);
        assert_eq!(err, HandshakeError::MissingUpgrade, "{lines:?}");
        check_400(err);
    }
}

#[test]
fn missing_or_wrong_connection_is_400() {
    let config = HandshakeConfig::default();
    for lines in [
        without("Connection"),
        with_header("Connection", "keep-alive"),
        with_header("Connection", "close"),
        with_header("Connection", "Upgraded"),
        with_header("Connection", "keep-alive Upgrade"),
    ] {
        let err = reject(&lines, &config);
        assert_eq!(err, HandshakeError::MissingConnectionUpgrade, "{lines:?}");
        check_400(err);
    }
}

#[test]
fn missing_key_is_400() {
    let err = reject(&without("Sec-WebSocket-Key"), &HandshakeConfig::default());
    assert_eq!(err, HandshakeError::BadKey);
    check_400(err);
}

#[test]
fn duplicate_key_is_400_even_when_both_are_valid_and_equal() {
    let config = HandshakeConfig::default();
    let other = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    for dup in [RFC_KEY.to_owned(), other] {
        let err = reject(&plus(&format!("sec-websocket-key: {dup}")), &config);
        assert_eq!(err, HandshakeError::BadKey);
        check_400(err);
    }
}

#[test]
fn key_must_decode_to_exactly_16_bytes() {
    let config = HandshakeConfig::default();
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0xA5u8; n]);
    let unpadded =
        |n: usize| base64::engine::general_purpose::STANDARD_NO_PAD.encode(vec![0xA5u8; n]);
    for n in [0, 1, 12, 15, 17, 18, 20, 32] {
        let err = reject(&with_header("Sec-WebSocket-Key", &b64(n)), &config);
        assert_eq!(err, HandshakeError::BadKey, "{n} bytes");
        check_400(err);
    }
    // 16 bytes, but without the padding the RFC's base64 (RFC 4648) has.
    let err = reject(&with_header("Sec-WebSocket-Key", &unpadded(16)), &config);
    assert_eq!(err, HandshakeError::BadKey);
    // And exactly 16 bytes is accepted.
    assert!(try_accept(&with_header("Sec-WebSocket-Key", &b64(16)), &config).is_ok());
}

#[test]
fn non_base64_key_is_400() {
    let config = HandshakeConfig::default();
    for key in [
        "dGhlIHNhbXBsZSBub25jZQ",    // 22 chars, no padding
        "dGhlIHNhbXBsZSBub25jZQ=!",  // invalid character
        "dGhlIHNhbXBsZSBub25jZ*==",  // invalid character
        "dGhlIHNhbXBsZSBub25jZQ-_",  // URL-safe alphabet
        "dGhlIHNhbXBsZSBu b25jZQ==", // space inside
        "the sample nonce here!!!",  // 24 chars of text
        "dGhlIHNhbXBsZSBub25jZR==",  // non-canonical trailing bits
        "========================",
    ] {
        let err = reject(&with_header("Sec-WebSocket-Key", key), &config);
        assert_eq!(err, HandshakeError::BadKey, "{key}");
        check_400(err);
    }
}

#[test]
fn version_other_than_13_is_426_with_version_header() {
    let config = HandshakeConfig::default();
    let mut cases: Vec<Vec<String>> = ["8", "7", "12", "14", "13, 8", "0", ""]
        .iter()
        .map(|v| with_header("Sec-WebSocket-Version", v))
        .collect();
    cases.push(without("Sec-WebSocket-Version"));
    for lines in cases {
        let err = reject(&lines, &config);
        assert_eq!(err, HandshakeError::UnsupportedVersion, "{lines:?}");
        let r = check_error_response(&err, 426);
        assert_eq!(r.header("sec-websocket-version"), Some("13"));
        assert_eq!(r.count("sec-websocket-version"), 1);
    }
}

#[test]
fn duplicate_version_header_is_400() {
    // Section 11.3.5: Sec-WebSocket-Version MUST NOT appear more than once
    // in a request.
    let err = reject(
        &plus("Sec-WebSocket-Version: 13"),
        &HandshakeConfig::default(),
    );
    assert_eq!(
        err,
        HandshakeError::DuplicateHeader("Sec-WebSocket-Version")
    );
    check_400(err);
}

// ---------------------------------------------------------------------------
// Token lists and case-insensitivity

#[test]
fn connection_and_upgrade_are_token_lists() {
    let config = HandshakeConfig::default();
    for lines in [
        with_header("Connection", "keep-alive, Upgrade"),
        with_header("Connection", "Upgrade,keep-alive"),
        with_header("Connection", " keep-alive ,\tUpgrade , "),
        with_header("Upgrade", "h2c, websocket"),
        with_header("Upgrade", "foo/1.0,websocket , bar"),
    ] {
        assert!(try_accept(&lines, &config).is_ok(), "{lines:?}");
    }
    // A list may also be split over several header lines (RFC 7230 3.2.2).
    let mut lines = with_header("Connection", "keep-alive");
    lines.push("Connection: Upgrade".into());
    assert!(try_accept(&lines, &config).is_ok());
    let mut lines = with_header("Upgrade", "h2c");
    lines.push("Upgrade: websocket".into());
    assert!(try_accept(&lines, &config).is_ok());
}

#[test]
fn header_names_and_tokens_are_case_insensitive() {
    let lines: Vec<String> = [
        "GET /connect HTTP/1.1",
        "HOST: server.example.com",
        "upgrade: WebSocket",
        "CONNECTION: keep-alive, UPGRADE",
        &format!("sec-websocket-KEY: {RFC_KEY}"),
        "SEC-WEBSOCKET-VERSION: 13",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let head = parse_complete(&request(&lines));
    assert!(head.wants_websocket());
    assert_eq!(head.header("Host"), Some(b"server.example.com".as_slice()));
    assert_eq!(head.header("host"), Some(b"server.example.com".as_slice()));
    // Names are kept as sent.
    assert!(head.headers.iter().any(|(n, _)| n == "HOST"));
    let accepted = accept(&head, &HandshakeConfig::default()).unwrap();
    assert_eq!(
        read_response(&accepted.response).header("sec-websocket-accept"),
        Some(RFC_ACCEPT)
    );
}

#[test]
fn header_returns_the_first_occurrence() {
    let head = parse_complete(b"GET / HTTP/1.1\r\nX-A: one\r\nx-a: two\r\n\r\n");
    assert_eq!(head.header("X-A"), Some(b"one".as_slice()));
    assert_eq!(head.header("x-b"), None);
}

// ---------------------------------------------------------------------------
// Origin (section 4.2.1 item 7, section 10.2)

fn origin_config() -> HandshakeConfig {
    HandshakeConfig {
        allowed_origins: Some(vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ]),
        ..HandshakeConfig::default()
    }
}

#[test]
fn allowed_origin_is_accepted_case_insensitively() {
    let config = origin_config();
    for origin in [
        "https://app.example.com",
        "HTTPS://App.Example.COM",
        "http://localhost:3000",
    ] {
        assert!(
            try_accept(&plus(&format!("Origin: {origin}")), &config).is_ok(),
            "{origin}"
        );
    }
}

#[test]
fn other_origins_are_403() {
    let config = origin_config();
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "http://localhost:3001",
        "https://app.example.com.evil.net",
        "null",
    ] {
        let err = reject(&plus(&format!("Origin: {origin}")), &config);
        assert_eq!(err, HandshakeError::OriginNotAllowed, "{origin}");
        check_error_response(&err, 403);
    }
}

#[test]
fn a_second_origin_cannot_launder_a_denied_one() {
    let mut lines = plus("Origin: https://evil.example.com");
    lines.push("Origin: https://app.example.com".into());
    assert_eq!(
        reject(&lines, &origin_config()),
        HandshakeError::OriginNotAllowed
    );
}

#[test]
fn absent_origin_is_allowed() {
    assert!(try_accept(&valid_lines(), &origin_config()).is_ok());
}

#[test]
fn no_allow_list_allows_any_origin() {
    let config = HandshakeConfig::default();
    assert!(config.allowed_origins.is_none());
    assert!(try_accept(&plus("Origin: https://anything.example"), &config).is_ok());
}

#[test]
fn empty_allow_list_denies_every_browser() {
    let config = HandshakeConfig {
        allowed_origins: Some(vec![]),
        ..HandshakeConfig::default()
    };
    assert_eq!(
        reject(&plus("Origin: https://app.example.com"), &config),
        HandshakeError::OriginNotAllowed
    );
    assert!(try_accept(&valid_lines(), &config).is_ok());
}

// ---------------------------------------------------------------------------
// Subprotocols (section 4.2.2 item 5.4 / section 1.9)

fn chosen(protocol_lines: &[&str]) -> (Option<String>, Option<String>) {
    let mut lines = valid_lines();
    lines.extend(protocol_lines.iter().map(|l| l.to_string()));
    let accepted = try_accept(&lines, &HandshakeConfig::default()).unwrap();
    let r = read_response(&accepted.response);
    assert!(r.count("sec-websocket-protocol") <= 1);
    (
        accepted.subprotocol,
        r.header("sec-websocket-protocol").map(str::to_owned),
    )
}

#[test]
fn client_order_wins_among_supported_subprotocols() {
    // The server prefers json; the client lists msgpack first.
    assert_eq!(HandshakeConfig::default().subprotocols[0], "wavecast.json");
    let (sub, hdr) = chosen(&["Sec-WebSocket-Protocol: wavecast.msgpack, wavecast.json"]);
    assert_eq!(sub.as_deref(), Some("wavecast.msgpack"));
    assert_eq!(hdr.as_deref(), Some("wavecast.msgpack"));
    let (sub, hdr) = chosen(&["Sec-WebSocket-Protocol: wavecast.json, wavecast.msgpack"]);
    assert_eq!(sub.as_deref(), Some("wavecast.json"));
    assert_eq!(hdr.as_deref(), Some("wavecast.json"));
}

#[test]
fn unsupported_offers_are_skipped() {
    let (sub, hdr) = chosen(&["Sec-WebSocket-Protocol: mqtt, wavecast.json"]);
    assert_eq!(sub.as_deref(), Some("wavecast.json"));
    assert_eq!(hdr.as_deref(), Some("wavecast.json"));
}

#[test]
fn subprotocol_offers_may_span_several_headers() {
    let (sub, hdr) = chosen(&[
        "Sec-WebSocket-Protocol: mqtt",
        "Sec-WebSocket-Protocol: wavecast.msgpack",
        "Sec-WebSocket-Protocol: wavecast.json",
    ]);
    assert_eq!(sub.as_deref(), Some("wavecast.msgpack"));
    assert_eq!(hdr.as_deref(), Some("wavecast.msgpack"));
}

#[test]
fn no_match_or_no_offer_means_no_protocol_header() {
    assert_eq!(chosen(&[]), (None, None));
    assert_eq!(
        chosen(&["Sec-WebSocket-Protocol: mqtt, stomp"]),
        (None, None)
    );
    assert_eq!(chosen(&["Sec-WebSocket-Protocol: "]), (None, None));
    // Subprotocol names are compared exactly: the client checks the echoed
    // name against what it offered.
    assert_eq!(
        chosen(&["Sec-WebSocket-Protocol: WAVECAST.JSON"]),
        (None, None)
    );
}

#[test]
fn extensions_are_declined_by_omission() {
    let lines = plus("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits");
    let accepted = try_accept(&lines, &HandshakeConfig::default()).unwrap();
    assert_eq!(
        read_response(&accepted.response).header("sec-websocket-extensions"),
        None
    );
}

// ---------------------------------------------------------------------------
// Parsing: incomplete heads, limits, leftover bytes, plain HTTP

#[test]
fn incomplete_head_is_none_at_every_split_point() {
    let bytes = request(&plus("Sec-WebSocket-Protocol: wavecast.json"));
    for split in 0..bytes.len() {
        assert_eq!(
            parse_request(&bytes[..split], 8192),
            Ok(None),
            "prefix of {split} bytes"
        );
    }
    assert_eq!(parse_complete(&bytes).head_len, bytes.len());
}

#[test]
fn head_over_the_limit_is_431_before_crlfcrlf_arrives() {
    let max = 256;
    let mut bytes = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    bytes.resize(max, b'x');
    // Exactly at the limit and still incomplete: the head may yet end.
    assert_eq!(parse_request(&bytes, max), Ok(None));
    // One more byte and no end in sight: it cannot fit any more.
    bytes.push(b'x');
    let err = parse_request(&bytes, max).unwrap_err();
    assert_eq!(err, HandshakeError::HeadTooLarge { max });
    check_error_response(&err, 431);
    // A lot more: still 431, not some other error.
    bytes.resize(100_000, b'x');
    assert_eq!(
        parse_request(&bytes, max),
        Err(HandshakeError::HeadTooLarge { max })
    );
}

#[test]
fn head_of_exactly_the_limit_is_accepted_and_one_more_is_431() {
    let bytes = request(&valid_lines());
    let len = bytes.len();
    assert_eq!(parse_request(&bytes, len).unwrap().unwrap().head_len, len);
    assert_eq!(
        parse_request(&bytes, len - 1),
        Err(HandshakeError::HeadTooLarge { max: len - 1 })
    );
}

#[test]
fn default_limit_is_8192() {
    let config = HandshakeConfig::default();
    assert_eq!(config.max_head_size, 8192);
    let mut lines = valid_lines();
    lines.push(format!("X-Pad: {}", "p".repeat(9000)));
    let err = parse_request(&request(&lines), config.max_head_size).unwrap_err();
    assert_eq!(err, HandshakeError::HeadTooLarge { max: 8192 });
}

#[test]
fn too_many_headers_is_431() {
    let mut lines = valid_lines();
    while lines.len() <= MAX_HEADERS + 1 {
        lines.push(format!("X-H{}: v", lines.len()));
    }
    let bytes = request(&lines);
    assert!(bytes.len() < 8192);
    let err = parse_request(&bytes, 8192).unwrap_err();
    assert_eq!(err.status(), 431);
    check_error_response(&err, 431);
    // Exactly MAX_HEADERS header lines still parse.
    let mut lines = valid_lines();
    while lines.len() < MAX_HEADERS + 1 {
        lines.push(format!("X-H{}: v", lines.len()));
    }
    assert_eq!(parse_complete(&request(&lines)).headers.len(), MAX_HEADERS);
}

#[test]
fn leftover_bytes_are_not_counted_in_head_len() {
    let head_bytes = request(&valid_lines());
    // A masked text frame the client pipelined behind its request.
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    let mut buf = head_bytes.clone();
    buf.extend_from_slice(&frame);
    let head = parse_complete(&buf);
    assert_eq!(head.head_len, head_bytes.len());
    assert_eq!(&buf[head.head_len..], &frame);
    // Even leftovers that would take the buffer past the limit: only the head
    // counts.
    let mut big = head_bytes.clone();
    big.extend(std::iter::repeat_n(0u8, 10_000));
    assert_eq!(
        parse_request(&big, 8192).unwrap().unwrap().head_len,
        head_bytes.len()
    );
}

#[test]
fn plain_get_healthz_parses_and_does_not_want_websocket() {
    let bytes = b"GET /healthz HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    let head = parse_complete(bytes);
    assert_eq!(head.method, "GET");
    assert_eq!(head.path, "/healthz");
    assert_eq!(head.query, None);
    assert_eq!(head.version, 1);
    assert_eq!(head.head_len, bytes.len());
    assert_eq!(head.headers.len(), 3);
    assert!(!head.wants_websocket());
    // Sent to accept anyway, it is a 400, not a panic or a 101.
    assert_eq!(
        accept(&head, &HandshakeConfig::default()),
        Err(HandshakeError::MissingUpgrade)
    );
}

#[test]
fn plain_http_requests_of_any_method_and_version_parse() {
    let bytes = b"POST /api/publish?channel=news&x HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
    let head = parse_complete(bytes);
    assert_eq!(head.method, "POST");
    assert_eq!(head.path, "/api/publish");
    assert_eq!(head.query.as_deref(), Some("channel=news&x"));
    assert_eq!(head.version, 0);
    assert_eq!(&bytes[head.head_len..], b"{}");
    assert_eq!(head.header("content-length"), Some(b"2".as_slice()));
}

#[test]
fn empty_query_is_some_empty() {
    let head = parse_complete(b"GET /a? HTTP/1.1\r\n\r\n");
    assert_eq!(head.path, "/a");
    assert_eq!(head.query.as_deref(), Some(""));
}

#[test]
fn malformed_heads_are_400() {
    for bytes in [
        b"\x00\x01\x02\x03\r\n\r\n".as_slice(),
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: novalue\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\rX: a\r\n\r\n",
    ] {
        let err = parse_request(bytes, 8192).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Malformed(_)),
            "{bytes:?}: {err:?}"
        );
        check_400(err);
    }
}

// ---------------------------------------------------------------------------
// Error responses

#[test]
fn every_error_has_a_complete_response() {
    let all = [
        (HandshakeError::HeadTooLarge { max: 8192 }, 431),
        (HandshakeError::TooManyHeaders { max: 64 }, 431),
        (HandshakeError::Malformed("invalid token".into()), 400),
        (HandshakeError::MethodNotAllowed, 405),
        (HandshakeError::HttpVersion, 400),
        (HandshakeError::MissingHost, 400),
        (HandshakeError::DuplicateHeader("Host"), 400),
        (HandshakeError::MissingUpgrade, 400),
        (HandshakeError::MissingConnectionUpgrade, 400),
        (HandshakeError::BadKey, 400),
        (HandshakeError::UnsupportedVersion, 426),
        (HandshakeError::OriginNotAllowed, 403),
    ];
    for (err, status) in all {
        let r = check_error_response(&err, status);
        assert_eq!(r.header("allow").is_some(), status == 405, "{err:?}");
        assert_eq!(
            r.header("sec-websocket-version").is_some(),
            status == 426,
            "{err:?}"
        );
    }
}

#[test]
fn reject_response_is_a_complete_plain_response() {
    let r = read_response(&reject_response(503, "Service Unavailable", "at capacity"));
    assert_eq!(r.status, 503);
    assert_eq!(r.reason, "Service Unavailable");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert!(String::from_utf8(r.body).unwrap().contains("at capacity"));
    let r = read_response(&reject_response(404, "Not Found", ""));
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------
// Arbitrary input, checked by the fuzz target's own oracle
// (`wavecast_core::fuzzing::handshake`; its seeds replay in `fuzz_seeds.rs`)

/// Valid upgrade requests: random key, path, query, header case and order of
/// optional headers, optional subprotocol offers and Origin.
fn valid_request() -> impl Strategy<Value = (Vec<u8>, [u8; 16])> {
    (
        any::<[u8; 16]>(),
        "/[a-z0-9/._-]{0,20}",
        proptest::option::of("[a-z0-9=&]{0,12}"),
        any::<u64>(),
        proptest::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,24}"), 0..5),
        proptest::option::of(proptest::sample::subsequence(
            vec!["mqtt", "wavecast.msgpack", "wavecast.json"],
            0..3,
        )),
    )
        .prop_map(|(key, path, query, case_bits, extra, protos)| {
            let key_b64 = base64::engine::general_purpose::STANDARD.encode(key);
            let target = match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut headers = vec![
                ("Host".to_string(), "example.com".to_string()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "keep-alive, Upgrade".into()),
                ("Sec-WebSocket-Key".into(), key_b64),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ];
            headers.extend(extra);
            if let Some(p) = protos {
                headers.push(("Sec-WebSocket-Protocol".into(), p.join(", ")));
            }
            let mut out = format!("GET {target} HTTP/1.1\r\n");
            for (i, (name, value)) in headers.iter().enumerate() {
                let name = if case_bits >> (i % 64) & 1 == 1 {
                    name.to_ascii_uppercase()
                } else {
                    name.to_ascii_lowercase()
                };
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            (out.into_bytes(), key)
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        wavecast_core::fuzzing::handshake(&data);
    }

    #[test]
    fn request_like_bytes_never_panic(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("Host: a".to_string()),
                Just("Upgrade: websocket".to_string()),
                Just("Connection: Upgrade".to_string()),
                Just(format!("Sec-WebSocket-Key: {RFC_KEY}")),
                Just("Sec-WebSocket-Version: 13".to_string()),
                Just("Origin: https://app.example.com".to_string()),
                "(Host|Upgrade|Connection|Sec-WebSocket-Key|Sec-WebSocket-Version|Origin|Sec-WebSocket-Protocol): [ -~]{0,30}",
                "[\\x00-\\xff]{0,20}",
            ],
            0..12,
        ),
        method in "(GET|POST|get|G\\x00T)",
    ) {
        let mut all = vec![format!("{method} / HTTP/1.1")];
        all.extend(lines);
        let bytes = request(&all);
        wavecast_core::fuzzing::handshake(&bytes);
    }

    #[test]
    fn any_prefix_of_a_valid_request_is_none(
        (bytes, key) in valid_request(),
        split in any::<proptest::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let cut = split.index(bytes.len());
        prop_assert_eq!(parse_request(&bytes[..cut], 8192), Ok(None));
        // Complete, with anything after it: the head ends where it ends.
        let mut buf = bytes.clone();
        buf.extend_from_slice(&tail);
        let head = parse_request(&buf, 8192).unwrap().unwrap();
        prop_assert_eq!(head.head_len, bytes.len());
        prop_assert!(head.wants_websocket());
        let accepted = accept(&head, &HandshakeConfig::default()).unwrap();
        let r = read_response(&accepted.response);
        let expected = accept_key(base64::engine::general_purpose::STANDARD.encode(key).as_bytes());
        prop_assert_eq!(r.header("sec-websocket-accept"), Some(expected.as_str()));
    }
}
