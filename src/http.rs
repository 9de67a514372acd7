//! A raw HTTP/1.1 client over a blocking [`TcpStream`]: a hand-written
//! [`Request`] head (so a test can send exactly the broken request it
//! means), [`HttpResponse`] and its parsing with httparse, and reading a
//! response with a deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The sample `Sec-WebSocket-Key` of RFC 6455 section 1.3.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` that RFC 6455 section 1.3 derives from
/// [`SAMPLE_KEY`]. Checking the server against the RFC's own figure keeps
/// the test independent of the server's implementation.
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An HTTP/1.1 request head written by hand, so a test can send exactly the
/// (broken) request it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/ws`.
    pub path: String,
    /// Header lines in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A valid RFC 6455 upgrade request for `path` on `addr`, with the
    /// section 1.3 sample key ([`SAMPLE_KEY`]).
    pub fn upgrade(addr: SocketAddr, path: &str) -> Request {
        Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
            headers: vec![
                ("Host".to_owned(), addr.to_string()),
                ("Upgrade".to_owned(), "websocket".to_owned()),
                ("Connection".to_owned(), "Upgrade".to_owned()),
                ("Sec-WebSocket-Key".to_owned(), SAMPLE_KEY.to_owned()),
                ("Sec-WebSocket-Version".to_owned(), "13".to_owned()),
            ],
        }
    }

    /// A plain `GET path` that asks the server to close after answering.
    pub fn get(addr: SocketAddr, path: &str) -> Request {
        Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
            headers: vec![
                ("Host".to_owned(), addr.to_string()),
                ("Connection".to_owned(), "close".to_owned()),
            ],
        }
    }

    /// Replaces the method.
    pub fn method(mut self, method: &str) -> Request {
        method.clone_into(&mut self.method);
        self
    }

    /// Sets header `name` (replacing every header of that name).
    pub fn set(self, name: &str, value: &str) -> Request {
        let mut r = self.remove(name);
        r.headers.push((name.to_owned(), value.to_owned()));
        r
    }

    /// Removes every header named `name` (case-insensitively).
    pub fn remove(mut self, name: &str) -> Request {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The request head as bytes, ending with the empty line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (n, v) in &self.headers {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A parsed HTTP response, of the raw client here and of the API client in
/// [`pubsub`](crate::pubsub) (where it is also called
/// [`pubsub::HttpReply`](crate::pubsub::HttpReply)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header lines in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body: `Content-Length` bytes, or everything until the server
    /// closed. Empty for `1xx`, `204` and `304`.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The API's error object: checks the shape `{"error": {"code": N,
    /// "message": "..."}}` with a non-empty message; returns the code.
    pub fn error_code(&self) -> u64 {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an API error needs a message: {v}"
        );
        v["error"]["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("an API error needs a code: {v}"))
    }
}

/// How many header lines a response may have.
const MAX_RESPONSE_HEADERS: usize = 64;

/// A whole response head at the start of a buffer.
pub(crate) struct Head {
    /// The response, with an empty body.
    pub(crate) response: HttpResponse,
    /// The head's length in the buffer, the empty line included.
    pub(crate) len: usize,
    /// The body's length; `None`: everything until the server closes.
    pub(crate) body: Option<usize>,
}

/// Parses the response head at the start of `buf` (with httparse); `None`
/// while it is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let invalid = |why: String| {
        let shown = &buf[..buf.len().min(256)];
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{why} in {:?}", String::from_utf8_lossy(shown)),
        )
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("bad response head ({e})"))),
    };
    let status = parsed
        .code
        .ok_or_else(|| invalid("no status code".to_owned()))?;
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_owned();
            (h.name.to_owned(), value)
        })
        .collect();
    let response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    // RFC 9112 6.3: no body for 1xx, 204 and 304; else Content-Length, or
    // (a server that sends neither it nor chunked) until the close.
    let body = if matches!(status, 100..=199 | 204 | 304) {
        Some(0)
    } else {
        match response.header("content-length") {
            Some(v) => Some(
                v.parse::<usize>()
                    .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
            ),
            None => None,
        }
    };
    Ok(Some(Head {
        response,
        len,
        body,
    }))
}

/// Parses the response at the start of `buf`: the response and how many
/// bytes of `buf` it takes, or `None` while more bytes are needed.
///
/// `closed` says no more bytes will come: then a body that runs until the
/// close is whole, and one shorter than its `Content-Length` is taken as it
/// is.
pub(crate) fn parse_response(
    buf: &[u8],
    closed: bool,
) -> io::Result<Option<(HttpResponse, usize)>> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[head.len..];
    let body_len = match head.body {
        Some(n) if rest.len() >= n => n,
        _ if closed => rest.len(),
        _ => return Ok(None),
    };
    let mut response = head.response;
    response.body = rest[..body_len].to_vec();
    Ok(Some((response, head.len + body_len)))
}

/// Reads until `buf` (which may already hold bytes) holds a whole response
/// head; returns it.
pub(crate) fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Head> {
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if read_some(stream, buf, deadline)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a whole response head: {:?}",
                    String::from_utf8_lossy(buf)
                ),
            ));
        }
    }
}

/// Reads one response from `stream` into `buf` (which may already hold
/// bytes): the head, then the body by its `Content-Length` (none for `1xx`,
/// `204` and `304`) or, without one, everything until the server closes.
/// What follows the response stays in `buf` (keep-alive connections).
///
/// A body cut short by the server's close is returned as far as it came.
pub fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<HttpResponse> {
    let head = read_head(stream, buf, deadline)?;
    let mut closed = false;
    loop {
        if let Some((response, used)) = parse_response(buf, closed)? {
            buf.drain(..used);
            return Ok(response);
        }
        match read_some(stream, buf, deadline) {
            Ok(0) => closed = true,
            Ok(_) => {}
            // The server may reset after a body that runs until the close;
            // what arrived stands.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && head.body.is_none() => {
                closed = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One read with the time left until `deadline`; appends to `buf` and
/// returns how many bytes came (0: the peer closed). Past the deadline, or
/// when nothing comes by then, the error is [`io::ErrorKind::TimedOut`].
pub fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, e))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends `request` (any bytes) on a new connection to `addr` and reads the
/// response with [`read_response`]: the head, then `Content-Length` bytes
/// of body or, without it, everything until the server closes.
///
/// A failed write is not an error by itself: a server may answer (431, 400)
/// and close before it has read everything, and the answer is what the test
/// wants to see.
pub fn http_exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect(addr)?;
    let _ = stream.write_all(request);
    read_response(&mut stream, &mut Vec::new(), deadline)
}

/// The whole response in `buf`, read until the server closed.
///
/// # Panics
///
/// If `buf` holds no complete, well-formed response.
pub fn parse_response_bytes(buf: &[u8]) -> HttpResponse {
    match parse_response(buf, true) {
        Ok(Some((r, _))) => r,
        other => panic!(
            "no complete HTTP response ({other:?}) in {:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}
