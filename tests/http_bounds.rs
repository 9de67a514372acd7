//! The HTTP side is bounded like the WebSocket side: a later request on a
//! keep-alive connection gets the first head's limits (`http_timeout`, the
//! 8 KiB head, 431), idle keep-alive connections are closed, plain HTTP
//! connections are counted against `max_http_connections` (503 beyond it),
//! and the API tells a malformed body (400) from an oversized one (413).
//!
//! Every test starts its own server on a loopback port and talks to it over
//! raw sockets. Waits are liveness bounds of seconds, never timing
//! measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test http_bounds`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use wavecast_tests::{
    http_exchange, read_response, read_some, HttpResponse, RawClient, Request, Server,
};

/// Liveness bound of every wait.
const T: Duration = Duration::from_secs(10);
/// The API key of the tests that use the API.
const KEY: &str = "bounds-key-3c9a";
/// The handshake's head limit (core `DEFAULT_MAX_HEAD_SIZE`).
const MAX_HEAD: usize = 8 * 1024;

/// A keep-alive `GET path` (HTTP/1.1 keeps the connection open by default).
fn keep_alive_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// A header block of about `size` bytes in lines of about `line` bytes
/// (`X-Pad-N: aaa...`), without the final empty line. Lines of 4000 bytes
/// stay under the 64-header limit, so only the size limit can refuse them.
fn padding_lines(size: usize, line: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < size {
        out.push_str(&format!("X-Pad-{i}: {}\r\n", "a".repeat(line)));
        i += 1;
    }
    out
}

/// A header block of about `size` bytes in few, long lines.
fn padding(size: usize) -> String {
    padding_lines(size, 4000)
}

/// A keep-alive connection that has had one whole request answered (so
/// whatever it sends next is a later head, served by hyper).
fn warmed(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&keep_alive_get("/healthz")).expect("write");
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, Instant::now() + T).expect("first response");
    assert_eq!(r.status, 200, "first request on the keep-alive connection");
    (s, buf)
}

/// How a connection we stopped talking on ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed it (FIN or reset); the status of any response it
    /// sent first.
    Closed(Option<u16>),
    /// Still open at the deadline.
    Open,
}

/// Waits until the server closes `s` (or `deadline`).
fn wait_closed(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> End {
    loop {
        match read_some(s, buf, deadline) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return End::Open,
            Err(_) => break, // reset
        }
    }
    let status = std::str::from_utf8(buf)
        .ok()
        .and_then(|t| t.strip_prefix("HTTP/1.1 "))
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    End::Closed(status)
}

/// A gauge from `/metrics`; `None` if the scrape itself was refused (503
/// at the HTTP connection limit).
fn gauge(addr: SocketAddr, name: &str) -> Option<f64> {
    let r = http_exchange(addr, &Request::get(addr, "/metrics").to_bytes(), T).expect("metrics");
    if r.status == 503 {
        return None;
    }
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("utf-8");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
    Some(value.unwrap_or_else(|| panic!("no gauge {name} in {text}")))
}

