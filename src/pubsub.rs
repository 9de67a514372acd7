//! Helpers for the pub/sub and HTTP API integration tests (`tests/pubsub.rs`,
//! `tests/api.rs`): a server started with the test namespaces and an API
//! key, a protocol client over tokio-tungstenite that speaks JSON or
//! MessagePack, and a raw HTTP/1.1 client for the API.
//!
//! Every wait is bounded by [`T`] (or a caller's bound): a broken server
//! makes a test fail with a message, never hang.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{parse_response, HttpResponse, Server, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use wavecast_core::protocol::{decode_server_message, Encoding, Push, ServerMessage};

/// Liveness bound for anything the server should do "at once". Generous:
/// the machine is shared and the server is a debug build.
pub const T: Duration = Duration::from_secs(20);

/// The API key every test server is started with.
pub const KEY: &str = "test-key-8d1f";

/// The namespaces of the tests: defaults for channels without a namespace,
/// `chat` with join/leave, `tiny` with a 3-publication history, `ro` where
/// clients may not publish.
pub const CONFIG: &str = r#"
[channels]
history_size = 100
history_ttl = "5m"

[namespaces.chat]
presence = true
join_leave = true

[namespaces.tiny]
history_size = 3

[namespaces.ro]
allow_publish = "none"

[namespaces.quiet]
presence = false
"#;

// Close codes of docs/PROTOCOL.md (wavecast_core::protocol::close), written
// out as numbers: the tests check the documented values, not whatever the
// implementation's constants happen to be.
/// Server shutdown; reconnect.
pub const CLOSE_SHUTDOWN: u16 = 4000;
/// Heartbeat timeout; reconnect.
pub const CLOSE_HEARTBEAT: u16 = 4001;
/// Slow consumer; reconnect and recover.
pub const CLOSE_SLOW: u16 = 4002;
/// Disconnected through the API; reconnect allowed.
pub const CLOSE_DISCONNECTED: u16 = 4004;
/// Bad command; do not reconnect.
pub const CLOSE_BAD_COMMAND: u16 = 4500;
/// Disconnected through the API for good.
pub const CLOSE_FORCE_DISCONNECT: u16 = 4501;

// Error codes of error replies.
/// Malformed command.
pub const E_BAD_REQUEST: u64 = 101;
/// Unknown command.
pub const E_UNKNOWN_COMMAND: u64 = 102;
/// Unknown namespace.
pub const E_UNKNOWN_NAMESPACE: u64 = 103;
/// Permission denied (e.g. client publish off).
pub const E_PERMISSION_DENIED: u64 = 104;
/// Already subscribed.
pub const E_ALREADY_SUBSCRIBED: u64 = 105;
/// Not subscribed.
pub const E_NOT_SUBSCRIBED: u64 = 106;
/// Not available (e.g. presence off in the namespace).
pub const E_NOT_AVAILABLE: u64 = 108;
/// Bad channel name.
pub const E_BAD_CHANNEL: u64 = 109;

pub use crate::TempFile;

/// A server with [`CONFIG`] and [`KEY`]; the config file lives as long as
/// the server.
#[derive(Debug)]
pub struct TestServer {
    /// The server process (declared first: dropped, i.e. killed, first).
    pub server: Server,
    _config: TempFile,
}

