//! A raw WebSocket client over a blocking [`TcpStream`] for the cases a
//! standard client refuses to produce: fragmentation under the test's
//! control, broken frames, never answering pings, reading the exact close
//! code.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use wavecast_core::frame::{self, Frame, FrameDecoder, FrameError, OpCode};

use crate::http::{read_head, read_some, HttpResponse, Request, SAMPLE_ACCEPT, SAMPLE_KEY};

/// Largest frame payload the raw client accepts from the server: far above
/// anything the tests send, and a bound on what a broken server can make the
/// test buffer.
const CLIENT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// What [`RawClient::recv`] got.
#[derive(Debug)]
pub enum Recv {
    /// A whole frame from the server (unmasked, as RFC 6455 5.1 requires).
    Frame(Frame),
    /// The server closed the TCP connection (orderly FIN).
    Eof,
    /// Nothing within the timeout.
    TimedOut,
    /// The server sent a frame that breaks RFC 6455 section 5 (e.g. a
    /// masked frame).
    BadFrame(FrameError),
    /// The socket failed (e.g. connection reset).
    Io(io::ErrorKind),
}

/// A WebSocket client over a blocking [`TcpStream`] that sends exactly the
/// frames it is told to (masked with [`frame::encode_masked`], or raw bytes)
/// and decodes the server's frames with [`FrameDecoder::client`]. It never
/// answers anything by itself: pings stay unanswered unless the test answers.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    inbuf: BytesMut,
    decoder: FrameDecoder,
    mask_seed: u32,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
}

impl RawClient {
    /// Opens a WebSocket to `path` with a valid handshake.
    ///
    /// # Panics
    ///
    /// If the server does not answer `101` with the RFC's accept value.
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        match RawClient::handshake(addr, &Request::upgrade(addr, path)) {
            Ok(c) => c,
            Err(resp) => panic!(
                "handshake to {path} refused: {} {:?}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ),
        }
    }