/// Waits until `f` holds (liveness bound [`T`]).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn healthz(addr: SocketAddr) -> u16 {
    http_exchange(addr, &Request::get(addr, "/healthz").to_bytes(), T)
        .expect("healthz")
        .status
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[test]
fn a_slow_second_head_is_cut_off_while_others_are_served() {
    let server = Server::start(&["--http-timeout", "1s"]);
    let addr = server.addr();
    let (mut s, mut buf) = warmed(addr);
    // One byte every 500 ms of a head that never ends, from another thread.
    let mut writer = s.try_clone().expect("clone");
    let dripping = thread::spawn(move || {
        let head = format!("GET /healthz HTTP/1.1\r\n{}", padding(4096));
        for b in head.bytes() {
            if writer.write_all(&[b]).is_err() {
                return true; // the server closed it
            }
            thread::sleep(Duration::from_millis(500));
        }
        false
    });
    // Meanwhile another client is served.
    assert_eq!(healthz(addr), 200);
    let end = wait_closed(&mut s, &mut buf, Instant::now() + T);
    assert!(
        matches!(end, End::Closed(None | Some(408))),
        "a head dripping one byte per 500 ms must be closed within the header timeout: {end:?}"
    );
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = dripping.join();
    assert_eq!(healthz(addr), 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = Server::start(&["--http-timeout", "1s"]);
    let addr = server.addr();
    let (mut s, mut buf) = warmed(addr);
    let end = wait_closed(&mut s, &mut buf, Instant::now() + T);
    assert_eq!(end, End::Closed(None), "idle after a response");
    // Idle before any request too (the first head's deadline).
    let mut fresh = TcpStream::connect(addr).expect("connect");
    let mut buf = Vec::new();
    let end = wait_closed(&mut fresh, &mut buf, Instant::now() + T);
    assert!(
        matches!(end, End::Closed(_)),
        "idle before a request: {end:?}"
    );
}

// ---------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------

/// Open descriptors of the server process.
fn open_fds(server: &Server) -> u64 {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("fd dir")
        .count() as u64
}

/// Lowers the server's `RLIMIT_NOFILE` to `n`.
fn limit_fds(server: &Server, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: `lim` is a valid rlimit and the old value is not asked for.
    let rc = unsafe {
        libc::prlimit(
            server.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
}

#[test]
fn idle_keep_alive_connections_cannot_exhaust_descriptors() {
    const LIMIT: usize = 16;
    let server = Server::start(&[
        "--workers",
        "1",
        "--max-http-connections",
        &LIMIT.to_string(),
        // Long enough that the idle ones are still held during the test.
        "--http-timeout",
        "60s",
    ]);
    let addr = server.addr();
    // Room for 30 more sockets: fewer than the idle connections opened.
    limit_fds(&server, open_fds(&server) + 30);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&keep_alive_get("/healthz")).expect("write");
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, Instant::now() + T).expect("an answer");
        match r.status {
            200 => held.push(s),
            503 => {
                refused += 1;
                let end = wait_closed(&mut s, &mut buf, Instant::now() + T);
                assert_eq!(end, End::Closed(None), "a refused connection is closed");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(held.len(), LIMIT, "held up to the limit");
    assert_eq!(refused, 60 - LIMIT);
    // A WebSocket client still gets in, on a fresh connection...
    let mut ws = RawClient::connect(addr, "/ws");
    // ... and on a keep-alive one, which gives its HTTP slot back.
    drop(held.pop());
    let mut keep_alive = None;
    eventually("a slot is free again", || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&keep_alive_get("/healthz")).expect("write");
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, Instant::now() + T).expect("an answer");
        let served = r.status == 200;
        if served {
            keep_alive = Some((s, buf));
        }
        served
    });
    let (mut s, mut buf) = keep_alive.expect("served");
    s.write_all(&Request::upgrade(addr, "/ws").to_bytes())
        .expect("write");
    let r = read_response(&mut s, &mut buf, Instant::now() + T).expect("101");
    assert_eq!(r.status, 101);
    eventually("two WebSocket slots", || {
        gauge(addr, "wavecast_connection_slots") == Some(2.0)
    });
    // Everything closed: the counts go back to nothing (the scrape's own
    // connection is the one HTTP connection left).
    drop(held);
    drop(s);
    let _ = ws.send_close(1000, b"");
    drop(ws);
    eventually("every slot released", || {
        gauge(addr, "wavecast_http_connections") == Some(1.0)
            && gauge(addr, "wavecast_connection_slots") == Some(0.0)
    });
    assert_eq!(healthz(addr), 200);
}

// ---------------------------------------------------------------------------
// Head size
// ---------------------------------------------------------------------------

#[test]
fn an_oversized_second_head_is_431_on_the_api_and_upgrade_paths() {
    let server = Server::start(&["--api-key", KEY]);
    let addr = server.addr();
    let api = format!(
        "POST /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey {KEY}\r\n{}\r\n",
        padding(20 * 1024)
    );
    let mut upgrade = String::from_utf8(Request::upgrade(addr, "/ws").to_bytes()).unwrap();
    upgrade.truncate(upgrade.len() - 2);
    upgrade.push_str(&padding(20 * 1024));
    upgrade.push_str("\r\n");
    let ends: Vec<(&str, End)> = [("api", api), ("upgrade", upgrade)]
        .into_iter()
        .map(|(what, head)| {
            let (mut s, mut buf) = warmed(addr);
            let _ = s.write_all(head.as_bytes());
            (what, wait_closed(&mut s, &mut buf, Instant::now() + T))
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("api", End::Closed(Some(431))),
            ("upgrade", End::Closed(Some(431)))
        ],
        "a 20 KB second head"
    );
    eventually("no WebSocket slot held", || {
        gauge(addr, "wavecast_connection_slots") == Some(0.0)
    });
}

