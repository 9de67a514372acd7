//! Test support shared by the integration tests in `tests/` and the benches
//! in `benches/`: starting the real `wavecast` binary on a free port,
//! waiting for it, and stopping it by the PID it was started with; a raw
//! HTTP/WebSocket client over a plain [`TcpStream`] for the cases a standard
//! client refuses to produce (fragmentation under the test's control, broken
//! frames, never answering pings, reading the exact close code); and small
//! helpers around tokio-tungstenite, the standard client. [`pubsub`] holds
//! the pub/sub side: a server with the test namespaces and an API key, a
//! protocol client in JSON or MessagePack, and an HTTP client for the API.
//!
//! The binary is not built by these helpers: run `cargo build -p wavecast`
//! first (the test script does). [`Server::start`] finds it next to the test
//! executable, `target/<profile>/wavecast`.

#![warn(missing_docs)]

pub mod pubsub;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wavecast_core::frame::{self, Frame, FrameDecoder, FrameError, OpCode};

/// The line the server prints on stdout once it accepts connections; the
/// address follows it.
pub const LISTENING_PREFIX: &str = "wavecast listening on ";

/// How long a server may take to print its listening line. Generous: the
/// machine is shared and a debug binary starts slowly under load.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The sample `Sec-WebSocket-Key` of RFC 6455 section 1.3.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The `Sec-WebSocket-Accept` that RFC 6455 section 1.3 derives from
/// [`SAMPLE_KEY`]. Checking the server against the RFC's own figure keeps
/// the test independent of the server's implementation.
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Largest frame payload the raw client accepts from the server: far above
/// anything the tests send, and a bound on what a broken server can make the
/// test buffer.
const CLIENT_MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Where the `wavecast` binary of the current build profile is:
/// `target/<profile>/wavecast`, the parent of the `deps/` directory that
/// holds the running test or bench executable.
pub fn binary_path() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is not inside target/<profile>/deps");
    profile_dir.join(format!("wavecast{}", std::env::consts::EXE_SUFFIX))
}

/// A file with a unique path in the temp directory, removed on drop.
///
/// Tests run in parallel threads and processes, so the PID, a counter and
/// the clock all go into the name.
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a fresh, unique file whose name ends in `.ext`.
    ///
    /// # Panics
    ///
    /// If the file cannot be written.
    pub fn new(ext: &str, contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "wavecast-test-{}-{n}-{nanos}.{ext}",
            std::process::id()
        ));
        fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    /// The file's path as a string (for a command line).
    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// The file's path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A running `wavecast serve` process on `127.0.0.1` and a free port.
