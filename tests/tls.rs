//! TLS on the port (`--tls-cert`, `--tls-key`), against the real binary
//! (docs/OPERATIONS.md, "TLS"): `wss://` pub/sub and echo through the
//! epoll shard (tokio-tungstenite over a rustls client that trusts only a
//! CA the test makes with the `openssl` command), the HTTP API and
//! `/healthz` over https with curl (ALPN http/1.1), SSE over TLS, a client
//! that opens TCP and never starts the handshake (closed at
//! `tls_handshake_timeout`), the bound on handshakes in progress
//! (`tls_max_handshakes`), garbage instead of a ClientHello, certificate
//! reload on SIGHUP (new connections get the new certificate, open ones
//! stay; a bad file keeps the old one and is logged), the startup
//! errors of bad TLS settings, and deploy/nginx.conf's TLS server block
//! terminating TLS in front of a plain server.
//!
//! Needs the binary and `openssl`, `curl`, `nginx`: `cargo build -p wavecast &&
//! cargo test -p wavecast-tests --test tls`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wavecast_tests::nginx::Nginx;
use wavecast_tests::pubsub::{TestServer, KEY};
use wavecast_tests::{refuses_to_start, Server, TempFile};

const T: Duration = Duration::from_secs(10);

/// A directory of certificates made with `openssl` for one test: a CA and
/// leaf certificates for `localhost` and 127.0.0.1 signed by it.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("wavecast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Certs { dir };
        certs.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wavecast test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(
            certs.dir.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        certs
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes leaf `name` (`name.pem`, `name.key`), signed by the CA.
    fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=localhost {name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            &pem,
        ]);
        (self.dir.join(pem), self.dir.join(key))
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A rustls client trusting only this CA.
    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A TLS connection to `addr` as `localhost` from a client that speaks
