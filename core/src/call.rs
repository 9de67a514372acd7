//! A client's calls over plain HTTP, `POST /sse/{publish,history,presence}`
//! (docs/PROTOCOL.md "Calls over HTTP"): what a client on the SSE
//! transport, which has no connection to send commands on, sends instead
//! of the `publish`, `history` and `presence` commands. Like
//! [`crate::sse`] for the stream, pure functions over a parsed request
//! head: [`parse_call`] reads which call it is, its token and its
//! `Origin`; [`preflight`] answers a browser's CORS preflight. Whether the
//! caller may is decided by the node ([`crate::node::Node::admit_call`]):
//! the token by the rules of `connect`, then the namespace's permission.
//!
//! Cross-site requests: a token sent in the cookie goes with every
//! request the browser makes, whichever page makes it. A call is an
//! action (a publication), so it must not be made on a user's behalf by
//! another site's page: the body must be JSON (`Content-Type:
//! application/json`, which no plain HTML form can send and which makes a
//! cross-origin `fetch` ask the preflight first), and the cookie is taken
//! only from a same-site request or an origin on the allow-list
//! ([`cookie_token`], which the stream shares).
//!
//! Nothing here panics on any input.

use crate::handshake::RequestHead;
use crate::protocol::ErrorCode;
use crate::sse::{allowed_origin, bearer, cookie_token, cors, SseConfig};

/// The path every call's path starts with; the call's name follows.
pub const PATH_PREFIX: &str = "/sse/";

/// Which call a request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// `POST /sse/publish`, body `{"channel", "data"}`.
    Publish,
    /// `POST /sse/history`, body `{"channel", "since"?, "limit"?, "reverse"?}`.
    History,
    /// `POST /sse/presence`, body `{"channel"}`.
    Presence,
}

impl CallKind {
    /// The call a path names, if it names one.
    pub fn from_path(path: &str) -> Option<CallKind> {
        match path.strip_prefix(PATH_PREFIX)? {
            "publish" => Some(CallKind::Publish),
            "history" => Some(CallKind::History),
            "presence" => Some(CallKind::Presence),
            _ => None,
        }
    }

    /// The command's name (the path's last segment).
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Publish => "publish",
            CallKind::History => "history",
            CallKind::Presence => "presence",
        }
    }
}

/// A call's request, as far as its head tells.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallRequest {
    /// Which call.
    pub kind: CallKind,
    /// The connection token, if the request carries one.
    pub token: Option<String>,
    /// The request's allowed `Origin`, to name in the answer (CORS).
    pub origin: Option<String>,
}

/// Why a call was refused before its body was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A path under [`PATH_PREFIX`] that names no call.
    #[error("no call {0:?}: the calls are publish, history and presence")]
    Unknown(String),
    /// Not `POST`.
    #[error("use POST")]
    Method,
    /// An `Origin` not in the allow-list.
    #[error("origin not allowed")]
    Origin,
    /// A body that is not declared JSON.
    #[error("the body must be JSON (Content-Type: application/json)")]
    ContentType,
}

impl CallError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            CallError::Unknown(_) => 404,
            CallError::Method => 405,
            CallError::Origin => 403,
            CallError::ContentType => 415,
        }
    }

    /// The error code in the refusal's body.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Unknown(_) => ErrorCode::UnknownCommand,
            CallError::Method | CallError::ContentType => ErrorCode::BadRequest,
            CallError::Origin => ErrorCode::PermissionDenied,
        }
    }
}

/// Reads a call's head. Checks, in order: the path names a call, the
/// method (`POST`), the `Origin` (every one sent must be allowed), the
/// body's type (`application/json`, parameters allowed); the token is
/// `Authorization: Bearer`, else the token cookie ([`cookie_token`]).
/// Never from the URL: a URL ends up in logs.
pub fn parse_call(head: &RequestHead, config: &SseConfig) -> Result<CallRequest, CallError> {
    let kind =
        CallKind::from_path(&head.path).ok_or_else(|| CallError::Unknown(head.path.clone()))?;
    if head.method != "POST" {
        return Err(CallError::Method);
    }
    let origin = allowed_origin(head, config).map_err(|_| CallError::Origin)?;
    if !is_json(head.header("content-type")) {
        return Err(CallError::ContentType);
    }
    let token = bearer(head).or_else(|| cookie_token(head, config));
    Ok(CallRequest {
        kind,
        token,
        origin,
    })
}

