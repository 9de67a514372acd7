//! The TLS session against rustls's own client, in memory: the handshake
//! (TLS 1.3 and 1.2), records cut at every byte, a key update, session
//! tickets, close_notify both ways, what is not TLS, and that an idle
//! session holds no buffer. The bytes go between the two as the shard
//! moves them (socket.rs: kept tail, then the new read, then `process`),
//! so a record split by a read is exercised as the shard splits it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::session::{Session, TlsError};
use crate::config::Tls;

/// A certificate for `localhost`, made for the test, and the server
/// configuration the server would build from its files.
struct Certificate {
    server: Arc<rustls::ServerConfig>,
    der: CertificateDer<'static>,
}

fn certificate() -> &'static Certificate {
    static CERT: std::sync::OnceLock<Certificate> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir: PathBuf =
            std::env::temp_dir().join(format!("wavecast-tls-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        // Through the loader, so the test serves what `--tls-cert` would.
        let tls = Tls::load(&cert, &key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        Certificate {
            server: tls.server.clone(),
            der: made.cert.der().clone(),
        }
    })
}

fn client(version: &'static rustls::SupportedProtocolVersion) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(certificate().der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// A client and the server's session, and the plaintext each received.
struct Pair {
    client: ClientConnection,
    server: Session,
    /// Plaintext the server's session delivered.
    at_server: Vec<u8>,
}

impl Pair {
    fn new(version: &'static rustls::SupportedProtocolVersion) -> Pair {
        Pair {
            client: client(version),
            server: Session::new(certificate().server.clone()).unwrap(),
            at_server: Vec::new(),
        }
    }

    /// What the client has to send.
    fn client_sends(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// Gives the server `bytes` as one read, as the shard does: the tail
    /// kept from the last read first, then `process`, then the new tail
    /// kept.
    fn read(&mut self, bytes: &[u8]) -> Result<(), TlsError> {
        let mut buf = self.server.take_incoming();
        buf.extend_from_slice(bytes);
        let at_server = &mut self.at_server;
        let done = self
            .server
            .process(&mut buf, |p| at_server.extend_from_slice(p))?;
        self.server.keep_incoming(&buf[done..]);
        Ok(())
    }

    /// Everything the server has to send, to the client; returns the
    /// plaintext the client read.
    fn server_sends(&mut self) -> Vec<u8> {
        let bytes = self.server.outgoing().to_vec();
        self.server.sent(bytes.len());
        let mut slice = &bytes[..];
        while !slice.is_empty() {
            self.client.read_tls(&mut slice).unwrap();
            self.client.process_new_packets().unwrap();
        }
        let mut plain = Vec::new();
        match self.client.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            // Nothing more for now, the connection is still open.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        plain
    }

    /// Runs the handshake to its end, each flight in one read.
    fn handshake(&mut self) {
        for _ in 0..10 {
            let bytes = self.client_sends();
            self.read(&bytes).unwrap();
            self.server_sends();
            if self.server.is_ready() && !self.client.is_handshaking() {
                // The client's Finished is the last flight; give it over.
                let bytes = self.client_sends();
                self.read(&bytes).unwrap();
                return;
            }
        }
        panic!("the handshake did not finish");
    }

    /// The server encrypts `plain` as the shard does (into a scratch
    /// buffer, what the socket does not take kept) and the client reads.
    fn server_says(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.server.encrypt(plain, &mut out).unwrap();
        self.server.keep_unsent(&out);
        self.server_sends()
    }
}

/// An idle session keeps no buffer: the point of the unbuffered API.
fn assert_idle(session: &Session) {
    assert!(session.incoming().is_empty());
    assert!(!session.wants_write());
    assert_eq!(session.incoming_capacity(), 0, "incoming buffer kept");
    assert_eq!(session.outgoing_capacity(), 0, "outgoing buffer kept");
}

#[test]
fn handshake_and_data_both_ways_tls13_and_tls12() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut pair = Pair::new(version);
        assert!(!pair.server.is_ready());
        pair.handshake();
        assert!(pair.server.is_ready());
        assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(pair.client.protocol_version(), Some(version.version));
        // Anything the server still had to say (TLS 1.3 session tickets).
        pair.server_sends();
        assert_idle(&pair.server);

        pair.client
            .writer()
            .write_all(b"GET /ws HTTP/1.1\r\n")
            .unwrap();
        let bytes = pair.client_sends();
        pair.read(&bytes).unwrap();
        assert_eq!(pair.at_server, b"GET /ws HTTP/1.1\r\n");
        assert_eq!(pair.server_says(b"HTTP/1.1 101\r\n"), b"HTTP/1.1 101\r\n");
        assert_idle(&pair.server);
    }
}

