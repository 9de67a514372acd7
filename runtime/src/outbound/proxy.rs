//! Backend proxy calls: the request a node asked for (`Ask::Proxy`) as an
//! HTTP POST, and whatever happens to it as a `ProxyAnswer`.
//!
//! The body is `ProxyRequest::to_json`, with `Content-Type:
//! application/json` and the client's handshake headers named in
//! `proxy_headers` (kept per connection, only when that list is not
//! empty: [`forwarded`]). A 2xx body (at most [`MAX_ANSWER`] bytes) is
//! read by `ProxyAnswer::parse`; a timeout, a refused connection, a
//! non-2xx status or an oversized body is `Unavailable`, which the client
//! gets as error 100: a backend that is down is a temporary error, never
//! an open door.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use wavecast_core::handshake::RequestHead;
use wavecast_core::proxy::{ProxyAnswer, ProxyKind};

use super::client::HttpClient;

/// Longest backend answer read, in bytes; a longer one is `Unavailable`.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The second (since the Unix epoch) of the last failure logged as a
/// warning.
static LOGGED: LogLimit = LogLimit(AtomicU64::new(0));

/// At most one warning a second, across threads.
struct LogLimit(AtomicU64);

impl LogLimit {
    /// True for the first call in each second.
    fn first_this_second(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.0.load(Ordering::Relaxed);
        last != now
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A connection's handshake headers that the proxies forward, as sent
/// (bounded by the handshake's head limit).
pub type ForwardedHeaders = Box<[(HeaderName, HeaderValue)]>;

/// The headers of `head` named in `names` (lowercase), every occurrence in
/// order; `None` when there is none (nothing is kept for the connection).
/// A value that is not a valid header value is left out.
pub fn forwarded(head: &RequestHead, names: &[HeaderName]) -> Option<ForwardedHeaders> {
    if names.is_empty() {
        return None;
    }
    let kept: Vec<(HeaderName, HeaderValue)> = head
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let name = names
                .iter()
                .find(|n| n.as_str().eq_ignore_ascii_case(name))?;
            let value = HeaderValue::from_bytes(value).ok()?;
            Some((name.clone(), value))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.into_boxed_slice())
}

/// The POST of one proxy request.
pub fn request(
    url: &Uri,
    body: Vec<u8>,
    headers: Option<&ForwardedHeaders>,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::post(url.clone()).header(CONTENT_TYPE, "application/json");
    for (name, value) in headers.into_iter().flat_map(|h| h.iter()) {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())
}

/// Sends a proxy request and turns the outcome into the node's answer.
pub async fn call(
    client: &HttpClient,
    kind: ProxyKind,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> ProxyAnswer {
    let failed = |why: String| {
        // An operator must see that the backend fails (clients only see
        // error 100), but a reconnect storm against a backend that is down
        // must not become a storm of log lines: one a second.
        if LOGGED.first_this_second() {
            tracing::warn!(
                proxy = kind.setting(), error = %why,
                "backend proxy failed (further failures this second are logged at debug level)"
            );
        } else {
            tracing::debug!(proxy = kind.setting(), error = %why, "backend proxy failed");
        }
        ProxyAnswer::Unavailable(why)
    };
    match client.send(request, timeout, MAX_ANSWER).await {
        Ok(r) if r.status.is_success() => {
            let answer = ProxyAnswer::parse(&r.body);
            if let ProxyAnswer::Unavailable(why) = answer {
                return failed(why);
            }
            answer
        }
        Ok(r) => failed(format!("backend answered {}", r.status)),
        Err(e) => failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_headers_are_kept_with_every_occurrence() {
        let raw =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nX-Other: no\r\ncookie: b=2\r\n\r\n";
        let head = wavecast_core::handshake::parse_request(raw, 8192)
            .unwrap()
            .unwrap();
        let names = [HeaderName::from_static("cookie")];
        let kept = forwarded(&head, &names).unwrap();
        let got: Vec<_> = kept
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(got, [("cookie", "a=1"), ("cookie", "b=2")]);
        assert!(forwarded(&head, &[]).is_none());
        assert!(forwarded(&head, &[HeaderName::from_static("authorization")]).is_none());
        let r = request(
            &"http://127.0.0.1:1/p".parse().unwrap(),
            b"{}".to_vec(),
            Some(&kept),
        )
        .unwrap();
        assert_eq!(r.headers().get_all("cookie").iter().count(), 2);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