/// Whether a `Content-Type` is `application/json` (any case, with or
/// without parameters such as `charset`).
fn is_json(value: Option<&[u8]>) -> bool {
    let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The answer to a CORS preflight of a call (`OPTIONS /sse/publish`...):
/// 204 allowing `POST` with the headers the client sends, for an allowed
/// origin; 403 for another.
pub fn preflight(head: &RequestHead, config: &SseConfig) -> Result<Vec<u8>, CallError> {
    let origin = allowed_origin(head, config).map_err(|_| CallError::Origin)?;
    let mut out = String::from(
        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Methods: POST\r\nAccess-Control-Allow-Headers: authorization, content-type\r\nAccess-Control-Max-Age: 600\r\n",
    );
    cors(&mut out, origin.as_deref());
    out.push_str("\r\n");
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: None,
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            head_len: 0,
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn each_call_is_named_by_its_path() {
        let c = SseConfig::default();
        for (path, kind) in [
            ("/sse/publish", CallKind::Publish),
            ("/sse/history", CallKind::History),
            ("/sse/presence", CallKind::Presence),
        ] {
            let r = parse_call(&head("POST", path, &[JSON]), &c).unwrap();
            assert_eq!(r.kind, kind);
            assert_eq!(format!("/sse/{}", kind.name()), path);
            assert_eq!(r.token, None);
        }
        let e = parse_call(&head("POST", "/sse/subscribe", &[JSON]), &c).unwrap_err();
        assert_eq!((e.status(), e.code()), (404, ErrorCode::UnknownCommand));
        assert_eq!(CallKind::from_path("/sse"), None);
        assert_eq!(CallKind::from_path("/sse/publish/x"), None);
    }

    #[test]
    fn only_post_with_a_json_body() {
        let c = SseConfig::default();
        let e = parse_call(&head("GET", "/sse/publish", &[JSON]), &c).unwrap_err();
        assert_eq!(e, CallError::Method);
        assert_eq!(e.status(), 405);
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let h: Vec<(&str, &str)> = ct.map(|v| ("content-type", v)).into_iter().collect();
            let e = parse_call(&head("POST", "/sse/publish", &h), &c).unwrap_err();
            assert_eq!((e.status(), e), (415, CallError::ContentType));
        }
        let h = [("content-type", "Application/JSON; charset=utf-8")];
        assert!(parse_call(&head("POST", "/sse/publish", &h), &c).is_ok());
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie_never_the_url() {
        let c = SseConfig {
            token_in_query: true,
            ..SseConfig::default()
        };
        let mut h = head(
            "POST",
            "/sse/history",
            &[JSON, ("authorization", "Bearer abc")],
        );
        assert_eq!(parse_call(&h, &c).unwrap().token.as_deref(), Some("abc"));
        h = head(
            "POST",
            "/sse/history",
            &[JSON, ("cookie", "wavecast_token=xyz")],
        );
        assert_eq!(parse_call(&h, &c).unwrap().token.as_deref(), Some("xyz"));
        h.query = Some("token=q".into());
        h.headers.retain(|(n, _)| n != "cookie");
        assert_eq!(parse_call(&h, &c).unwrap().token, None);
    }

    #[test]
    fn the_cookie_is_not_taken_from_another_site() {
        let c = SseConfig::default();
        let cookie = ("cookie", "wavecast_token=xyz");
        let from = |origin: &str, host: &str| {
            let h = head(
                "POST",
                "/sse/publish",
                &[JSON, cookie, ("origin", origin), ("host", host)],
            );
            parse_call(&h, &c).unwrap().token
        };
        // The page's own site (the port aside: proxies drop it from Host).
        assert_eq!(
            from("https://chat.example", "chat.example").as_deref(),
            Some("xyz")
        );
        assert_eq!(
            from("http://127.0.0.1:8080", "127.0.0.1").as_deref(),
            Some("xyz")
        );
        // Another site: no cookie, so the call is anonymous.
        assert_eq!(from("https://evil.example", "chat.example"), None);
        // An allow-listed origin may send it.
        let listed = SseConfig {
            allowed_origins: Some(vec!["https://app.example".into()]),
            ..SseConfig::default()
        };
        let h = head(
            "POST",
            "/sse/publish",
            &[
                JSON,
                cookie,
                ("origin", "https://app.example"),
                ("host", "api.example"),
            ],
        );
        assert_eq!(
            parse_call(&h, &listed).unwrap().token.as_deref(),
            Some("xyz")
        );
        let h = head(
            "POST",
            "/sse/publish",
            &[JSON, ("origin", "https://evil.example")],
        );
        assert_eq!(parse_call(&h, &listed).unwrap_err(), CallError::Origin);
    }

    #[test]
    fn preflight_allows_post_for_allowed_origins() {
        let listed = SseConfig {
            allowed_origins: Some(vec!["https://app.example".into()]),
            ..SseConfig::default()
        };
        let ok = preflight(
            &head(
                "OPTIONS",
                "/sse/publish",
                &[("origin", "https://app.example")],
            ),
            &listed,
        )
        .unwrap();
        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.starts_with("HTTP/1.1 204"), "{ok}");
        assert!(
            ok.contains("Access-Control-Allow-Methods: POST\r\n"),
            "{ok}"
        );
        assert!(ok.contains("content-type"), "{ok}");
        assert!(
            ok.contains("Access-Control-Allow-Origin: https://app.example\r\n"),
            "{ok}"
        );
        let no = preflight(
            &head(
                "OPTIONS",
                "/sse/publish",
                &[("origin", "https://evil.example")],
            ),
            &listed,
        );
        assert_eq!(no.unwrap_err(), CallError::Origin);
    }
}