#[test]
fn a_handshake_cut_at_every_byte_completes() {
    let hello = Pair::new(&rustls::version::TLS13).client_sends();
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    for cut in 1..hello.len() {
        let mut pair = Pair::new(&rustls::version::TLS13);
        let bytes = pair.client_sends();
        assert_eq!(bytes.len(), hello.len());
        pair.read(&bytes[..cut]).unwrap();
        assert!(
            !pair.server.wants_write(),
            "answered half a ClientHello (cut at {cut})"
        );
        assert_eq!(pair.server.incoming().len(), cut, "tail not kept");
        pair.read(&bytes[cut..]).unwrap();
        assert!(pair.server.wants_write(), "no ServerHello (cut at {cut})");
        pair.server_sends();
        let bytes = pair.client_sends();
        pair.read(&bytes).unwrap();
        assert!(pair.server.is_ready(), "cut at {cut}");
    }
}

#[test]
fn application_records_cut_at_every_byte_arrive_whole_and_in_order() {
    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.client.writer().write_all(b"one record").unwrap();
    let one = pair.client_sends();
    pair.read(&one).unwrap();
    let record = one.len();
    pair.at_server.clear();
    let mut expected = Vec::new();
    // Two records in one read, cut in the first, at the boundary and in
    // the second.
    for cut in 0..=2 * record {
        let a = format!("a{cut:04}:one record");
        let b = format!("b{cut:04}:two record");
        pair.client.writer().write_all(a.as_bytes()).unwrap();
        let mut bytes = pair.client_sends();
        pair.client.writer().write_all(b.as_bytes()).unwrap();
        bytes.extend(pair.client_sends());
        let cut = cut.min(bytes.len());
        let len = bytes.len();
        let fail = |e| panic!("cut at {cut} of {len}: {e}");
        pair.read(&bytes[..cut]).unwrap_or_else(fail);
        pair.read(&bytes[cut..]).unwrap_or_else(fail);
        expected.extend_from_slice(a.as_bytes());
        expected.extend_from_slice(b.as_bytes());
        assert!(pair.server.incoming().is_empty(), "cut at {cut}");
    }
    assert_eq!(pair.at_server, expected);
    assert_idle(&pair.server);
}

#[test]
fn a_replayed_or_altered_record_fails() {
    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.client.writer().write_all(b"once").unwrap();
    let bytes = pair.client_sends();
    pair.read(&bytes).unwrap();
    assert_eq!(pair.at_server, b"once");
    // The same record again: its sequence number is past, so it does not
    // authenticate.
    assert!(matches!(pair.read(&bytes), Err(TlsError::Protocol(_))));
    assert_eq!(pair.at_server, b"once");

    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.client.writer().write_all(b"altered").unwrap();
    let mut bytes = pair.client_sends();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(pair.read(&bytes), Err(TlsError::Protocol(_))));
    assert!(pair.at_server.is_empty());
}

#[test]
fn a_key_update_from_the_client_is_answered_and_data_flows_on() {
    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.client.refresh_traffic_keys().unwrap();
    pair.client.writer().write_all(b"after the update").unwrap();
    let bytes = pair.client_sends();
    pair.read(&bytes).unwrap();
    assert_eq!(pair.at_server, b"after the update");
    // The client asked for an update back: the server's next records go
    // under its new key, after its own KeyUpdate, and the client reads
    // them.
    assert_eq!(pair.server_says(b"answer"), b"answer");
    assert_eq!(pair.server_says(b"again"), b"again");
    assert_idle(&pair.server);
}

#[test]
fn close_notify_both_ways() {
    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.client.send_close_notify();
    let bytes = pair.client_sends();
    pair.read(&bytes).unwrap();
    assert!(pair.server.peer_closed());

    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    pair.server.close_notify();
    pair.server.close_notify(); // once only
    let bytes = pair.server.outgoing().to_vec();
    pair.server.sent(bytes.len());
    let mut slice = &bytes[..];
    while !slice.is_empty() {
        pair.client.read_tls(&mut slice).unwrap();
    }
    let state = pair.client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
}

