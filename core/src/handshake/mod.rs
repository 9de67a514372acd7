//! The RFC 6455 section 4 opening handshake: the server side here, the
//! client side in [`client`] ([`ClientHandshake`]).
//!
//! The server side is two steps, both pure functions over bytes:
//!
//! 1. [`parse_request`] finds an HTTP/1.1 request head at the front of a
//!    read buffer. It returns `Ok(None)` while the head is incomplete, and
//!    enforces a bound on its size *before* the final CRLFCRLF arrives, so a
//!    client cannot make the server buffer an unbounded head. Any request
//!    parses, not only upgrades: the runtime routes requests for which
//!    [`RequestHead::wants_websocket`] is false to its HTTP side.
//! 2. [`accept`] validates an upgrade request against RFC 6455 section 4.2.1
//!    and the server's policy ([`HandshakeConfig`]: Origin allow-list,
//!    subprotocols), and produces the complete `101 Switching Protocols`
//!    response, or a [`HandshakeError`] whose [`HandshakeError::response`] is
//!    the complete HTTP error response to send before closing.
//!
//! Bytes after the head (`buf[head.head_len..]`) belong to whatever follows:
//! a request body on the HTTP side, or the client's first frames after an
//! upgrade (a client may pipeline them behind the request).
//!
//! Nothing here panics on any input: every malformed input maps to an HTTP
//! status.

use base64::Engine as _;
use sha1::{Digest, Sha1};

pub mod client;

pub use client::{read_response, ClientAccepted, ClientHandshake, ClientHandshakeError};

/// The GUID that RFC 6455 section 1.3 appends to the client's key before
/// hashing it into `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How many header lines [`parse_request`] accepts. httparse needs a fixed
/// array; a browser sends about 15, so 64 leaves room for proxies, and more
/// is treated like an oversized head (431).
pub const MAX_HEADERS: usize = 64;

/// Default bound on a request head, in bytes (see
/// [`HandshakeConfig::max_head_size`]).
pub const DEFAULT_MAX_HEAD_SIZE: usize = 8192;

/// Limits and policy of the handshake.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Largest request head accepted, in bytes, including the final CRLFCRLF
    /// (default 8192); beyond it the request is rejected with 431.
    pub max_head_size: usize,
    /// Allowed `Origin` header values (compared ASCII-case-insensitively,
    /// exact `scheme://host[:port]`); `None` allows any. A request without
    /// `Origin` (a non-browser client) is allowed: the Origin check protects
    /// browsers' users from other sites' scripts, and only browsers send it.
    pub allowed_origins: Option<Vec<String>>,
    /// Subprotocols the server speaks, in server preference order (e.g.
    /// `"wavecast.json"`, `"wavecast.msgpack"`). The choice itself follows the
    /// client's order, see [`accept`].
    pub subprotocols: Vec<String>,
    /// Accept a permessage-deflate offer (RFC 7692), always without context
    /// takeover ([`crate::deflate::negotiate`]); off by default.
    pub compression: bool,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            allowed_origins: None,
            subprotocols: vec!["wavecast.json".to_owned(), "wavecast.msgpack".to_owned()],
            compression: false,
        }
    }
}

/// An HTTP/1.x request head parsed from the front of a byte buffer (any
/// request, not only upgrades: the runtime routes plain HTTP requests to its
/// HTTP side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method as sent (methods are case-sensitive in HTTP).
    pub method: String,
    /// The request target up to the first `?`, without the query.
    pub path: String,
    /// The query string after the first `?`, without the `?`; `None` when the
    /// target has no `?`.
    pub query: Option<String>,
    /// The HTTP minor version: `1` for HTTP/1.1, `0` for HTTP/1.0 (httparse
    /// accepts no other version).
    pub version: u8,
    /// The header fields in the order sent, names as sent, values with
    /// surrounding whitespace removed by the parser.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, including the final CRLFCRLF; bytes after it in the
    /// buffer are leftover (a body, or the first frames after an upgrade).
    pub head_len: usize,
}

impl RequestHead {
    /// The value of the first header named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// All values of headers named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// True when any header named `name` holds `token` in its comma-separated
    /// list (both compared ASCII-case-insensitively), as `Connection` and
    /// `Upgrade` are defined (RFC 7230 section 7: a field may be sent as one
    /// list or as several fields).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .flat_map(list_elements)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// True when `Upgrade` has the token `websocket` (case-insensitive, comma
    /// lists), i.e. the client asks for a WebSocket; the runtime sends such
    /// requests to [`accept`], others to its HTTP side.
    pub fn wants_websocket(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }
}

