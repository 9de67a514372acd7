//! Integration tests of the Server-Sent Events endpoint (`GET /sse`,
//! docs/PROTOCOL.md "Server-Sent Events") against the real binary, read
//! by a raw HTTP client as a browser's `EventSource` reads it: publications
//! made through the HTTP API arrive as `pub` events with the stream's
//! positions in their ids; reconnecting with `Last-Event-ID` resumes every
//! channel exactly (also across a server restart, with Redis); a position
//! history no longer holds gets a `gap` event; tokens by cookie or header
//! (by URL only where enabled), 401 without, 403 for a forbidden channel;
//! a stream that does not read is cut off while the others keep
//! receiving; heartbeat comments, shutdown's `close` event, and a stream
//! asked for on an HTTP keep-alive connection.
//!
//! Every test starts its own server (port 0). Waits are liveness bounds.
//! Needs the binary (`cargo build -p wavecast`) and, for the restart test,
//! `redis-server` on the PATH (scripts/test installs it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wavecast_tests::pubsub::*;
use wavecast_tests::redis::Redis;
use wavecast_tests::sse::{pubs, Event, SseStream};
use wavecast_tests::Server;

async fn stream(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> SseStream {
    match SseStream::open(server.addr(), target, headers).await {
        Ok(s) => s,
        Err(r) => panic!("GET {target}: {} {}", r.status, r.body),
    }
}

/// The stream's `open` event, checked for its shape.
async fn opened(s: &mut SseStream) -> Event {
    let ev = s.next_event().await;
    assert_eq!(ev.event, "open", "{ev:?}");
    assert!(ev.id.is_some(), "{ev:?}");
    assert!(ev.data["client"].is_string(), "{ev:?}");
    ev
}

/// The next `n` events but `join`/`leave` (namespaces with join/leave
/// on, `chat`, show a stream's own join), which must all be `pub` events.
async fn next_pubs(s: &mut SseStream, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = s.next_event().await;
        if ev.event == "join" || ev.event == "leave" {
            continue;
        }
        assert_eq!(ev.event, "pub", "{ev:?}");
        out.push(ev);
    }
    out
}

/// Waits until the server's backbone is up (`/readyz` 200): a stream
/// asked for before gets `close` 1013 and comes back, as a browser does.
async fn ready(server: &TestServer) {
    eventually(T, "the server is ready", || async {
        let r = http(server.addr(), &request_bytes("GET", "/readyz", None, b"")).await;
        (r.status == 200).then_some(())
    })
    .await;
}

async fn publish_n(server: &TestServer, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let offset = server.api_publish(channel, &json!({"n": i})).await;
        assert_eq!(offset, i, "{channel}");
    }
}

#[tokio::test]
async fn a_stream_gets_api_publications_in_order_with_positions_and_heartbeats() {
    let server = TestServer::start(&["--heartbeat-interval", "1s"]);
    let mut s = stream(&server, "/sse?channel=news&channel=chat%3Aroom", &[]).await;
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("cache-control"), Some("no-cache"));
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    let open = opened(&mut s).await;
    let retry = open.retry.expect("a retry on open");
    assert!(
        (1000..=3000).contains(&retry),
        "randomised around 2 s: {retry}"
    );
    let e_news = open.data["channels"]["news"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let e_room = open.data["channels"]["chat:room"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(open.id.as_deref(), Some(&*format!("{e_news}.0,{e_room}.0")));

    server.api_publish("news", &json!({"text": "a"})).await;
    server.api_publish("chat:room", &json!({"text": "b"})).await;
    server.api_publish("news", &json!({"text": "c"})).await;
    let evs = next_pubs(&mut s, 3).await;
    assert_eq!(
        pubs(&evs),
        [
            ("news".into(), 1),
            ("chat:room".into(), 1),
            ("news".into(), 2)
        ]
    );
    assert_eq!(
        evs[0].data,
        json!({"channel": "news", "offset": 1, "data": {"text": "a"}})
    );
    let ids: Vec<_> = evs.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        [
            format!("{e_news}.1,{e_room}.0"),
            format!("{e_news}.1,{e_room}.1"),
            format!("{e_news}.2,{e_room}.1"),
        ]
    );
    // A comment line every heartbeat interval.
    let mut comments = 0;
    while comments < 2 {
        let ev = s.next_within(Duration::from_secs(5)).await.expect("open");
        assert_eq!(
            ev.event, ":",
            "only comments while nothing is published: {ev:?}"
        );
        comments += 1;
    }
    // The stream is a subscriber: it shows in presence.
    assert_eq!(server.api_presence("news").await.len(), 1);
    // Shutdown ends it with a close event.
    server.server.signal(libc::SIGTERM);
    let rest = s.until_end(T).await;
    let closes: Vec<_> = rest.iter().filter(|e| e.event == "close").collect();
    assert_eq!(closes.len(), 1, "{rest:?}");
    assert_eq!(closes[0].data["code"], CLOSE_SHUTDOWN);
}