#[test]
fn a_100_kb_head_is_431_first_or_later() {
    let server = Server::start(&["--api-key", KEY]);
    let addr = server.addr();
    // In long lines (the size limit) and in short ones (the count limit).
    for line in [4000, 90] {
        let head = format!(
            "POST /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey {KEY}\r\nContent-Length: 0\r\n{}\r\n",
            padding_lines(100 * 1024, line)
        );
        let r = http_exchange(addr, head.as_bytes(), T).expect("first");
        assert_eq!(r.status, 431, "a 100 KB first head, lines of {line}");
        let (mut s, mut buf) = warmed(addr);
        let _ = s.write_all(head.as_bytes());
        let end = wait_closed(&mut s, &mut buf, Instant::now() + T);
        assert_eq!(
            end,
            End::Closed(Some(431)),
            "a 100 KB later head, lines of {line}"
        );
    }
}

#[test]
fn unfinished_second_heads_hold_about_the_head_limit() {
    const CONNS: usize = 100;
    let server = Server::start(&["--workers", "1"]);
    let addr = server.addr();
    // Warm up the allocator and the runtime first.
    drop(warmed(addr));
    let before = server.resident_bytes();
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        let (mut s, buf) = warmed(addr);
        s.set_write_timeout(Some(T)).expect("timeout");
        // 300 KB of a head that never ends (the server may stop reading,
        // answer and close at its limit: a failed write is fine).
        let _ = s.write_all(format!("GET /healthz HTTP/1.1\r\n{}", padding(300 * 1024)).as_bytes());
        conns.push((s, buf));
    }
    // Give the server a moment to read what it will of them (a fixed
    // server has answered 431 and closed each at its limit; one without a
    // bound keeps reading, and would be caught by the check below).
    thread::sleep(Duration::from_secs(1));
    let grown = server.resident_bytes().saturating_sub(before);
    assert!(
        grown < 8 * 1024 * 1024,
        "{CONNS} unfinished heads grew the server by {grown} bytes (limit {MAX_HEAD} each)"
    );
    assert_eq!(healthz(addr), 200);
}

// ---------------------------------------------------------------------------
// API bodies
// ---------------------------------------------------------------------------

fn error_code(r: &HttpResponse) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    v["error"]["code"].as_u64().expect("error code")
}

#[test]
fn a_malformed_body_is_400_and_an_oversized_one_413() {
    let server = Server::start(&["--api-key", KEY, "--http-timeout", "2s"]);
    let addr = server.addr();
    let head = |extra: &str| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey {KEY}\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    // Not a chunk size.
    let bad = head("Transfer-Encoding: chunked\r\n") + "zz\r\n{}\r\n0\r\n\r\n";
    let r = http_exchange(addr, bad.as_bytes(), T).expect("bad chunked");
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_code(&r), 101, "bad request");
    // Over the 1 MiB limit, by its length.
    let big = head("Content-Length: 2000000\r\n") + "{\"channel\": \"a\", \"data\": \"";
    let r = http_exchange(addr, big.as_bytes(), T).expect("oversized");
    assert_eq!(r.status, 413, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_code(&r), 107, "limit exceeded");
    // Over the limit in chunks, none of them larger than it.
    let chunk = "a".repeat(64 * 1024);
    let mut chunked = head("Transfer-Encoding: chunked\r\n");
    for _ in 0..20 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let r = http_exchange(addr, chunked.as_bytes(), T).expect("oversized chunked");
    assert_eq!(r.status, 413, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_code(&r), 107, "limit exceeded");
    // A body that stops arriving: 408 within the HTTP timeout.
    let stalled = head("Content-Length: 100\r\n") + "{\"channel\"";
    let r = http_exchange(addr, stalled.as_bytes(), T).expect("stalled body");
    assert_eq!(r.status, 408, "{:?}", String::from_utf8_lossy(&r.body));
    // A good one still works.
    let body = r#"{"channel": "a", "data": 1}"#;
    let ok = head(&format!("Content-Length: {}\r\n", body.len())) + body;
    let r = http_exchange(addr, ok.as_bytes(), T).expect("publish");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}