/// Parses the request head at the front of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and `buf` is still within
/// `max_head_size`; call again with more bytes. Errors:
/// [`HandshakeError::HeadTooLarge`] (431) as soon as `buf` holds more than
/// `max_head_size` bytes without a complete head, or the head is longer;
/// [`HandshakeError::TooManyHeaders`] (431) beyond [`MAX_HEADERS`] header
/// lines; [`HandshakeError::Malformed`] (400) for anything httparse rejects.
pub fn parse_request(
    buf: &[u8],
    max_head_size: usize,
) -> Result<Option<RequestHead>, HandshakeError> {
    // Parse only the part of the buffer that may hold an acceptable head: a
    // head that did not end within it is too large whatever follows, and this
    // keeps the work per call bounded by the limit, not by the buffer.
    let window = buf.get(..max_head_size).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head_size {
                Err(HandshakeError::HeadTooLarge { max: max_head_size })
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { max: MAX_HEADERS })
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    // httparse fills method, path and version on Complete; their absence
    // would be a parser bug, reported as a malformed request, not a panic.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed(
            "incomplete request line".to_owned(),
        ));
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), trim_ows(h.value).to_vec()))
        .collect();
    Ok(Some(RequestHead {
        method: method.to_owned(),
        path,
        query,
        version,
        headers,
        head_len,
    }))
}

/// A validated upgrade: the response to write, and the negotiated
/// subprotocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The full `HTTP/1.1 101 Switching Protocols` response with `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept` and, if chosen,
    /// `Sec-WebSocket-Protocol`, ending with the empty line. Frames may
    /// follow it immediately.
    pub response: Vec<u8>,
    /// The subprotocol chosen, one of [`HandshakeConfig::subprotocols`].
    pub subprotocol: Option<String>,
    /// permessage-deflate was negotiated (the response carries its
    /// `Sec-WebSocket-Extensions`).
    pub compression: bool,
}

/// Validates an upgrade request (RFC 6455 section 4.2.1) and builds the 101
/// response.
///
/// Checks, in this order: method `GET` (else 405 with `Allow: GET`),
/// HTTP/1.1 (else 400), exactly one `Host` (400), `Upgrade` has the token
/// `websocket` (400), `Connection` has the token `Upgrade` (400), exactly one
/// `Sec-WebSocket-Key` that is the base64 of exactly 16 bytes (400),
/// `Sec-WebSocket-Version` present once and `13` (else 426 with
/// `Sec-WebSocket-Version: 13`), the Origin allow-list (403).
///
/// The subprotocol is the first one in the client's `Sec-WebSocket-Protocol`
/// list (possibly several headers, comma lists) that the server supports,
/// compared exactly (the RFC compares subprotocol names as opaque tokens, and
/// browsers check the echoed name byte for byte); none offered or none
/// matching means no `Sec-WebSocket-Protocol` header in the response, as
/// RFC 6455 section 4.2.2 prescribes.
///
/// `Sec-WebSocket-Extensions`: with [`HandshakeConfig::compression`], the
/// first acceptable permessage-deflate offer is accepted
/// ([`crate::deflate::negotiate`]) and answered with
/// `server_no_context_takeover; client_no_context_takeover`; every other
/// extension is declined by leaving it out of the response.
pub fn accept(head: &RequestHead, config: &HandshakeConfig) -> Result<Accepted, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if head.version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    // RFC 7230 section 5.4: a request without Host, or with more than one,
    // gets 400.
    match head.headers_named("host").count() {
        0 => return Err(HandshakeError::MissingHost),
        1 => {}
        _ => return Err(HandshakeError::DuplicateHeader("Host")),
    }
    if !head.wants_websocket() {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !head.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = single_header(head, "sec-websocket-key").ok_or(HandshakeError::BadKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    match head.headers_named("sec-websocket-version").count() {
        0 => return Err(HandshakeError::UnsupportedVersion),
        1 => {}
        // Section 11.3.5: the field MUST NOT appear more than once.
        _ => return Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Version")),
    }
    if head.header("sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    if !origins_allowed(head, config.allowed_origins.as_deref()) {
        return Err(HandshakeError::OriginNotAllowed);
    }
    let subprotocol = head
        .headers_named("sec-websocket-protocol")
        .flat_map(list_elements)
        .find_map(|offered| config.subprotocols.iter().find(|s| s.as_bytes() == offered))
        .cloned();
    let deflate = if config.compression {
        crate::deflate::negotiate(head.headers_named("sec-websocket-extensions"))
    } else {
        None
    };

    let accept = accept_key(key);
    let mut response = Vec::with_capacity(160);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    response.extend_from_slice(accept.as_bytes());
    response.extend_from_slice(b"\r\n");
    if let Some(p) = &subprotocol {
        response.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        response.extend_from_slice(p.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    if let Some(d) = deflate {
        response.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        response.extend_from_slice(d.response.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"\r\n");
    Ok(Accepted {
        response,
        subprotocol,
        compression: deflate.is_some(),
    })
}

/// `Sec-WebSocket-Accept` for a key: base64 of the SHA-1 of the key followed
/// by the RFC 6455 GUID. RFC example: `"dGhlIHNhbXBsZSBub25jZQ=="` gives
/// `"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="`. The key is hashed as given (the caller
/// passes the header value without surrounding whitespace).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Why a request head was refused. Every variant is the client's fault (or
/// the client is one the server's policy refuses) and maps to one HTTP status
/// ([`HandshakeError::status`]) and a complete response
/// ([`HandshakeError::response`]) after which the server closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The client sent a head longer than the server's limit (431).
    #[error("request head larger than {max} bytes")]
    HeadTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The client sent more header lines than the server parses (431).
    #[error("more than {max} header fields")]
    TooManyHeaders {
        /// The limit, in header lines.
        max: usize,
    },
    /// The client sent bytes that are not an HTTP/1.x request head (400).
    #[error("malformed request head: {0}")]
    Malformed(String),
    /// The client upgraded with a method other than GET (405).
    #[error("a WebSocket upgrade must use GET")]
    MethodNotAllowed,
    /// The client upgraded with HTTP/1.0 (400).
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    HttpVersion,
    /// The client sent no Host header (400).
    #[error("missing Host header")]
    MissingHost,
    /// The client repeated a header that must appear once (400).
    #[error("the {0} header must appear exactly once")]
    DuplicateHeader(&'static str),
    /// The client's Upgrade header lacks the token `websocket` (400).
    #[error("the Upgrade header must contain the token websocket")]
    MissingUpgrade,
    /// The client's Connection header lacks the token `Upgrade` (400).
    #[error("the Connection header must contain the token Upgrade")]
    MissingConnectionUpgrade,
    /// The client's Sec-WebSocket-Key is missing, repeated, or not the base64
    /// of 16 bytes (400).
    #[error("Sec-WebSocket-Key must appear once and be the base64 of 16 bytes")]
    BadKey,
    /// The client speaks a WebSocket version other than 13, or sent none
    /// (426, with `Sec-WebSocket-Version: 13` telling it which one to use).
    #[error("unsupported WebSocket version: this server speaks version 13")]
    UnsupportedVersion,
    /// The client's Origin is not in the server's allow-list (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl HandshakeError {
    /// The HTTP status of the rejection.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::Malformed(_)
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::DuplicateHeader(_)
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::BadKey => 400,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginNotAllowed => 403,
        }
    }

    /// A complete HTTP/1.1 error response: status line, `Content-Type:
    /// text/plain`, `Content-Length`, `Connection: close`, the extra header
    /// the status needs (426: `Sec-WebSocket-Version: 13`; 405: `Allow:
    /// GET`), and a short body saying what was wrong.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let extra: &[(&str, &str)] = match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            HandshakeError::MethodNotAllowed => &[("Allow", "GET")],
            _ => &[],
        };
        build_response(status, reason_phrase(status), extra, &self.to_string())
    }
}

