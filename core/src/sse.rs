//! The request of a Server-Sent Events stream, `GET /sse`
//! (docs/PROTOCOL.md "Server-Sent Events"), as pure functions over a
//! parsed request head, like [`crate::handshake`] for WebSockets:
//! [`parse_request`] reads the channels, where to resume them
//! (`Last-Event-ID`, else `since`), the token (`Authorization: Bearer`,
//! the token cookie, `?token=` only where enabled) and the `Origin`, and
//! refuses a bad request with a status ([`SseError`]); [`response_head`],
//! [`refusal`] and [`preflight`] are the responses. What the request asks
//! is decided by the node ([`crate::node::Node::handle_sse`]): the token,
//! the permissions, then the subscriptions.
//!
//! Nothing here panics on any input.

use crate::handshake::{origins_allowed, RequestHead};
use crate::protocol::sse::{parse_id, IdError};
use crate::protocol::{validate_channel, ChannelError, ErrorCode, StreamPosition};

/// Default of [`SseConfig::token_cookie`].
pub const TOKEN_COOKIE: &str = "wavecast_token";

/// Default of [`SseConfig::max_channels`]: an id of 32 positions stays
/// below about 1 KiB, and a reconnecting browser sends it in a header
/// within the request head's 8 KiB.
pub const MAX_CHANNELS: usize = 32;

/// The path of the endpoint.
pub const PATH: &str = "/sse";

/// Settings of the SSE endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SseConfig {
    /// Most channels of one stream (the node also holds a stream to
    /// `max_subscriptions`).
    pub max_channels: usize,
    /// The cookie that may carry the connection token.
    pub token_cookie: String,
    /// Whether `?token=` is accepted (off by default: URLs end up in
    /// logs); a request with it is refused while off.
    pub token_in_query: bool,
    /// Allowed `Origin` values, as for WebSocket handshakes (`None`: any).
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            max_channels: MAX_CHANNELS,
            token_cookie: TOKEN_COOKIE.to_owned(),
            token_in_query: false,
            allowed_origins: None,
        }
    }
}

/// A stream request, read and checked for form (not yet for permission).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SseRequest {
    /// The channels, in the request's order (the order of the ids'
    /// entries), without duplicates.
    pub channels: Vec<String>,
    /// Where to resume each channel (`None`: subscribe afresh); as long as
    /// `channels`.
    pub positions: Vec<Option<StreamPosition>>,
    /// The connection token, if the request carries one.
    pub token: Option<String>,
    /// The request's `Origin`, when it has one (and it is allowed): the
    /// answer names it for CORS.
    pub origin: Option<String>,
}

/// Why a stream request was refused before anything was decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// Not `GET`.
    #[error("use GET")]
    Method,
    /// An `Origin` not in the allow-list.
    #[error("origin not allowed")]
    Origin,
    /// The query is not valid URL-encoded UTF-8.
    #[error("the query is not valid URL-encoded UTF-8")]
    Query,
    /// No `channel` parameter.
    #[error("no channel: add ?channel=NAME")]
    NoChannel,
    /// A channel named twice.
    #[error("channel {0:?} is named twice")]
    Duplicate(String),
    /// An invalid channel name.
    #[error("channel {channel:?}: {error}")]
    Channel {
        /// The name.
        channel: String,
        /// What is wrong with it.
        error: ChannelError,
    },
    /// More channels than a stream may have.
    #[error("at most {0} channels per stream")]
    TooMany(usize),
    /// A `Last-Event-ID` or `since` that is not an id of this stream.
    #[error("{what}: {error}")]
    Position {
        /// Which one.
        what: &'static str,
        /// What is wrong with it.
        error: IdError,
    },
    /// `?token=` while the server does not take tokens in URLs.
    #[error("tokens in the URL are not accepted here (sse_token_in_query); use a cookie or the Authorization header")]
    TokenInQuery,
}