/// only `version`, handshake done.
async fn tls_connect_with(
    certs: &Certs,
    addr: SocketAddr,
    version: &'static rustls::SupportedProtocolVersion,
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.ca()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        T,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// A TLS connection to `addr` as `localhost`, handshake done.
async fn tls_connect(certs: &Certs, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(T, certs.client().connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

/// The leaf certificate the server at `addr` presents now.
async fn served_cert(certs: &Certs, addr: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(certs, addr).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(certs: &Certs, addr: SocketAddr, path: &str) -> Wss {
    let tls = tls_connect(certs, addr).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    ws
}

/// The next text message (pings skipped).
async fn next_text(ws: &mut Wss) -> String {
    loop {
        match tokio::time::timeout(T, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends a command and waits for its reply (pushes before it skipped).
async fn command(ws: &mut Wss, id: u64, name: &str, body: Value) -> Value {
    ws.send(Message::text(json!({"id": id, name: body}).to_string()))
        .await
        .unwrap();
    loop {
        let v: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        if v["id"] == id {
            assert!(v.get("error").is_none(), "{name} failed: {v}");
            return v;
        }
    }
}

fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]
}

/// Runs curl against `url` (as localhost, trusting `certs`' CA): stdout.
fn curl(certs: &Certs, addr: SocketAddr, args: &[&str]) -> String {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(certs.ca())
        .args(["--resolve", &resolve])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn wss_pubsub_and_echo_through_the_shard() {
    let certs = Certs::new("wss");
    let (cert, key) = certs.leaf("a");
    let mut args = tls_args(&cert, &key);
    args.push("--echo");
    let server = TestServer::start(&args);
    let addr = server.addr();
    let log = wait_log(&server.server, "TLS: on, certificate", 1);
    assert!(
        log.contains(&format!(
            "WebSocket URL: wss://127.0.0.1:{}/ws",
            addr.port()
        )) && log.contains("TLS: on, certificate"),
        "the startup lines name the wss:// URL: {log}"
    );

    let mut sub = wss(&certs, addr, "/ws").await;
    command(&mut sub, 1, "subscribe", json!({"channel": "news"})).await;
    let mut publisher = wss(&certs, addr, "/ws").await;
    // Big enough for several TLS records per message.
    let big = "x".repeat(40_000);
    for i in 0..5 {
        let data = json!({"n": i, "pad": big});
        command(
            &mut publisher,
            1 + i,
            "publish",
            json!({"channel": "news", "data": data}),
        )
        .await;
    }
    let mut seen = 0;
    while seen < 5 {
        let v: Value = serde_json::from_str(&next_text(&mut sub).await).unwrap();
        if let Some(data) = v.pointer("/push/pub/data") {
            assert_eq!(data["n"], seen, "publications in order: {v}");
            assert_eq!(data["pad"].as_str().map(str::len), Some(40_000));
            seen += 1;
        }
    }

    // Echo: client messages of many sizes, decrypted in the shard and
    // encrypted back.
    let mut echo = wss(&certs, addr, "/echo").await;
    for size in [0usize, 1, 125, 126, 16_000, 16_385, 60_000] {
        let text = "e".repeat(size);
        echo.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_text(&mut echo).await, text, "echo of {size} bytes");
    }
    echo.close(None).await.unwrap();
    // The close handshake completes over TLS.
    let end = tokio::time::timeout(T, async {
        while let Some(m) = echo.next().await {
            if m.is_err() {
                return Err(());
            }
        }
        Ok(())
    })
    .await
    .expect("the server ends the connection after the close");
    assert!(end.is_ok(), "a clean end of the WebSocket over TLS");
}

/// Python's `websockets` client over `wss://` (its own TLS stack,
/// OpenSSL's): subscribe, publish, receive the publication, close.
const PYTHON_CLIENT: &str = r#"
import json, ssl, sys
from websockets.sync.client import connect
ctx = ssl.create_default_context(cafile=sys.argv[2])
with connect(sys.argv[1], ssl=ctx, open_timeout=10) as ws:
    ws.send(json.dumps({"id": 1, "subscribe": {"channel": "py"}}))
    assert json.loads(ws.recv(timeout=10))["id"] == 1
    ws.send(json.dumps({"id": 2, "publish": {"channel": "py", "data": {"big": "y" * 30000}}}))
    got = set()
    while got != {"reply", "pub"}:
        m = json.loads(ws.recv(timeout=10))
        if m.get("id") == 2:
            assert "error" not in m, m
            got.add("reply")
        elif "push" in m:
            assert len(m["push"]["pub"]["data"]["big"]) == 30000, m
            got.add("pub")
print("python wss ok")
"#;

#[tokio::test]
async fn python_websockets_client_over_wss() {
    let certs = Certs::new("python");
    let (cert, key) = certs.leaf("a");
    let server = TestServer::start(&tls_args(&cert, &key));
    let url = format!("wss://localhost:{}/ws", server.addr().port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", PYTHON_CLIENT, &url])
            .arg(certs.ca())
            .output()
            .expect("run python3 (with the websockets package: pip install websockets)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python websockets client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python wss ok"));
}

#[tokio::test]
async fn a_tls_reader_that_does_not_keep_up_is_closed_4002() {
    // rustls holds at most its buffer limit of records the socket did not
    // take; beyond that the node's budget (`max_queued_bytes`) applies as
    // on a plain socket.
    let certs = Certs::new("slow");
    let (cert, key) = certs.leaf("a");
    let mut args = tls_args(&cert, &key);
    args.extend(["--max-queued-bytes", "64KiB"]);
    let server = TestServer::start(&args);
    let addr = server.addr();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = certs.client().connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (mut slow, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    command(&mut slow, 1, "subscribe", json!({"channel": "flood"})).await;
    let mut publisher = wss(&certs, addr, "/ws").await;
    let pad = "p".repeat(30_000);
    let base = format!("https://localhost:{}", addr.port());
    let auth = format!("Authorization: apikey {KEY}");
    let subscribers = || {
        let out = curl(
            &certs,
            addr,
            &["-H", &auth, "--data", "{}", &format!("{base}/api/channels")],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v["channels"]["flood"]["subscribers"].as_u64().unwrap_or(0)
    };
    assert_eq!(subscribers(), 1);
    let mut released = false;
    for i in 0..2000u64 {
        command(
            &mut publisher,
            1 + i,
            "publish",
            json!({"channel": "flood", "data": pad}),
        )
        .await;
        if i % 50 == 49 && subscribers() == 0 {
            released = true;
            break;
        }
    }
    assert!(released, "the slow reader was never closed");
    // What it was sent ends with the slow-consumer close (or the end of
    // the stream, if the close frame could not be written in time).
    let code = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(m) = slow.next().await {
            match m {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the slow reader's stream ends");
    assert!(
        matches!(code, Some(4002) | None),
        "closed as a slow consumer: {code:?}"
    );
}

#[tokio::test]
async fn https_api_healthz_and_sse_with_curl() {
    let certs = Certs::new("curl");
    let (cert, key) = certs.leaf("a");
    let server = TestServer::start(&tls_args(&cert, &key));
    let addr = server.addr();
    let base = format!("https://localhost:{}", addr.port());

    let out = curl(
        &certs,
        addr,
        &["-w", "\n%{http_version}", &format!("{base}/healthz")],
    );
    assert_eq!(out, "ok\n\n1.1", "healthz over https with HTTP/1.1 (ALPN)");
    // TLS 1.2 and 1.3 both, each to a client that speaks only it.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let tls = tls_connect_with(&certs, addr, version).await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
        let mut tls = tls;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        read_until(&mut tls, &mut buf, b"ok\n").await;
        assert!(
            buf.starts_with(b"HTTP/1.1 200"),
            "over {:?}",
            version.version
        );
    }

    let auth = format!("Authorization: apikey {KEY}");
    let out = curl(
        &certs,
        addr,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"channel": "news", "data": "over https"}"#,
            "-w",
            "\n%{http_code}",
            &format!("{base}/api/publish"),
        ],
    );
    assert!(out.ends_with("\n200"), "API publish over https: {out}");

    // Plain HTTP on the TLS port is not served.
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(
        !got.windows(2).any(|w| w == b"ok"),
        "a cleartext request must get no HTTP answer: {got:?}"
    );

    // An SSE stream over TLS: the shard's like an upgraded socket.
    let mut tls = tls_connect(&certs, addr).await;
    tls.write_all(
        b"GET /sse?channel=news HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let published = async {
        // Published once the stream is open (its first bytes are in).
        let deadline = Instant::now() + T;
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(Instant::now() < deadline, "no SSE response head");
            let n = tokio::time::timeout(T, tls.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    published.await;
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let out = curl(
        &certs,
        addr,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"channel": "news", "data": "to the stream"}"#,
            &format!("{base}/api/publish"),
        ],
    );
    assert!(!out.is_empty());
    let deadline = Instant::now() + T;
    while !String::from_utf8_lossy(&buf).contains("to the stream") {
        assert!(Instant::now() < deadline, "publication not on the stream");
        let n = tokio::time::timeout(T, tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads from `tls` until `buf` holds `needle`.
async fn read_until(tls: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>, needle: &[u8]) {
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(T, tls.read(&mut chunk))
            .await
            .expect("read in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn upgrade_on_a_keep_alive_https_connection() {
    // hyper answers the first request and the 101; the socket and its TLS
    // session are then taken back from hyper into the shard.
    let certs = Certs::new("keepalive");
    let (cert, key) = certs.leaf("a");
    let mut args = tls_args(&cert, &key);
    args.push("--echo");
    let server = TestServer::start(&args);
    let mut tls = tls_connect(&certs, server.addr()).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut tls, &mut buf, b"ok\n").await;
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    buf.clear();
    // The upgrade and a first frame in one write: the frame is past the
    // request head, in what rustls or hyper already read.
    let mut req = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let mask = [1u8, 2, 3, 4];
    req.extend_from_slice(&[0x81, 0x80 | 5]);
    req.extend_from_slice(&mask);
    req.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tls.write_all(&req).await.unwrap();
    read_until(&mut tls, &mut buf, b"\x81\x05hello").await;
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// Waits until `tcp` is closed by the server (end of stream or reset);
/// panics if it is still open after `within`.
fn closed_within(tcp: &mut std::net::TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {} // an alert
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("still open after {within:?}")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

/// Whether `tcp` is still open after `wait` (nothing read, no end).
fn still_open(tcp: &mut std::net::TcpStream, wait: Duration) -> bool {
    tcp.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    matches!(tcp.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        || e.kind() == std::io::ErrorKind::TimedOut)
}

#[tokio::test]
async fn silent_clients_time_out_and_handshakes_are_bounded() {
    let certs = Certs::new("bound");
    let (cert, key) = certs.leaf("a");
    let mut args = tls_args(&cert, &key);
    args.extend([
        "--workers",
        "1",
        "--tls-handshake-timeout",
        "2s",
        "--tls-max-handshakes",
        "2",
    ]);
    let server = Server::start(&args);
    let addr = server.addr();
    // Two clients that open TCP and never say a word hold the shard's two
    // handshake places...
    let mut a = std::net::TcpStream::connect(addr).unwrap();
    let mut b = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a third is closed at once, long before the timeout.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let t = closed_within(&mut c, Duration::from_millis(1500));
    assert!(t < Duration::from_millis(1500));
    assert!(still_open(&mut a, Duration::from_millis(100)));
    // The silent ones are closed at the handshake timeout.
    closed_within(&mut a, Duration::from_secs(5));
    closed_within(&mut b, Duration::from_secs(5));
    // And the places are free again.
    let served = served_cert(&certs, addr).await;
    assert_eq!(served, der_of(&cert));
    // /metrics counts them by outcome (this scrape's own handshake is in).
    let metrics = https_get(&certs, addr, "/metrics").await;
    for line in [
        r#"wavecast_tls_handshakes_total{outcome="refused"} 1"#,
        r#"wavecast_tls_handshakes_total{outcome="timeout"} 2"#,
        r#"wavecast_tls_handshakes_total{outcome="ok"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
}

/// `GET path` over https (a fresh connection, closed after): the whole
/// response.
async fn https_get(certs: &Certs, addr: SocketAddr, path: &str) -> String {
    let mut tls = tls_connect(certs, addr).await;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_closed() {
    let certs = Certs::new("garbage");
    let (cert, key) = certs.leaf("a");
    let server = Server::start(&tls_args(&cert, &key));
    let addr = server.addr();
    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0],
        &[0u8; 5000],
        &[0x16, 0x03, 0x03, 0x00, 0x05, 1, 0, 0, 1, 0],
        // A handshake message announcing 16 MiB: rustls fails it while
        // it still counts the record as its own, and asked again it
        // panicked (the session now never asks a failed rustls again).
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    for g in garbage {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.write_all(g).unwrap();
        closed_within(&mut tcp, T);
    }
    // Still serving.
    assert_eq!(served_cert(&certs, addr).await, der_of(&cert));
    let metrics = https_get(&certs, addr, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"wavecast_tls_handshakes_total{outcome="failed"} 5"#),
        "{metrics}"
    );
    let err = server.stderr();
    assert!(!err.contains("panicked"), "{err}");
    let mut ws = wss(&certs, addr, "/ws").await;
    command(&mut ws, 1, "subscribe", json!({"channel": "news"})).await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let certs = Certs::new("reload");
    let (cert_a, key_a) = certs.leaf("a");
    let (cert_b, key_b) = certs.leaf("b");
    // The files the server is given, overwritten in place on reload.
    let (cert, key) = (certs.dir.join("live.pem"), certs.dir.join("live.key"));
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let config = TempFile::new(
        "toml",
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    );
    let server = Server::start(&["--config", &config.path(), "--echo"]);
    let addr = server.addr();
    assert_eq!(served_cert(&certs, addr).await, der_of(&cert_a));
    let mut open = wss(&certs, addr, "/echo").await;
    open.send(Message::text("before")).await.unwrap();
    assert_eq!(next_text(&mut open).await, "before");

    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    server.wait_catches_signal(libc::SIGHUP, Duration::from_secs(5));
    server.signal(libc::SIGHUP);
    wait_log(&server, "config reloaded", 1);
    assert_eq!(
        served_cert(&certs, addr).await,
        der_of(&cert_b),
        "new connections get the new certificate"
    );
    open.send(Message::text("after")).await.unwrap();
    assert_eq!(
        next_text(&mut open).await,
        "after",
        "an open connection is untouched"
    );

    // A bad file: the old certificate stays, and the log says why.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    server.signal(libc::SIGHUP);
    let err = wait_log(&server, "live.pem", 1);
    assert!(err.contains("tls_cert"), "{err}");
    assert_eq!(served_cert(&certs, addr).await, der_of(&cert_b));
    // A key that does not go with the certificate: the same.
    std::fs::copy(&cert_a, &cert).unwrap();
    server.signal(libc::SIGHUP);
    let err = wait_log(&server, "does not go with the certificate", 1);
    assert!(err.contains("live.key"), "{err}");
    assert_eq!(served_cert(&certs, addr).await, der_of(&cert_b));
    open.send(Message::text("still")).await.unwrap();
    assert_eq!(next_text(&mut open).await, "still");

    // Turning TLS off is a restart: reported, and the port stays TLS.
    std::fs::write(config.as_path(), "").unwrap();
    server.signal(libc::SIGHUP);
    let err = wait_log(&server, "needs a restart", 1);
    assert!(
        err.lines()
            .any(|l| l.contains("needs a restart") && l.contains("tls_cert")),
        "{err}"
    );
    assert_eq!(served_cert(&certs, addr).await, der_of(&cert_b));
}

fn wait_log(server: &Server, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + T;
    loop {
        let err = server.stderr();
        if err.matches(needle).count() >= times {
            return err;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {times} times within {T:?}:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_tls_settings_refuse_to_start() {
    let certs = Certs::new("startup");
    let (cert, key) = certs.leaf("a");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    refuses_to_start(&["--tls-cert", cert], &["tls_key", "set both or neither"]);
    refuses_to_start(&["--tls-key", key], &["tls_cert", "set both or neither"]);
    let missing = certs.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    refuses_to_start(&["--tls-cert", missing, "--tls-key", key], &[missing]);
    let junk = certs.dir.join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let junk = junk.to_str().unwrap();
    refuses_to_start(
        &["--tls-cert", junk, "--tls-key", key],
        &["tls_cert", "junk.pem"],
    );
    refuses_to_start(
        &["--tls-cert", cert, "--tls-key", junk],
        &["tls_key", "junk.pem"],
    );
    // The CA's key is not the leaf's.
    let other = certs.dir.join("ca.key");
    refuses_to_start(
        &["--tls-cert", cert, "--tls-key", other.to_str().unwrap()],
        &["tls_key", "does not go with the certificate"],
    );
    refuses_to_start(
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-max-handshakes",
            "0",
        ],
        &["tls_max_handshakes"],
    );
}

/// deploy/nginx.conf's TLS server block, uncommented as its comment says,
/// in front of a plain wavecast: `wss://` pub/sub and the HTTP API over
/// https reach the server through nginx with the certificate nginx holds.
#[tokio::test]
async fn the_nginx_example_terminates_tls_in_front_of_wavecast() {
    let certs = Certs::new("nginx");
    let (cert, key) = certs.leaf("a");
    let server = TestServer::start(&[]);
    let nginx = Nginx::start_tls(&[server.addr()], &cert, &key);
    let front = nginx.tls_addr();
    assert_eq!(served_cert(&certs, front).await, der_of(&cert));

    let mut sub = wss(&certs, front, "/ws").await;
    command(&mut sub, 1, "subscribe", json!({"channel": "edge"})).await;
    let body = json!({"channel": "edge", "data": {"via": "nginx"}}).to_string();
    let auth = format!("Authorization: apikey {KEY}");
    let answer = curl(
        &certs,
        front,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            &format!("https://localhost:{}/api/publish", front.port()),
        ],
    );
    assert!(answer.contains("offset"), "{answer}");
    loop {
        let v: Value = serde_json::from_str(&next_text(&mut sub).await).unwrap();
        if let Some(data) = v.pointer("/push/pub/data") {
            assert_eq!(data["via"], "nginx", "{v}");
            break;
        }
    }
    let health = curl(
        &certs,
        front,
        &[&format!("https://localhost:{}/healthz", front.port())],
    );
    assert!(!health.is_empty());
}