    /// Sends `request` and, on `101`, returns the client (checking
    /// `Sec-WebSocket-Accept` against [`SAMPLE_ACCEPT`] when the request used
    /// [`SAMPLE_KEY`]); any other status comes back as the response.
    ///
    /// # Panics
    ///
    /// On I/O errors, an unparsable response, or a `101` that breaks RFC
    /// 6455 4.2.2.
    pub fn handshake(addr: SocketAddr, request: &Request) -> Result<RawClient, HttpResponse> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = TcpStream::connect(addr).expect("connect to the server");
        // Frames go out as the test writes them: one write, one segment.
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        let _ = stream.write_all(&request.to_bytes());
        let mut buf = Vec::new();
        let head = read_head(&mut stream, &mut buf, deadline).expect("read the handshake response");
        let (mut resp, head_len) = (head.response, head.len);
        if resp.status != 101 {
            // The rest of the rejection, for the failure message.
            while read_some(&mut stream, &mut buf, deadline).is_ok_and(|n| n > 0) {}
            resp.body = buf.get(head_len..).unwrap_or_default().to_vec();
            return Err(resp);
        }
        let header = |name: &'static str| {
            request
                .headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let sent_key = header("sec-websocket-key").next();
        let offered: Vec<&str> = header("sec-websocket-protocol")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // permessage-deflate (RFC 7692), when offered and answered: the
        // answer must name both no_context_takeover parameters (wavecast
        // always adds them); frames may then carry RSV1. The core's client
        // side knows no extension, so it checks the rest of the head
        // without that line.
        let offered_deflate = header("sec-websocket-extensions")
            .any(|v| v.to_ascii_lowercase().contains("permessage-deflate"));
        let answer = resp.header("sec-websocket-extensions").map(str::to_owned);
        let deflate = match (&answer, offered_deflate) {
            (Some(a), true) => {
                assert!(
                    a.starts_with("permessage-deflate")
                        && a.contains("server_no_context_takeover")
                        && a.contains("client_no_context_takeover"),
                    "a permessage-deflate answer without no_context_takeover: {a}"
                );
                true
            }
            _ => false,
        };
        let head_bytes: Vec<u8> = if deflate {
            let text = String::from_utf8_lossy(&buf[..head_len]).into_owned();
            text.split_inclusive("\r\n")
                .filter(|l| {
                    !l.to_ascii_lowercase()
                        .starts_with("sec-websocket-extensions:")
                })
                .collect::<String>()
                .into_bytes()
        } else {
            buf[..head_len].to_vec()
        };
        // The client's checks of RFC 6455 4.1, as the core's client side
        // makes them.
        if let Err(e) = wavecast_core::handshake::read_response(
            &head_bytes,
            sent_key.unwrap_or_default(),
            &offered,
        ) {
            panic!("a 101 that a client must refuse: {e}: {:?}", resp.headers);
        }
        if sent_key == Some(SAMPLE_KEY) {
            assert_eq!(
                resp.header("sec-websocket-accept"),
                Some(SAMPLE_ACCEPT),
                "Sec-WebSocket-Accept must be the RFC 6455 1.3 value for the sample key"
            );
        }
        // Frames the server sent right behind its 101 stay for recv().
        let leftover = buf.get(head_len..).unwrap_or_default();
        let decoder = FrameDecoder::client(CLIENT_MAX_PAYLOAD);
        Ok(RawClient {
            stream,
            inbuf: BytesMut::from(leftover),
            decoder: if deflate {
                decoder.with_rsv1()
            } else {
                decoder
            },
            extensions: answer,
            mask_seed: 0x3779_b9a1,
        })
    }

    /// A fresh, non-zero masking key per frame, so unmasking is exercised
    /// with different keys (RFC 6455 5.3 wants them unpredictable; for a
    /// test any key is valid).
    fn next_mask(&mut self) -> [u8; 4] {
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        (self.mask_seed | 1).to_be_bytes()
    }

    /// One masked frame as bytes (for tests that then alter them).
    pub fn masked_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mask = self.next_mask();
        let mut out = BytesMut::new();
        frame::encode_masked(fin, opcode, payload, mask, &mut out);
        out.to_vec()
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let bytes = self.masked_frame(fin, opcode, payload);
        self.stream.write_all(&bytes)
    }

    /// Sends a masked close frame with `code` and `reason` (no validation:
    /// tests send invalid codes on purpose).
    pub fn send_close(&mut self, code: u16, reason: &[u8]) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        self.send_frame(true, OpCode::Close, &payload)
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The `Sec-WebSocket-Extensions` of the server's 101, if it sent one
    /// (with permessage-deflate answered, frames may carry RSV1).
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    /// The underlying socket (e.g. to shut down one direction).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Waits up to `timeout` for the next frame from the server.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(f)) => return Recv::Frame(f),
                Ok(None) => {}
                Err(e) => return Recv::BadFrame(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::TimedOut;
            }
            if let Err(e) = self.stream.set_read_timeout(Some(left)) {
                return Recv::Io(e.kind());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Recv::Eof,
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Recv::TimedOut
                }
                Err(e) => return Recv::Io(e.kind()),
            }
        }
    }

    /// The next frame that is not a ping (pings are skipped, unanswered).
    ///
    /// # Panics
    ///
    /// On anything but a frame within `timeout`.
    pub fn expect_frame(&mut self, timeout: Duration) -> Frame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Frame(f) if f.opcode == OpCode::Ping => {}
                Recv::Frame(f) => return f,
                other => panic!("expected a frame from the server, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame (skipping pings) and returns its
    /// status code (`None` for an empty close payload).
    ///
    /// # Panics
    ///
    /// If a data frame, a malformed close payload, EOF or a timeout comes
    /// first.
    pub fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        let f = self.expect_frame(timeout);
        assert_eq!(
            f.opcode,
            OpCode::Close,
            "expected a close frame, got {:?} with {} bytes",
            f.opcode,
            f.payload.len()
        );
        close_code(&f.payload)
    }

    /// Asserts that the server closes the TCP connection within `timeout`
    /// without sending another frame (a reset counts as closed).
    ///
    /// # Panics
    ///
    /// If a frame arrives or nothing happens within `timeout`.
    pub fn expect_tcp_close(&mut self, timeout: Duration) {
        match self.recv(timeout) {
            Recv::Eof | Recv::Io(io::ErrorKind::ConnectionReset) => {}
            other => panic!("expected the server to close the TCP connection, got {other:?}"),
        }
    }
}

/// The status code of a close frame payload: `None` if the payload is
/// empty.
///
/// # Panics
///
/// On a 1-byte payload (RFC 6455 5.5.1 requires 0 or at least 2 bytes) or a
/// reason that is not UTF-8: the server must never send those.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [] => None,
        [_] => panic!("server sent a 1-byte close payload"),
        [hi, lo, reason @ ..] => {
            assert!(
                std::str::from_utf8(reason).is_ok(),
                "server sent a close reason that is not UTF-8: {reason:?}"
            );
            Some(u16::from_be_bytes([*hi, *lo]))
        }
    }
}