/// A complete plain error response for rejections decided by the runtime
/// (e.g. 503 when at max connections, 404 for an unknown path), with the
/// same shape as [`HandshakeError::response`]. Control characters in
/// `reason` are replaced by spaces so that it cannot end the status line
/// early; a `status` outside 100..=999 is sent as 500, since a status line
/// needs three digits.
pub fn reject_response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    build_response(status, reason, &[], body)
}

/// Formats a `Connection: close` text response.
fn build_response(status: u16, reason: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut body = body.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The standard reason phrase of the statuses this module produces.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The value of header `name` if it appears exactly once.
fn single_header<'a>(head: &'a RequestHead, name: &'a str) -> Option<&'a [u8]> {
    let mut values = head.headers_named(name);
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// True when `key` is the base64 (standard alphabet, padded) of exactly 16
/// bytes, as RFC 6455 section 4.1 requires of a client's nonce.
fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes encode to 22 characters plus "==". Checking the length first
    // also rejects 17- and 18-byte nonces, which are 24 characters too but
    // decode to more bytes (caught below).
    if key.len() != 24 {
        return false;
    }
    // 24 characters decode to at most 18 bytes.
    let mut out = [0u8; 18];
    matches!(
        base64::engine::general_purpose::STANDARD.decode_slice(key, &mut out),
        Ok(16)
    )
}

/// The non-empty elements of a comma-separated header list, without
/// surrounding whitespace (RFC 7230 section 7 `#rule`).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `value` without leading and trailing spaces and tabs (HTTP's OWS).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// Whether every `Origin` the request sent is in `allowed` (`None`: any
/// origin). Every one must be: a second, allowed Origin must not launder a
/// first one the browser actually set. Shared by the WebSocket upgrade and
/// the SSE request.
pub fn origins_allowed(head: &RequestHead, allowed: Option<&[String]>) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    head.headers_named("origin").all(|origin| {
        allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_ows_strips_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"x"), b"x");
    }

    #[test]
    fn list_elements_skips_empty_elements() {
        let v: Vec<&[u8]> = list_elements(b" , keep-alive ,,Upgrade, ").collect();
        assert_eq!(v, vec![b"keep-alive".as_slice(), b"Upgrade".as_slice()]);
    }

    #[test]
    fn reject_response_sanitizes_reason_and_status() {
        let r = reject_response(42, "Bad\r\nX-Evil: 1", "no");
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 500 Bad  X-Evil: 1\r\n"),
            "{text}"
        );
    }
}