impl TestServer {
    /// `wavecast serve --api-key KEY --config CONFIG EXTRA...`, with the
    /// command and publication rate limits off unless `extra` sets one:
    /// the tests of other features publish faster from one connection than
    /// a real client's default allowance (the limits have their own tests).
    /// The ping allowance stays at the server's default (no test of another
    /// feature pings faster than a client library would).
    pub fn start(extra: &[&str]) -> TestServer {
        let config = TempFile::new("toml", CONFIG);
        let path = config.path();
        let mut args = vec!["--api-key", KEY, "--config", path.as_str()];
        let sets_a_rate = |a: &&str| {
            a.starts_with("--client-command-rate") || a.starts_with("--client-publish-rate")
        };
        if !extra.iter().any(sets_a_rate) {
            args.extend_from_slice(&["--client-command-rate", "0", "--client-publish-rate", "0"]);
        }
        args.extend_from_slice(extra);
        TestServer {
            server: Server::start(&args),
            _config: config,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A protocol client on `/ws`.
    pub async fn client(&self, enc: Enc) -> Client {
        Client::connect(self.addr(), enc).await
    }

    /// `POST path` with the right key; panics unless the answer is 200 with
    /// a JSON body, which it returns.
    pub async fn api_ok(&self, path: &str, body: &Value) -> Value {
        let r = api(self.addr(), Some(KEY), path, body.to_string().as_bytes()).await;
        assert_eq!(
            r.status,
            200,
            "POST {path} {body} answered {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// Publishes through the API; returns the offset, checking that the
    /// answer also names an epoch.
    pub async fn api_publish(&self, channel: &str, data: &Value) -> u64 {
        let r = self
            .api_ok("/api/publish", &json!({"channel": channel, "data": data}))
            .await;
        assert!(r["epoch"].is_string(), "publish answer without epoch: {r}");
        r["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish answer without offset: {r}"))
    }

    /// The client ids in the channel's presence, through the API.
    pub async fn api_presence(&self, channel: &str) -> Vec<String> {
        let r = self
            .api_ok("/api/presence", &json!({"channel": channel}))
            .await;
        client_ids(&r)
    }
}

/// The users in a channel's presence through the API (with `key`),
/// sorted; an anonymous client counts as `""`.
pub async fn presence_users(addr: SocketAddr, key: &str, channel: &str) -> Vec<String> {
    let body = json!({"channel": channel}).to_string();
    let r = api(addr, Some(key), "/api/presence", body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut users: Vec<String> = r.json()["clients"]
        .as_object()
        .expect("presence lists clients")
        .values()
        .map(|c| c["user"].as_str().unwrap_or("").to_owned())
        .collect();
    users.sort();
    users
}

/// The keys of `clients` in a presence reply (API or protocol), checking
/// that each entry names itself.
pub fn client_ids(presence: &Value) -> Vec<String> {
    let clients = presence["clients"]
        .as_object()
        .unwrap_or_else(|| panic!("presence without a clients object: {presence}"));
    for (id, entry) in clients {
        assert_eq!(
            entry["client"].as_str(),
            Some(id.as_str()),
            "presence entry under {id} names another client: {entry}"
        );
        assert!(
            entry["user"].is_string(),
            "presence entry without user: {entry}"
        );
    }
    clients.keys().cloned().collect()
}

// ---------------------------------------------------------------------------
// Protocol client

/// The encoding a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    /// No subprotocol: JSON in text frames.
    Json,
    /// `wavecast.msgpack`: MessagePack in binary frames.
    MsgPack,
}

/// A pub/sub client: sends commands with fresh ids, matches replies by id
/// and keeps the pushes that arrive meanwhile for [`Client::next_push`].
///
/// Every message from the server is decoded twice: as a generic value,
/// which the tests' assertions read (an oracle independent of the core),
/// and by the core's client-side decoder
/// ([`decode_server_message`]), which sorts replies from pushes; a message
/// the core's decoder refuses fails the test.
pub struct Client {
    ws: Ws,
    enc: Enc,
    next_id: u64,
    pushes: VecDeque<(Value, Push)>,
}

impl Client {
    /// Connects to `/ws` in `enc`.
    pub async fn connect(addr: SocketAddr, enc: Enc) -> Client {
        Client::connect_with_headers(addr, enc, &[]).await
    }

    /// Connects to `/ws` in `enc`, sending `headers` (name, value) with
    /// the handshake request (a cookie, say).
    pub async fn connect_with_headers(
        addr: SocketAddr,
        enc: Enc,
        headers: &[(&'static str, &str)],
    ) -> Client {
        let url = format!("ws://{addr}/ws");
        let mut req = url.as_str().into_client_request().expect("valid URL");
        for (name, value) in headers {
            req.headers_mut().append(
                *name,
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        if enc == Enc::MsgPack {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("wavecast.msgpack"),
            );
        }
        let (ws, resp) = match tokio::time::timeout(T, tokio_tungstenite::connect_async(req)).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => panic!("cannot connect to {url}: {e}"),
            Err(_) => panic!("no handshake answer from {url} within {T:?}"),
        };
        if enc == Enc::MsgPack {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("wavecast.msgpack"),
                "the server must select the msgpack subprotocol"
            );
        }
        Client {
            ws,
            enc,
            next_id: 1,
            pushes: VecDeque::new(),
        }
    }

    /// Sends one message in the connection's encoding.
    pub async fn send(&mut self, v: &Value) {
        let msg = match self.enc {
            Enc::Json => Message::text(v.to_string()),
            Enc::MsgPack => Message::binary(rmp_serde::to_vec(v).expect("encode msgpack")),
        };
        self.send_message(msg).await;
    }

    /// Sends a message as it is (e.g. of the wrong frame type).
    pub async fn send_message(&mut self, msg: Message) {
        tokio::time::timeout(T, self.ws.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// The next message from the server, decoded (pings and pongs are
    /// skipped; tokio-tungstenite answers pings).
    ///
    /// # Panics
    ///
    /// On a timeout, a close, a frame type that is not the encoding's, or
    /// bytes that do not decode.
    pub async fn recv(&mut self, timeout: Duration) -> Value {
        self.recv_decoded(timeout).await.0
    }

    /// The next message from the server as a generic value and as the
    /// core's client side decodes it (see [`Client`]).
    pub async fn recv_decoded(&mut self, timeout: Duration) -> (Value, ServerMessage) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message from the server within {timeout:?}"));
            let (value, bytes, encoding) = match (self.enc, next) {
                (_, Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                (Enc::Json, Some(Ok(Message::Text(t)))) => {
                    let value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server sent bad JSON {t:?}: {e}"));
                    (value, t.as_bytes().to_vec(), Encoding::Json)
                }
                (Enc::MsgPack, Some(Ok(Message::Binary(b)))) => {
                    let value = rmp_serde::from_slice::<Value>(&b)
                        .unwrap_or_else(|e| panic!("server sent bad MessagePack {b:?}: {e}"));
                    (value, b.to_vec(), Encoding::MsgPack)
                }
                (enc, Some(Ok(m))) => panic!("unexpected message on a {enc:?} connection: {m:?}"),
                (_, Some(Err(e))) => panic!("websocket error: {e}"),
                (_, None) => panic!("the server ended the connection"),
            };
            let decoded = decode_server_message(encoding, &bytes)
                .unwrap_or_else(|e| panic!("the core's client side refuses {value}: {e}"));
            return (value, decoded);
        }
    }

    /// Sends `{"id": N, name: body}` and returns the whole reply (with
    /// `error` or `name` in it); pushes meanwhile are kept.
    pub async fn command(&mut self, name: &str, body: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, name: body})).await;
        self.reply_to(id).await
    }

    /// Reads until the reply to `id` (keeping pushes).
    pub async fn reply_to(&mut self, id: u64) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_decoded(left).await {
                (v, ServerMessage::Push(p)) => self.pushes.push_back((v, p)),
                (v, ServerMessage::Reply { id: got, .. }) => {
                    assert_eq!(got, id, "expected the reply to command {id}, got {v}");
                    return v;
                }
            }
        }
    }