///
/// Dropping it kills the process (by the PID it was started with, never by
/// name) and reaps it. If the test is panicking, the server's stderr is
/// printed so the failure shows what the server logged.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr, removed once the server is dropped.
    stderr: TempFile,
    /// Set once the process has been reaped; after that its PID may belong
    /// to another process and must not be signalled.
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts `wavecast serve --listen 127.0.0.1:0 ARGS...` and waits until
    /// it prints its listening line.
    ///
    /// `WAVECAST_*` variables of the test's environment are not passed on,
    /// so the server runs with exactly the flags given here.
    ///
    /// # Panics
    ///
    /// If the binary is missing (run `cargo build -p wavecast`), or the
    /// server exits or stays silent before listening; the panic message
    /// holds its stderr.
    pub fn start(args: &[&str]) -> Server {
        let bin = binary_path();
        assert!(
            bin.is_file(),
            "{} not found: run `cargo build -p wavecast` first (the integration tests run the real binary)",
            bin.display()
        );
        let stderr_file = TempFile::new("stderr", "");
        let stderr =
            File::create(stderr_file.as_path()).expect("cannot create the server's stderr file");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WAVECAST_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        // A thread reads stdout for the whole life of the process, so the
        // server can never block on a full pipe; the first line we want
        // comes back over the channel.
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the address is known: keep
                // draining anyway.
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(LISTENING_PREFIX) {
                        match rest.parse::<SocketAddr>() {
                            Ok(addr) => break addr,
                            Err(e) => fail_start(
                                child,
                                stderr_file,
                                &format!("bad listening line {line:?}: {e}"),
                            ),
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => fail_start(
                    child,
                    stderr_file,
                    &format!("no listening line within {START_TIMEOUT:?}"),
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    fail_start(child, stderr_file, "server closed stdout before listening")
                }
            }
        };
        Server {
            child,
            addr,
            stderr: stderr_file,
            status: None,
        }
    }

    /// `wavecast serve --echo ARGS...`: the `/echo` endpoint is on.
    pub fn echo(args: &[&str]) -> Server {
        let mut all = vec!["--echo"];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident memory in bytes (`VmRSS` of
    /// `/proc/PID/status`, for the PID it was started with).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the server process.
    ///
    /// # Panics
    ///
    /// If the process has already been reaped (its PID may have been reused
    /// by then) or `kill(2)` fails.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.status.is_none(),
            "the server has exited already; not signalling a PID that may be reused"
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("PID fits pid_t");
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not yet
        // reaped, so it still names that process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    /// True once the server process has a handler installed for `sig`
    /// (Linux: the `SigCgt` mask in `/proc/PID/status`).
    ///
    /// A signal sent before the handler exists takes its default action
    /// (for SIGTERM and SIGINT: death by signal, not a graceful shutdown),
    /// so a test about graceful shutdown checks this first.
    pub fn catches_signal(&self, sig: libc::c_int) -> bool {
        let Ok(bit) = u32::try_from(sig - 1) else {
            return false;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{}/status", self.child.id())) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| bit < 64 && mask & (1 << bit) != 0)
    }

    /// Waits up to `timeout` until [`Server::catches_signal`] holds for
    /// `sig`.
    ///
    /// # Panics
    ///
    /// If it does not within `timeout`.
    pub fn wait_catches_signal(&self, sig: libc::c_int, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.catches_signal(sig) {
            assert!(
                Instant::now() < deadline,
                "the server installed no handler for signal {sig} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// What the server wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr.as_path()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // Child::kill sends SIGKILL to this child's PID, which cannot
            // have been reused: we have not reaped it yet.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- wavecast server {} stderr ----\n{}---- end of server stderr ----",
                self.addr,
                self.stderr()
            );
        }
        // The stderr file goes with the `stderr` field.
    }
}

/// Kills a server that failed to start and panics with its stderr.
fn fail_start(mut child: Child, stderr_file: TempFile, why: &str) -> ! {
    let _ = child.kill();
    let status = child.wait();
    let stderr = fs::read_to_string(stderr_file.as_path()).unwrap_or_default();
    drop(stderr_file);
    panic!("wavecast server failed to start: {why} (exit: {status:?})\nstderr:\n{stderr}");
}

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

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
/// [`pubsub`] (where it is also called [`pubsub::HttpReply`]).
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
struct Head {
    /// The response, with an empty body.
    response: HttpResponse,
    /// The head's length in the buffer, the empty line included.
    len: usize,
    /// The body's length; `None`: everything until the server closes.
    body: Option<usize>,
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
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<Head> {
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

// ---------------------------------------------------------------------------
// Raw WebSocket client
// ---------------------------------------------------------------------------

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
        // The client's checks of RFC 6455 4.1, as the core's client side
        // makes them.
        if let Err(e) = wavecast_core::handshake::read_response(
            &buf[..head_len],
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
        Ok(RawClient {
            stream,
            inbuf: BytesMut::from(leftover),
            decoder: FrameDecoder::client(CLIENT_MAX_PAYLOAD),
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

// ---------------------------------------------------------------------------
// tokio-tungstenite helpers
// ---------------------------------------------------------------------------

/// A tokio-tungstenite client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with tokio-tungstenite.
///
/// # Panics
///
/// If the handshake fails.
pub async fn ws_connect(url: &str) -> Ws {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _resp)) => ws,
        Err(e) => panic!("tokio-tungstenite could not connect to {url}: {e}"),
    }
}

/// The next message that is not a ping or pong (tokio-tungstenite answers
/// pings itself while it is read), `None` once the stream has ended.
///
/// # Panics
///
/// On a timeout or a protocol/I/O error.
pub async fn next_message(ws: &mut Ws, timeout: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message from the server within {timeout:?}"));
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return Some(m),
            Some(Err(e)) => panic!("websocket error: {e}"),
            None => return None,
        }
    }
}

/// Reads until the server's close frame arrives and returns its code
/// (skipping any other message); then keeps reading until the stream ends,
/// so tokio-tungstenite sends its reply and sees the TCP close.
///
/// # Panics
///
/// If the stream ends or fails before a close frame, or on a timeout.
pub async fn expect_close(ws: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + timeout;
    let code = loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close frame from the server within {timeout:?}"));
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket error before the close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    };
    // Drain: the close reply goes out and the server's TCP close is seen.
    // Errors here (a reset after the handshake) do not change the outcome.
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
    code
}