#[tokio::test]
async fn reconnecting_with_the_last_event_id_resumes_exactly() {
    let server = TestServer::start(&[]);
    // A channel with history keeps its epoch while nobody listens (one
    // with none is dropped when idle, and comes back with a new epoch: a
    // `gap` on resuming it).
    server.api_publish("other", &json!(0)).await;
    let mut s = stream(&server, "/sse?channel=news&channel=other", &[]).await;
    opened(&mut s).await;
    publish_n(&server, "news", 1..=3).await;
    let mut seen = pubs(&next_pubs(&mut s, 3).await);
    let mut last = s.last_id.clone().unwrap();
    drop(s);
    // Several cuts, each with publications while away.
    for round in 0..3u64 {
        let from = 4 + round * 3;
        publish_n(&server, "news", from..=from + 2).await;
        let mut s = stream(
            &server,
            "/sse?channel=news&channel=other",
            &[("Last-Event-ID", &last)],
        )
        .await;
        let open = opened(&mut s).await;
        assert_eq!(
            open.id.as_deref(),
            Some(&*last),
            "resumed from where it was"
        );
        assert_eq!(open.data["channels"]["news"]["recovered"], true);
        seen.extend(pubs(&next_pubs(&mut s, 3).await));
        last = s.last_id.clone().unwrap();
    }
    let want: Vec<_> = (1..=12).map(|i| ("news".to_owned(), i)).collect();
    assert_eq!(seen, want, "every offset once, in order");
    // `since` does the same for a first request.
    let since = last.replace(".12,", ".10,");
    let target = format!("/sse?channel=news&channel=other&since={since}");
    let mut s = stream(&server, &target, &[]).await;
    opened(&mut s).await;
    assert_eq!(
        pubs(&next_pubs(&mut s, 2).await),
        [("news".into(), 11), ("news".into(), 12)]
    );
    server.api_publish("news", &json!(13)).await;
    assert_eq!(
        pubs(&next_pubs(&mut s, 1).await),
        [("news".into(), 13)],
        "then live"
    );
}

#[tokio::test]
async fn a_position_history_no_longer_holds_gets_a_gap_event() {
    let server = TestServer::start(&[]);
    let mut s = stream(&server, "/sse?channel=tiny:a", &[]).await;
    opened(&mut s).await;
    publish_n(&server, "tiny:a", 1..=2).await;
    next_pubs(&mut s, 2).await;
    let last = s.last_id.clone().unwrap();
    let epoch = last.split('.').next().unwrap().to_owned();
    drop(s);
    // `tiny` keeps 3 publications: 3..10 went by, 3..7 are gone.
    publish_n(&server, "tiny:a", 3..=10).await;
    let mut s = stream(&server, "/sse?channel=tiny:a", &[("Last-Event-ID", &last)]).await;
    let open = opened(&mut s).await;
    assert_eq!(open.data["channels"]["tiny:a"]["recovered"], false);
    let gap = s.next_event().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(
        gap.data,
        json!({"channel": "tiny:a", "epoch": epoch, "offset": 10, "reason": "history expired"})
    );
    assert_eq!(gap.id.as_deref(), Some(&*format!("{epoch}.10")));
    server.api_publish("tiny:a", &json!(11)).await;
    assert_eq!(pubs(&next_pubs(&mut s, 1).await), [("tiny:a".into(), 11)]);
    // A position of another epoch.
    let mut s = stream(&server, "/sse?channel=tiny:a&since=old.3", &[]).await;
    opened(&mut s).await;
    let gap = s.next_event().await;
    assert_eq!(
        (gap.event.as_str(), &gap.data["reason"]),
        ("gap", &json!("epoch changed"))
    );
}