    /// A command that must succeed: returns the reply's body.
    pub async fn ok(&mut self, name: &str, body: Value) -> Value {
        let r = self.command(name, body.clone()).await;
        assert!(
            r.get("error").is_none() && r.get(name).is_some(),
            "{name} {body} failed: {r}"
        );
        r[name].clone()
    }

    /// A command that must fail: returns the error code (checking that the
    /// message is a non-empty string).
    pub async fn err(&mut self, name: &str, body: Value) -> u64 {
        let r = self.command(name, body.clone()).await;
        let e = &r["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name} {body} should fail with an error reply, got {r}"
        );
        assert!(
            r.get(name).is_none(),
            "an error reply carries no result: {r}"
        );
        e["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error reply without a code: {r}"))
    }

    /// Subscribes; returns the reply body (`epoch`, `offset`, ...).
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let r = self.ok("subscribe", json!({"channel": channel})).await;
        assert!(r["epoch"].is_string(), "subscribe reply without epoch: {r}");
        assert!(r["offset"].is_u64(), "subscribe reply without offset: {r}");
        r
    }

    /// Publishes; returns the offset of the reply.
    pub async fn publish(&mut self, channel: &str, data: &Value) -> u64 {
        let r = self
            .ok("publish", json!({"channel": channel, "data": data}))
            .await;
        r["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("publish reply without offset: {r}"))
    }

    /// The client ids of the channel's presence.
    pub async fn presence(&mut self, channel: &str) -> Vec<String> {
        let r = self.ok("presence", json!({"channel": channel})).await;
        client_ids(&r)
    }

    /// The next push (its `push` object), kept or new.
    ///
    /// # Panics
    ///
    /// On a reply (no command is outstanding), a timeout or a close.
    pub async fn next_push(&mut self) -> Value {
        self.next_push_decoded().await.0
    }

    /// The next push as a value (its `push` object) and as the core
    /// decodes it.
    pub async fn next_push_decoded(&mut self) -> (Value, Push) {
        if let Some((v, p)) = self.pushes.pop_front() {
            return (v["push"].clone(), p);
        }
        match self.recv_decoded(T).await {
            (v, ServerMessage::Push(p)) => (v["push"].clone(), p),
            (v, ServerMessage::Reply { .. }) => panic!("expected a push, got {v}"),
        }
    }

    /// The next push, which must be a publication on `channel`: its offset
    /// and data.
    pub async fn next_pub(&mut self, channel: &str) -> (u64, Value) {
        match self.next_push_decoded().await {
            (
                p,
                Push::Pub {
                    channel: got,
                    publication,
                },
            ) if got == channel => {
                assert_eq!(p["pub"]["offset"].as_u64(), Some(publication.offset), "{p}");
                // The data as the generic decoder read it: the tests compare
                // it with what they published, independently of the core.
                (publication.offset, p["pub"]["data"].clone())
            }
            (p, _) => panic!("expected a publication on {channel}, got {p}"),
        }
    }

    /// Reads until the server's close frame (other messages are ignored)
    /// and returns its code; `None` if the connection ended without one.
    pub async fn close_code(mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close from the server within {T:?}"));
            match next {
                Some(Ok(Message::Close(f))) => {
                    let code = f.map(|f| u16::from(f.code));
                    // Let tokio-tungstenite send its reply and see the end.
                    while let Ok(Some(Ok(_))) =
                        tokio::time::timeout_at(deadline, self.ws.next()).await
                    {
                    }
                    return code;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes the connection normally (1000) and waits for the end.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(T, self.ws.close(None)).await;
        let deadline = tokio::time::Instant::now() + T;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// An HTTP response of the API: the crate's one response type, with
/// [`HttpResponse::text`], [`HttpResponse::json`] and
/// [`HttpResponse::error_code`] for API bodies.
pub type HttpReply = HttpResponse;

/// The request bytes of `method path` with `body` (JSON), `Connection:
/// close`, and the key if given.
pub fn request_bytes(method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: apikey {k}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `POST path` with a JSON body on a new connection.
pub async fn api(addr: SocketAddr, key: Option<&str>, path: &str, body: &[u8]) -> HttpReply {
    http(addr, &request_bytes("POST", path, key, body)).await
}

/// Sends request bytes on a new connection and reads the answer to the
/// end. The request is written while the answer is read, so a server that
/// answers before it has read everything (413) cannot deadlock the test;
/// a failed write is not an error by itself.
pub async fn http(addr: SocketAddr, request: &[u8]) -> HttpReply {
    let stream = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect to the server");
    let (mut rd, mut wr) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        // Keep the write half open until the answer is read: a shutdown
        // here could make the server drop a keep-alive connection early.
        wr
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(T, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after the answer (unread request bytes) leaves
                // what arrived standing.
                Err(_) => break,
            }
            if whole_response(&buf).is_some() {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no complete HTTP answer within {T:?}");
    let _ = writer.await;
    match whole_response(&buf) {
        Some((r, _)) => r,
        None => panic!(
            "incomplete HTTP answer: {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

/// The whole response at the start of `buf` (its body by
/// `Content-Length`) and its length there; `None` while it is incomplete.
///
/// # Panics
///
/// If the response is malformed.
fn whole_response(buf: &[u8]) -> Option<(HttpReply, usize)> {
    parse_response(buf, false).unwrap_or_else(|e| panic!("malformed HTTP answer: {e}"))
}

/// A keep-alive HTTP connection for many API calls in a row.
pub struct ApiConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ApiConn {
    /// Opens a connection.
    pub async fn open(addr: SocketAddr) -> ApiConn {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect to the server");
        ApiConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// `POST path` with the key; the answer must be 200 with JSON.
    pub async fn post_ok(&mut self, path: &str, body: &Value) -> Value {
        let body_bytes = body.to_string().into_bytes();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body_bytes.len()
        )
        .into_bytes();
        req.extend_from_slice(&body_bytes);
        tokio::time::timeout(T, self.stream.write_all(&req))
            .await
            .expect("write timed out")
            .expect("write the request");
        let reply = tokio::time::timeout(T, async {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                if let Some((r, used)) = whole_response(&self.buf) {
                    self.buf.drain(..used);
                    return r;
                }
                let n = self.stream.read(&mut chunk).await.expect("read the answer");
                assert!(n > 0, "the server closed a keep-alive API connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to POST {path} within {T:?}"));
        assert_eq!(
            reply.status,
            200,
            "POST {path} {body} answered {} {}",
            reply.status,
            reply.text()
        );
        reply.json()
    }
}

/// Polls `probe` until it returns `Some`, for at most `bound`; panics with
/// `what` otherwise. For state the server updates asynchronously (presence
/// after a disconnect): the bound is a liveness limit, not a timing claim.
pub async fn eventually<F, Fut, R>(bound: Duration, what: &str, mut probe: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(r) = probe().await {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {bound:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
