//! `max_connections_per_ip`: the WebSocket connections one client address
//! may hold on a server, counted across its shards; beyond it the
//! handshake gets 503, other addresses are not affected, and a
//! connection's slot comes back once when it ends, however it ends.
//!
//! Clients pick their source address by binding to a loopback address
//! before connecting (127.0.0.1 and 127.0.0.2: Linux routes all of
//! 127.0.0.0/8 to the loopback interface). Waits are liveness bounds,
//! never timing measurements.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test per_ip`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use wavecast_tests::{read_response, HttpResponse, RawClient, Request, Server};

/// Liveness bound of every wait.
const T: Duration = Duration::from_secs(10);
/// The address the limited client connects from.
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Another loopback address: another client as far as the server knows.
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Opens a TCP connection to `server` from `source` (port picked by the
/// kernel) and sends a valid upgrade to `/ws`: the socket on 101, else the
/// server's response.
async fn upgrade_from(source: Ipv4Addr, server: SocketAddr) -> Result<TcpStream, HttpResponse> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    let stream = socket.connect(server).await.expect("connect to the server");
    assert_eq!(
        stream.local_addr().expect("local address").ip(),
        IpAddr::V4(source)
    );
    let stream = stream.into_std().expect("into a std socket");
    stream.set_nonblocking(false).expect("blocking");
    upgrade_on(stream, server)
}

/// Sends an upgrade to `/ws` on `stream` (fresh or keep-alive) and reads
/// the answer: the socket on 101, else the response.
fn upgrade_on(mut stream: TcpStream, server: SocketAddr) -> Result<TcpStream, HttpResponse> {
    let _ = stream.write_all(&Request::upgrade(server, "/ws").to_bytes());
    let response = read_response(&mut stream, &mut Vec::new(), Instant::now() + T)
        .expect("a response to the upgrade");
    if response.status == 101 {
        Ok(stream)
    } else {
        Err(response)
    }
}

/// A plain HTTP request on a new keep-alive connection from 127.0.0.1,
/// then an upgrade on the same connection (the HTTP side decides it).
fn keep_alive_upgrade(server: SocketAddr) -> Result<TcpStream, HttpResponse> {
    let mut stream = TcpStream::connect(server).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let health = read_response(&mut stream, &mut Vec::new(), Instant::now() + T)
        .expect("a response to GET /healthz");
    assert_eq!(health.status, 200);
    upgrade_on(stream, server)
}

/// Asserts that an upgrade from `source` is refused as over the
/// per-address limit.
async fn assert_refused(source: Ipv4Addr, server: SocketAddr) {
    match upgrade_from(source, server).await {
        Ok(_) => panic!("an upgrade from {source} accepted over the per-address limit"),
        Err(r) => assert_per_ip_refusal(&r),
    }
}

/// A 503 that names the per-address limit.
fn assert_per_ip_refusal(r: &HttpResponse) {
    assert_eq!(r.status, 503, "{:?}", r.text());
    assert!(
        r.text().contains("address"),
        "the refusal names the per-address limit: {:?}",
        r.text()
    );
}

/// Retries an upgrade from `source` until it is accepted: a slot comes
/// back when the server has seen its connection end, shortly after the
/// client's part.
async fn until_admitted(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + T;
    loop {
        match upgrade_from(source, server).await {
            Ok(stream) => return stream,
            Err(r) if r.status == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(r) => panic!(
                "slot of {source} not given back within {T:?}: {} {:?}",
                r.status,
                r.text()
            ),
        }
    }
}

#[tokio::test]
async fn fourth_connection_from_one_address_gets_503_until_one_closes() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let addr = server.addr();
    let mut held: Vec<RawClient> = (0..3).map(|_| RawClient::connect(addr, "/ws")).collect();
    for c in &held {
        assert_eq!(
            c.stream().local_addr().unwrap().ip(),
            IpAddr::V4(LOCAL),
            "the raw client connects from 127.0.0.1"
        );
    }
    assert_refused(LOCAL, addr).await;

    // Another address has its own count.
    let other = upgrade_from(OTHER, addr)
        .await
        .unwrap_or_else(|r| panic!("127.0.0.2 refused: {} {:?}", r.status, r.text()));

    // One of the three closes with the close handshake: its slot comes
    // back, exactly one.
    let mut first = held.remove(0);
    first.send_close(1000, b"").expect("send close");
    assert_eq!(first.expect_close(T), Some(1000));
    first.expect_tcp_close(T);
    drop(first);
    let again = until_admitted(LOCAL, addr).await;
    assert_refused(LOCAL, addr).await;
    drop((held, other, again));
}

#[tokio::test]
async fn every_way_a_connection_ends_gives_its_slot_back_once() {
    // Several shards: one address's connections spread over them, and the
    // count is the server's.
    let server = Server::start(&["--max-connections-per-ip", "2", "--workers", "4"]);
    let addr = server.addr();

    // The client goes away without a close frame (end of stream).
    let a = upgrade_from(LOCAL, addr).await.expect("first");
    let b = upgrade_from(LOCAL, addr).await.expect("second");
    assert_refused(LOCAL, addr).await;
    drop(a);
    let a = until_admitted(LOCAL, addr).await;
    assert_refused(LOCAL, addr).await;

    // The server closes the connection (a protocol error: an unmasked
    // client frame gets 1002).
    drop(a);
    let deadline = Instant::now() + T;
    let mut raw = loop {
        match RawClient::handshake(addr, &Request::upgrade(addr, "/ws")) {
            Ok(c) => break c,
            Err(r) if r.status == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(r) => panic!("slot not given back: {} {:?}", r.status, r.text()),
        }
    };
    assert_refused(LOCAL, addr).await;
    raw.send_raw(&[0x81, 0x02, b'h', b'i']).expect("send");
    assert_eq!(raw.expect_close(T), Some(1002));
    raw.expect_tcp_close(T);
    let c = until_admitted(LOCAL, addr).await;

    // An upgrade on an HTTP keep-alive connection counts against the same
    // address, and its slot comes back the same way. (A refusal closes
    // the connection: each try is a new one.)
    match keep_alive_upgrade(addr) {
        Ok(_) => panic!("a keep-alive upgrade accepted over the per-address limit"),
        Err(r) => assert_per_ip_refusal(&r),
    }
    drop(c);
    let deadline = Instant::now() + T;
    let upgraded = loop {
        match keep_alive_upgrade(addr) {
            Ok(s) => break s,
            Err(r) if r.status == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(r) => panic!("keep-alive upgrade: {} {:?}", r.status, r.text()),
        }
    };
    assert_refused(LOCAL, addr).await;
    drop(upgraded);
    let last = until_admitted(LOCAL, addr).await;
    assert_refused(LOCAL, addr).await;

    // Another address was never affected.
    let other = upgrade_from(OTHER, addr).await.expect("127.0.0.2");
    drop((b, last, other));
}