impl SseError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            SseError::Method => 405,
            SseError::Origin => 403,
            _ => 400,
        }
    }

    /// The error code in the refusal's body.
    pub fn code(&self) -> ErrorCode {
        match self {
            SseError::Method | SseError::Query | SseError::NoChannel => ErrorCode::BadRequest,
            SseError::Duplicate(_) | SseError::Position { .. } | SseError::TokenInQuery => {
                ErrorCode::BadRequest
            }
            SseError::Origin => ErrorCode::PermissionDenied,
            SseError::Channel { error, .. } => error.error_code(),
            SseError::TooMany(_) => ErrorCode::LimitExceeded,
        }
    }

    /// The channel at fault, if one is.
    pub fn channel(&self) -> Option<&str> {
        match self {
            SseError::Duplicate(c) | SseError::Channel { channel: c, .. } => Some(c),
            _ => None,
        }
    }

    /// The whole response to send before closing.
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&str, &str)] = match self {
            SseError::Method => &[("Allow", "GET, OPTIONS")],
            _ => &[],
        };
        refusal_with(
            self.status(),
            self.code(),
            &self.to_string(),
            self.channel(),
            None,
            extra,
        )
    }
}

/// Reads a stream request. Checks, in order: the method (`GET`), the
/// `Origin` (every one sent must be allowed), the query (URL-encoded
/// UTF-8), the channels (at least one, at most `max_channels`, valid
/// names, no duplicates), a `token` in the query (refused unless
/// enabled), then the positions: `Last-Event-ID` if sent (and not
/// empty), else `since`, each an id of as many entries as channels.
pub fn parse_request(head: &RequestHead, config: &SseConfig) -> Result<SseRequest, SseError> {
    if head.method != "GET" {
        return Err(SseError::Method);
    }
    let origin = allowed_origin(head, config)?;
    let mut channels: Vec<String> = Vec::new();
    let mut since = None;
    let mut query_token = None;
    for (key, value) in query_pairs(head.query.as_deref().unwrap_or(""))? {
        match key.as_str() {
            "channel" => {
                if channels.len() == config.max_channels {
                    return Err(SseError::TooMany(config.max_channels));
                }
                if let Err(error) = validate_channel(&value) {
                    return Err(SseError::Channel {
                        channel: value,
                        error,
                    });
                }
                if channels.contains(&value) {
                    return Err(SseError::Duplicate(value));
                }
                channels.push(value);
            }
            "since" => since = Some(value),
            "token" => query_token = Some(value),
            _ => {}
        }
    }
    if channels.is_empty() {
        return Err(SseError::NoChannel);
    }
    if query_token.is_some() && !config.token_in_query {
        return Err(SseError::TokenInQuery);
    }
    let last_event_id = head
        .header("last-event-id")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let positions = match (last_event_id, since) {
        (Some(id), _) => parse_id(id, channels.len()).map_err(|error| SseError::Position {
            what: "Last-Event-ID",
            error,
        })?,
        (None, Some(since)) if !since.is_empty() => {
            parse_id(&since, channels.len()).map_err(|error| SseError::Position {
                what: "since",
                error,
            })?
        }
        (None, _) => vec![None; channels.len()],
    };
    let token = bearer(head)
        .or_else(|| cookie_token(head, config))
        .or(query_token);
    Ok(SseRequest {
        channels,
        positions,
        token,
        origin,
    })
}

/// The `Origin` to name in the answer: the request's, if it sent one and
/// every `Origin` it sent is allowed.
pub(crate) fn allowed_origin(
    head: &RequestHead,
    config: &SseConfig,
) -> Result<Option<String>, SseError> {
    if !origins_allowed(head, config.allowed_origins.as_deref()) {
        return Err(SseError::Origin);
    }
    Ok(head
        .header("origin")
        .and_then(|o| std::str::from_utf8(o).ok())
        .filter(|o| o.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned))
}

/// The token of `Authorization: Bearer TOKEN` (the scheme compared
/// case-insensitively).
pub(crate) fn bearer(head: &RequestHead) -> Option<String> {
    let value = std::str::from_utf8(head.header("authorization")?).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The token cookie, if the request has it and is one that may send it:
/// the browser sends a cookie with every request to this server, from
/// whichever page, so it speaks for the user only on a request of the
/// server's own site or of an origin the operator listed (the caller has
/// checked `Origin` against `allowed_origins` already). Same site: no
/// `Origin` (a browser sends none on a same-origin `GET`; other clients
/// are not pages), or one whose host is the `Host` the request was sent
/// to. Ports are not compared: proxies commonly drop the port from `Host`,
/// and `SameSite` cookies do not tell ports apart either. A request from
/// another site is then anonymous (or refused, where tokens are required).
pub(crate) fn cookie_token(head: &RequestHead, config: &SseConfig) -> Option<String> {
    let may_send = match head.header("origin") {
        None => true,
        Some(_) if config.allowed_origins.is_some() => true,
        Some(origin) => {
            let host = head
                .header("host")
                .and_then(|h| std::str::from_utf8(h).ok());
            let origin = std::str::from_utf8(origin).ok();
            match (origin.and_then(origin_host), host.map(host_name)) {
                (Some(a), Some(b)) => !b.is_empty() && a.eq_ignore_ascii_case(b),
                _ => false,
            }
        }
    };
    may_send
        .then(|| cookie(head, &config.token_cookie))
        .flatten()
}

/// The host of an origin `scheme://host[:port]` (`None` for `null` or
/// anything that is not an origin).
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.trim().split_once("://")?;
    Some(host_name(rest)).filter(|h| !h.is_empty())
}