/// A request (target, headers) and the status and error code it gets.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, u64);
/// The same with headers built by the test.
type OwnedCase<'a> = (&'a str, Vec<(&'a str, String)>, u16, u64);

#[tokio::test]
async fn bad_requests_are_refused_with_their_status_before_any_stream() {
    let server = TestServer::start(&["--sse-max-channels", "2"]);
    let cases: [Case<'_>; 7] = [
        ("/sse", &[], 400, 101),
        ("/sse?channel=a&channel=a", &[], 400, 101),
        ("/sse?channel=a&channel=b&channel=c", &[], 400, 107),
        ("/sse?channel=a&since=nope", &[], 400, 101),
        ("/sse?channel=a", &[("Last-Event-ID", "e.1,f.2")], 400, 101),
        ("/sse?channel=a&token=abc", &[], 400, 101),
        ("/sse?channel=nope:a", &[], 404, 103),
    ];
    for (target, headers, status, code) in cases {
        let r = SseStream::open(server.addr(), target, headers)
            .await
            .err()
            .unwrap_or_else(|| panic!("{target} was not refused"));
        assert_eq!(r.status, status, "{target}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{target}: {}", r.body);
    }
    let r = SseStream::open(server.addr(), "/sse?channel=nope:a", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        r.json()["error"]["channel"],
        "nope:a",
        "the refused channel is named"
    );
    let r = http(
        server.addr(),
        &request_bytes("POST", "/sse?channel=a", None, b""),
    )
    .await;
    assert_eq!(r.status, 405);
    // Nothing stayed behind.
    let info = server.api_ok("/api/info", &json!({})).await;
    assert_eq!(info["connections"], 0, "{info}");
}

const SECRET: &str = "sse integration test secret, 32 bytes";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(user: &str, ttl: i64) -> String {
    let claims = json!({"sub": user, "exp": unix_now() as i64 + ttl});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

const AUTH_CONFIG: &str = r#"
[namespaces.team]
user_limited = true

[namespaces.closed]
allow_subscribe = "none"
"#;

fn secured(extra: &[&str]) -> (Server, TempFile) {
    let config = TempFile::new("toml", AUTH_CONFIG);
    let path = config.path();
    let mut args = vec![
        "--token-hmac-secret",
        SECRET,
        "--config",
        &path,
        "--api-key",
        KEY,
        "--refresh-grace",
        "1s",
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), config)
}

#[tokio::test]
async fn tokens_come_by_cookie_or_header_and_by_url_only_where_enabled() {
    let (server, _config) = secured(&[]);
    let t = token("42", 600);
    let cookie = format!("theme=dark; wavecast_token={t}");
    let bearer = format!("Bearer {t}");
    let refused: [OwnedCase<'_>; 5] = [
        ("/sse?channel=news", vec![], 401, 112),
        (
            "/sse?channel=news",
            vec![("Authorization", "Bearer nope".into())],
            401,
            112,
        ),
        (
            "/sse?channel=news",
            vec![("Cookie", format!("wavecast_token={}", token("42", -60)))],
            401,
            111,
        ),
        (&*format!("/sse?channel=news&token={t}"), vec![], 400, 101),
        (
            "/sse?channel=news&channel=team:room%237",
            vec![("Cookie", cookie.clone())],
            403,
            104,
        ),
    ];
    for (target, headers, status, code) in refused {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = SseStream::open(server.addr(), target, &headers)
            .await
            .err()
            .expect("refused");
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_u64()),
            (status, Some(code)),
            "{target}: {}",
            r.body
        );
    }
    let r = SseStream::open(
        server.addr(),
        "/sse?channel=closed:x",
        &[("Authorization", bearer.as_str())],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (r.status, &r.json()["error"]["channel"]),
        (403, &json!("closed:x"))
    );
    for headers in [
        [("Cookie", cookie.as_str())],
        [("Authorization", bearer.as_str())],
    ] {
        let mut s = SseStream::open(
            server.addr(),
            "/sse?channel=news&channel=team:room%2342",
            &headers,
        )
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
        let open = opened(&mut s).await;
        assert_eq!(open.data["user"], "42");
        assert_eq!(open.data["expires"], true);
    }
    // Where tokens in URLs are enabled.
    let (server, _config2) = secured(&["--sse-token-in-query", "true"]);
    let target = format!("/sse?channel=news&token={t}");
    let mut s = SseStream::open(server.addr(), &target, &[])
        .await
        .unwrap_or_else(|r| panic!("{}", r.body));
    assert_eq!(opened(&mut s).await.data["user"], "42");
}