#[test]
fn what_is_not_tls_fails_with_an_alert() {
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[0u8; 64][..],
    ] {
        let mut pair = Pair::new(&rustls::version::TLS13);
        let err = pair.read(garbage).unwrap_err();
        assert!(matches!(err, TlsError::Protocol(_)), "{err}");
        // What goes out is an alert record (content type 21) if anything.
        // (rustls has none for a handshake message over its size limit.)
        let out = pair.server.outgoing();
        assert!(out.is_empty() || out[0] == 21, "{err}: {out:?}");
        if garbage.starts_with(b"GET") {
            assert!(!out.is_empty(), "no alert for {err}");
        }
        // A failed session is done: nothing more is read, written or
        // closed (rustls panics if asked after an error).
        assert!(matches!(pair.read(garbage), Err(TlsError::Failed)));
        assert!(matches!(
            pair.server.encrypt(b"x", &mut Vec::new()),
            Err(TlsError::Failed)
        ));
        pair.server.close_notify();
    }
}

#[test]
fn a_server_write_in_pieces_the_socket_takes_part_of() {
    let mut pair = Pair::new(&rustls::version::TLS13);
    pair.handshake();
    pair.server_sends();
    let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    for chunk in plain.chunks(16 * 1024) {
        pair.server.encrypt(chunk, &mut out).unwrap();
    }
    // The socket takes 1,000 bytes at a time: the rest waits in order.
    let (first, rest) = out.split_at(1000);
    pair.server.keep_unsent(rest);
    let mut at_client = Vec::new();
    let mut feed = |pair: &mut Pair, bytes: &[u8]| {
        let mut slice = bytes;
        while !slice.is_empty() {
            pair.client.read_tls(&mut slice).unwrap();
            pair.client.process_new_packets().unwrap();
        }
        let _ = pair.client.reader().read_to_end(&mut at_client);
    };
    feed(&mut pair, first);
    while pair.server.wants_write() {
        let n = pair.server.outgoing().len().min(1000);
        let piece = pair.server.outgoing()[..n].to_vec();
        pair.server.sent(n);
        feed(&mut pair, &piece);
    }
    assert_eq!(at_client, plain);
    assert_idle(&pair.server);
}

/// Feeds `bytes` to the server in reads cut at `cuts`, as the shard
/// would, until the session fails; after a failure every call fails the
/// same way, and nothing panics.
fn feed_cut(pair: &mut Pair, bytes: &[u8], cuts: &[usize]) {
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    for point in points {
        if pair.read(&bytes[at..point]).is_err() {
            assert!(matches!(pair.read(&bytes[point..]), Err(TlsError::Failed)));
            assert!(matches!(
                pair.server.encrypt(b"x", &mut Vec::new()),
                Err(TlsError::Failed)
            ));
            pair.server.close_notify();
            return;
        }
        at = point;
    }
    // Still going: whatever was sent (an alert, a ServerHello) is well
    // formed enough to hand over, and closing works.
    pair.server.close_notify();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any bytes at all, in any reads, before the handshake; half of the
    /// time after a handshake record's header, so rustls gets past it.
    #[test]
    fn any_bytes_before_the_handshake_fail_cleanly(
        mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..6),
        header in proptest::prelude::any::<bool>(),
    ) {
        if header {
            let len = (bytes.len() as u16).to_be_bytes();
            bytes.splice(0..0, [0x16, 0x03, 0x01, len[0], len[1]]);
        }
        let mut pair = Pair::new(&rustls::version::TLS13);
        feed_cut(&mut pair, &bytes, &cuts);
    }

    /// A real ClientHello with bytes changed, in any reads.
    #[test]
    fn an_altered_client_hello_fails_cleanly_or_is_answered(
        changes in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..8),
        cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..6),
    ) {
        let mut pair = Pair::new(&rustls::version::TLS13);
        let mut hello = pair.client_sends();
        for (at, byte) in changes {
            let len = hello.len();
            hello[at % len] = byte;
        }
        feed_cut(&mut pair, &hello, &cuts);
    }

    /// After the handshake, application records with bytes changed or
    /// records of any bytes after them, in any reads.
    #[test]
    fn altered_records_after_the_handshake_fail_cleanly(
        changes in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..4),
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..6),
        tls12 in proptest::prelude::any::<bool>(),
    ) {
        let version = if tls12 { &rustls::version::TLS12 } else { &rustls::version::TLS13 };
        let mut pair = Pair::new(version);
        pair.handshake();
        pair.server_sends();
        pair.client.writer().write_all(b"some application data").unwrap();
        let mut bytes = pair.client_sends();
        for (at, byte) in changes {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        bytes.extend_from_slice(&tail);
        feed_cut(&mut pair, &bytes, &cuts);
    }
}
