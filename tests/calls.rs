//! Integration tests of a client's calls over HTTP (`POST
//! /sse/{publish,history,presence}`, docs/PROTOCOL.md "Calls over HTTP"),
//! what the JavaScript client's SSE transport sends instead of commands,
//! against the real binary: the answers are the bodies of the WebSocket
//! replies; the caller is who the token says (a publication names them
//! to subscribers) with a connection's rights, where `subscriber` means
//! "may subscribe"; refusals have a status and a code; the cookie is not
//! taken from another site; a body is bounded by `max_message_size`; CORS
//! for listed origins.
//!
//! Every test starts its own server (port 0). Waits are liveness bounds.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_tests::pubsub::*;
use wavecast_tests::sse::SseStream;
use wavecast_tests::Server;

/// `POST /sse/NAME` with `body` and extra header lines.
async fn call(server: &Server, name: &str, body: &Value, headers: &[(&str, &str)]) -> HttpReply {
    call_raw(
        server,
        "POST",
        name,
        body.to_string().as_bytes(),
        headers,
        true,
    )
    .await
}

async fn call_raw(
    server: &Server,
    method: &str,
    name: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    json_type: bool,
) -> HttpReply {
    let mut head = format!("{method} /sse/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if json_type {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    http(server.addr(), &request).await
}

fn ok(r: &HttpReply, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    r.json()
}

/// The answer's status and error code.
fn refusal(r: &HttpReply) -> (u16, u64) {
    (r.status, r.error_code())
}

#[tokio::test]
async fn calls_answer_as_the_websocket_replies_do() {
    let server = TestServer::start(&[]);
    let s = &server.server;
    let mut ws = server.client(Enc::Json).await;
    ws.subscribe("chat:room").await;
    // A stream on the channel: it is in presence like any subscriber.
    let mut stream = SseStream::open(server.addr(), "/sse?channel=chat%3Aroom", &[])
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    assert_eq!(stream.next_event().await.event, "open");
    for i in 1..=5u64 {
        let r = call(
            s,
            "publish",
            &json!({"channel": "chat:room", "data": {"i": i}}),
            &[],
        )
        .await;
        assert_eq!(ok(&r, "publish"), json!({"offset": i}));
    }
    // The publication reached the subscribers, in order; an anonymous
    // caller is named with an empty user and no client.
    for i in 1..=5u64 {
        let push = loop {
            let p = ws.next_push().await;
            if p["pub"].is_object() {
                break p;
            }
        };
        assert_eq!(push["pub"]["offset"], i, "{push}");
        assert_eq!(push["pub"]["data"], json!({"i": i}), "{push}");
        assert_eq!(push["pub"]["info"]["user"], "", "{push}");
        assert_eq!(push["pub"]["info"]["client"], "", "{push}");
    }
    let r = call(
        s,
        "history",
        &json!({"channel": "chat:room", "limit": 3, "reverse": true}),
        &[],
    )
    .await;
    let h = ok(&r, "history");
    let offsets: Vec<u64> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [5, 4, 3], "the newest first: {h}");
    assert_eq!(h["offset"], 5, "{h}");
    assert!(h["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{h}");
    // The same page as the command gives.
    let by_ws = ws
        .ok(
            "history",
            json!({"channel": "chat:room", "limit": 3, "reverse": true}),
        )
        .await;
    assert_eq!(h, by_ws);
    let r = call(s, "presence", &json!({"channel": "chat:room"}), &[]).await;
    let p = ok(&r, "presence");
    assert_eq!(p["clients"].as_object().map(|c| c.len()), Some(2), "{p}");
    let by_ws = ws.ok("presence", json!({"channel": "chat:room"})).await;
    assert_eq!(p, by_ws);
}

#[tokio::test]
async fn bad_calls_get_a_status_and_a_code() {
    let server = TestServer::start(&["--max-message-size", "1024"]);
    let s = &server.server;
    let publish = |data: Value| json!({"channel": "news", "data": data});
    let cases: Vec<(HttpReply, (u16, u64), &str)> = vec![
        (
            call(s, "subscribe", &json!({}), &[]).await,
            (404, 102),
            "no such call",
        ),
        (
            call_raw(s, "GET", "history", b"", &[], true).await,
            (405, 101),
            "GET",
        ),
        (
            call_raw(
                s,
                "POST",
                "publish",
                publish(json!(1)).to_string().as_bytes(),
                &[],
                false,
            )
            .await,
            (415, 101),
            "no Content-Type",
        ),
        (
            call_raw(s, "POST", "publish", b"{not json", &[], true).await,
            (400, 101),
            "bad JSON",
        ),
        (
            call(s, "publish", &json!({"channel": "news"}), &[]).await,
            (400, 101),
            "no data",
        ),
        (
            call(s, "publish", &json!({"channel": "", "data": 1}), &[]).await,
            (400, 109),
            "empty channel",
        ),
        (
            call(s, "publish", &json!({"channel": "nope:x", "data": 1}), &[]).await,
            (404, 103),
            "unknown namespace",
        ),
        (
            call(s, "publish", &json!({"channel": "ro:x", "data": 1}), &[]).await,
            (403, 104),
            "publish off",
        ),
        (
            call(s, "presence", &json!({"channel": "quiet:x"}), &[]).await,
            (409, 108),
            "presence off",
        ),
        (
            call(s, "publish", &publish(json!("x".repeat(2000))), &[]).await,
            (413, 107),
            "over max_message_size",
        ),
    ];
    for (r, expected, what) in cases {
        assert_eq!(refusal(&r), expected, "{what}: {}", r.text());
    }
    let r = call_raw(s, "GET", "history", b"", &[], true).await;
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    // Nothing was published by any of them.
    let h = server
        .api_ok("/api/history", &json!({"channel": "news"}))
        .await;
    assert_eq!(h["offset"], 0, "{h}");
}

const SECRET: &str = "calls integration test secret, 32 b";

fn token(user: &str, ttl: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": user, "exp": now + ttl, "info": {"name": "Ann"}});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

const SECURED: &str = r#"
[namespaces.team]
user_limited = true

[namespaces.closed]
allow_subscribe = "none"

[namespaces.chat]
allow_publish = "authenticated"
"#;

fn secured(extra: &[&str]) -> (Server, TempFile) {
    let config = TempFile::new("toml", SECURED);
    let path = config.path();
    let mut args = vec![
        "--token-hmac-secret",
        SECRET,
        "--config",
        &path,
        "--api-key",
        KEY,
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), config)
}

#[tokio::test]
async fn the_caller_is_who_the_token_says_with_a_connections_rights() {
    let (s, _config) = secured(&[]);
    let t = token("42", 600);
    let bearer = format!("Bearer {t}");
    let auth = [("Authorization", bearer.as_str())];
    // No token, a bad one, an expired one: 401.
    let r = call(&s, "history", &json!({"channel": "news"}), &[]).await;
    assert_eq!(refusal(&r), (401, 112), "{}", r.text());
    let r = call(
        &s,
        "history",
        &json!({"channel": "news"}),
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(refusal(&r), (401, 112), "{}", r.text());
    let old = format!("Bearer {}", token("42", -60));
    let r = call(
        &s,
        "history",
        &json!({"channel": "news"}),
        &[("Authorization", old.as_str())],
    )
    .await;
    assert_eq!(refusal(&r), (401, 111), "{}", r.text());
    // History and presence are for subscribers by default once tokens are
    // on: a user who may subscribe may read them.
    let r = call(&s, "history", &json!({"channel": "news"}), &auth).await;
    assert_eq!(ok(&r, "history")["offset"], 0);
    let r = call(&s, "presence", &json!({"channel": "news"}), &auth).await;
    ok(&r, "presence");
    // Where nobody may subscribe, nobody counts as a subscriber.
    let r = call(&s, "history", &json!({"channel": "closed:x"}), &auth).await;
    assert_eq!(refusal(&r), (403, 104), "{}", r.text());
    // Other users' channels.
    let r = call(&s, "history", &json!({"channel": "team:room#7"}), &auth).await;
    assert_eq!(refusal(&r), (403, 104), "{}", r.text());
    let r = call(&s, "history", &json!({"channel": "team:room#42"}), &auth).await;
    ok(&r, "own channel");
    // Publishing is the backend's by default once tokens are on.
    let r = call(&s, "publish", &json!({"channel": "news", "data": 1}), &auth).await;
    assert_eq!(refusal(&r), (403, 104), "{}", r.text());
    // Where authenticated users may publish, the publication names them.
    let mut ws = Client::connect(s.addr(), Enc::Json).await;
    ws.ok("connect", json!({"token": t})).await;
    ws.subscribe("chat:x").await;
    let r = call(
        &s,
        "publish",
        &json!({"channel": "chat:x", "data": "hi"}),
        &auth,
    )
    .await;
    assert_eq!(ok(&r, "publish"), json!({"offset": 1}));
    let push = ws.next_push().await;
    let info = &push["pub"]["info"];
    assert_eq!(info["user"], "42", "{push}");
    assert_eq!(info["conn_info"], json!({"name": "Ann"}), "{push}");
}

#[tokio::test]
async fn the_cookie_counts_only_on_requests_of_the_servers_own_site() {
    let (s, _config) = secured(&[]);
    let cookie = format!("wavecast_token={}", token("42", 600));
    let body = json!({"channel": "news"});
    let with = |origin: &'static str| [("Cookie", cookie.clone()), ("Origin", origin.to_owned())];
    // No Origin (not a page), or the server's own host: the cookie is the token.
    let r = call(&s, "history", &body, &[("Cookie", cookie.as_str())]).await;
    ok(&r, "no Origin");
    let h = with("http://127.0.0.1:3000");
    let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let r = call(&s, "history", &body, &h).await;
    ok(&r, "same host");
    // Another site's page: the cookie is not taken, so there is no token.
    let h = with("https://evil.example");
    let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let r = call(&s, "history", &body, &h).await;
    assert_eq!(refusal(&r), (401, 112), "{}", r.text());
}

#[tokio::test]
async fn listed_origins_get_cors_headers_and_a_preflight() {
    let (s, _config) = secured(&["--allowed-origins", "https://app.example"]);
    let bearer = format!("Bearer {}", token("42", 600));
    let from = [
        ("Authorization", bearer.as_str()),
        ("Origin", "https://app.example"),
    ];
    let r = call(&s, "history", &json!({"channel": "news"}), &from).await;
    ok(&r, "listed origin");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // An error is readable by the page too.
    let r = call(&s, "history", &json!({"channel": "closed:x"}), &from).await;
    assert_eq!(refusal(&r), (403, 104));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // Another origin: refused outright.
    let r = call(
        &s,
        "history",
        &json!({"channel": "news"}),
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refusal(&r), (403, 104), "{}", r.text());
    let r = preflight(&s, "https://app.example").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = preflight(&s, "https://evil.example").await;
    assert_eq!(r.status, 403);
}

async fn preflight(s: &Server, origin: &str) -> HttpReply {
    let head = format!(
        "OPTIONS /sse/publish HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
    );
    http(s.addr(), head.as_bytes()).await
}