#[tokio::test]
async fn the_cookie_is_not_taken_from_another_sites_page() {
    let (server, _config) = secured(&[]);
    let cookie = format!("wavecast_token={}", token("42", 600));
    let open = |origin: &'static str| {
        let cookie = cookie.clone();
        let addr = server.addr();
        async move {
            // (The reader sends `Host: test`.)
            let headers = [("Cookie", cookie.as_str()), ("Origin", origin)];
            SseStream::open(addr, "/sse?channel=news", &headers).await
        }
    };
    // A page of the server's own host (any port) reads the stream as the user.
    let mut s = open("http://test:5173")
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    assert_eq!(opened(&mut s).await.data["user"], "42");
    // Another site's page does not: the stream is not the user's (401 here,
    // where a token is needed).
    let r = open("https://evil.example").await.err().expect("refused");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_u64()),
        (401, Some(112)),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires_and_the_grace_passes() {
    let (server, _config) = secured(&[]);
    let cookie = format!("wavecast_token={}", token("42", 2));
    let mut s = SseStream::open(
        server.addr(),
        "/sse?channel=news",
        &[("Cookie", cookie.as_str())],
    )
    .await
    .unwrap_or_else(|r| panic!("{}", r.body));
    opened(&mut s).await;
    let rest = s.until_end(Duration::from_secs(15)).await;
    let last = rest
        .iter()
        .rev()
        .find(|e| e.event != ":")
        .expect("a close event");
    assert_eq!(last.event, "close");
    assert_eq!(last.data, json!({"code": 4005, "reason": "token expired"}));
}

#[tokio::test]
async fn a_stream_that_does_not_read_is_cut_off_while_others_keep_receiving() {
    let server = TestServer::start(&["--max-queued-bytes", "65536"]);
    let mut reader = stream(&server, "/sse?channel=news", &[]).await;
    opened(&mut reader).await;
    // A client that asks and never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr()).await.unwrap();
    stalled
        .write_all(b"GET /sse?channel=news HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    eventually(T, "both streams in presence", || async {
        (server.api_presence("news").await.len() == 2).then_some(())
    })
    .await;
    let big = "x".repeat(32 * 1024);
    let mut n = 0;
    let mut cut = false;
    while n < 400 && !cut {
        n += 1;
        server.api_publish("news", &json!(big)).await;
        let ev = reader.next_event().await;
        assert_eq!(
            ev.data["offset"], n,
            "the reader gets every publication in order"
        );
        if n % 20 == 0 {
            cut = server.api_presence("news").await.len() == 1;
        }
    }
    assert!(
        cut,
        "the stream that does not read was cut off after {n} publications"
    );
    // What it finally reads ends, without every publication.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(T, stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "its connection ends");
    assert!(
        rest.len() < (n as usize) * big.len(),
        "its queue was dropped"
    );
    server.api_publish("news", &json!("after")).await;
    assert_eq!(reader.next_event().await.data["data"], "after");
}

#[tokio::test]
async fn a_stream_asked_on_a_keep_alive_connection_is_served_like_a_fresh_one() {
    let server = TestServer::start(&[]);
    let mut conn = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).ends_with("ok\n") {
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(T, conn.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "healthz answered");
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut s = SseStream::open_on(
        conn,
        "/sse?channel=news",
        &[("Origin", "https://app.example")],
    )
    .await
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    assert_eq!(
        s.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    opened(&mut s).await;
    server.api_publish("news", &json!(1)).await;
    assert_eq!(pubs(&next_pubs(&mut s, 1).await), [("news".into(), 1)]);
}

#[tokio::test]
async fn with_redis_a_stream_resumes_exactly_across_a_server_restart() {
    let redis = Redis::start();
    let url = redis.url();
    let publisher = TestServer::start(&["--redis", &url]);
    let first = TestServer::start(&["--redis", &url]);
    ready(&publisher).await;
    ready(&first).await;
    publisher.api_publish("chat:x", &json!(0)).await;
    let mut s = stream(&first, "/sse?channel=news&channel=chat:x", &[]).await;
    opened(&mut s).await;
    publish_n(&publisher, "news", 1..=5).await;
    let mut seen = pubs(&next_pubs(&mut s, 5).await);
    let last = s.last_id.clone().unwrap();
    // The stream's server dies; publications go on elsewhere.
    drop(first);
    assert!(s.until_end(T).await.iter().all(|e| e.event == ":"));
    publish_n(&publisher, "news", 6..=9).await;
    let second = TestServer::start(&["--redis", &url]);
    ready(&second).await;
    let mut s = stream(
        &second,
        "/sse?channel=news&channel=chat:x",
        &[("Last-Event-ID", &last)],
    )
    .await;
    let open = opened(&mut s).await;
    assert_eq!(open.data["channels"]["news"]["recovered"], true, "{open:?}");
    seen.extend(pubs(&next_pubs(&mut s, 4).await));
    publish_n(&publisher, "news", 10..=10).await;
    publisher.api_publish("chat:x", &json!(1)).await;
    seen.extend(pubs(&next_pubs(&mut s, 2).await));
    let mut want: Vec<_> = (1..=10).map(|i| ("news".to_owned(), i)).collect();
    want.push(("chat:x".into(), 2));
    assert_eq!(
        seen, want,
        "every offset once, in order, across the restart"
    );
    let _: Value = publisher.api_ok("/api/info", &json!({})).await;
}