/// The host of `host[:port]`, an IPv6 literal with its brackets.
fn host_name(authority: &str) -> &str {
    let authority = authority.trim();
    match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(""),
    }
}

/// The value of cookie `name` (RFC 6265 `Cookie: a=1; b=2`, over one or
/// more headers), if the request has it and it is not empty.
fn cookie(head: &RequestHead, name: &str) -> Option<String> {
    head.headers_named("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// The `key=value` pairs of a query, URL-decoded (`+` is a space).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, SseError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

fn form_decode(s: &str) -> Result<String, SseError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(|h| (h as char).to_digit(16));
                let lo = bytes.next().and_then(|l| (l as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => return Err(SseError::Query),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| SseError::Query)
}

/// The CORS headers of an answer to `origin`.
pub(crate) fn cors(out: &mut String, origin: Option<&str>) {
    if let Some(origin) = origin {
        out.push_str("Access-Control-Allow-Origin: ");
        out.push_str(origin);
        out.push_str("\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
    }
}

/// The head of a stream's `200` answer: the event stream's type, no
/// caching and no proxy buffering, and `Connection: close` (the stream
/// ends with the connection), with CORS headers for a request that sent
/// an allowed `Origin`.
pub fn response_head(origin: Option<&str>) -> Vec<u8> {
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n",
    );
    cors(&mut out, origin);
    out.push_str("\r\n");
    out.into_bytes()
}

/// A refusal before the stream starts: `status` with the JSON body
/// `{"error": {"code", "message", "channel"?}}` and `Connection: close`.
pub fn refusal(
    status: u16,
    code: ErrorCode,
    message: &str,
    channel: Option<&str>,
    origin: Option<&str>,
) -> Vec<u8> {
    refusal_with(status, code, message, channel, origin, &[])
}

fn refusal_with(
    status: u16,
    code: ErrorCode,
    message: &str,
    channel: Option<&str>,
    origin: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    // By hand, for the documented key order (code, message, channel).
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let mut body = format!(
        "{{\"error\":{{\"code\":{},\"message\":{}",
        code.code(),
        string(message)
    );
    if let Some(channel) = channel {
        body.push_str(",\"channel\":");
        body.push_str(&string(channel));
    }
    body.push_str("}}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    cors(&mut out, origin);
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The answer to a CORS preflight (`OPTIONS /sse`): 204 allowing `GET`
/// with the headers a fetch-based reader sends, for an allowed origin;
/// 403 (as [`SseError::Origin`]) for another.
pub fn preflight(head: &RequestHead, config: &SseConfig) -> Vec<u8> {
    let origin = match allowed_origin(head, config) {
        Ok(origin) => origin,
        Err(e) => return e.response(),
    };
    let mut out = String::from(
        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: authorization, last-event-id, cache-control\r\nAccess-Control-Max-Age: 600\r\n",
    );
    cors(&mut out, origin.as_deref());
    out.push_str("\r\n");
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_request as parse_head;

    fn head(text: &str) -> RequestHead {
        parse_head(text.as_bytes(), 8192).unwrap().unwrap()
    }

    fn request(target: &str, headers: &str) -> Result<SseRequest, SseError> {
        let text = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        parse_request(&head(&text), &SseConfig::default())
    }

    fn pos(epoch: &str, offset: u64) -> Option<StreamPosition> {
        Some(StreamPosition {
            epoch: epoch.into(),
            offset,
        })
    }

    #[test]
    fn channels_positions_and_tokens_are_read_from_where_they_may_be() {
        let r = request("/sse?channel=news&channel=chat%3Aroom&x=1", "").unwrap();
        assert_eq!(r.channels, ["news", "chat:room"]);
        assert_eq!(r.positions, [None, None]);
        assert_eq!(r.token, None);
        let r = request("/sse?channel=a&channel=b&since=E.4,", "").unwrap();
        assert_eq!(r.positions, [pos("E", 4), None]);
        // Last-Event-ID wins over since.
        let r = request("/sse?channel=a&since=E.4", "Last-Event-ID: F.9\r\n").unwrap();
        assert_eq!(r.positions, [pos("F", 9)]);
        let r = request(
            "/sse?channel=a",
            "Cookie: x=1; wavecast_token=abc.def; y=2\r\nAuthorization: Bearer tok\r\n",
        )
        .unwrap();
        assert_eq!(r.token.as_deref(), Some("tok"), "the header wins");
        let r = request("/sse?channel=a", "Cookie: x=1; wavecast_token=abc.def\r\n").unwrap();
        assert_eq!(r.token.as_deref(), Some("abc.def"));
        let config = SseConfig {
            token_in_query: true,
            ..SseConfig::default()
        };
        let text = "GET /sse?channel=a&token=q HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request(&head(text), &config)
                .unwrap()
                .token
                .as_deref(),
            Some("q")
        );
    }

    #[test]
    fn bad_requests_get_a_status_and_a_code() {
        let cases = [
            ("/sse", "", 400, 101),
            ("/sse?channel=a&channel=a", "", 400, 101),
            ("/sse?channel=a+b", "", 400, 109),
            ("/sse?channel=%ZZ", "", 400, 101),
            ("/sse?channel=%FF", "", 400, 101),
            ("/sse?channel=a&token=t", "", 400, 101),
            ("/sse?channel=a&since=E.x", "", 400, 101),
            ("/sse?channel=a&channel=b&since=E.1", "", 400, 101),
            ("/sse?channel=a", "Last-Event-ID: E.1,F.2\r\n", 400, 101),
        ];
        for (target, headers, status, code) in cases {
            let e = request(target, headers).unwrap_err();
            assert_eq!(
                (e.status(), e.code().code()),
                (status, code),
                "{target}: {e}"
            );
            let response = String::from_utf8(e.response()).unwrap();
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{response}"
            );
            assert!(
                response.contains(&format!("{{\"error\":{{\"code\":{code},")),
                "{response}"
            );
        }
        let many: String = (0..MAX_CHANNELS + 1)
            .map(|i| format!("channel=c{i}&"))
            .collect();
        let e = request(&format!("/sse?{many}"), "").unwrap_err();
        assert_eq!(e, SseError::TooMany(MAX_CHANNELS));
        let text = "POST /sse?channel=a HTTP/1.1\r\nHost: x\r\n\r\n";
        let e = parse_request(&head(text), &SseConfig::default()).unwrap_err();
        assert_eq!(e.status(), 405);
        let e = SseError::Duplicate("a".into());
        assert!(String::from_utf8(e.response())
            .unwrap()
            .contains("\"channel\":\"a\""));
    }

    #[test]
    fn origins_are_checked_and_named_for_cors() {
        let config = SseConfig {
            allowed_origins: Some(vec!["https://app.example".into()]),
            ..SseConfig::default()
        };
        let ok = "GET /sse?channel=a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n";
        let r = parse_request(&head(ok), &config).unwrap();
        assert_eq!(r.origin.as_deref(), Some("https://app.example"));
        let text = String::from_utf8(response_head(r.origin.as_deref())).unwrap();
        assert!(text.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
        assert!(text.contains("Content-Type: text/event-stream\r\n"));
        assert!(text.contains("X-Accel-Buffering: no\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let bad = "GET /sse?channel=a HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n";
        assert_eq!(parse_request(&head(bad), &config), Err(SseError::Origin));
        let pre = "OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n";
        let text = String::from_utf8(preflight(&head(pre), &config)).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 "), "{text}");
        assert!(text.contains("authorization, last-event-id"), "{text}");
        let pre = "OPTIONS /sse HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n";
        assert!(String::from_utf8(preflight(&head(pre), &config))
            .unwrap()
            .starts_with("HTTP/1.1 403 "));
    }
}
