//! The load tool's client side: a raw WebSocket client over a tokio
//! `TcpStream` and each target's protocol on top of it.
//!
//! A raw client rather than a WebSocket library, so that a subscriber costs
//! the tool one read buffer and a few bytes of state, decoding a delivery
//! allocates nothing (the frame's payload is a view into the read buffer),
//! and the figures measure the server.
//!
//! Every publication's data is the same ASCII text in every protocol:
//! `~SEQ:SENT_NS:` padded with `x` to the payload size. The `~` marks
//! where it starts inside whatever envelope the target wraps it in (channel
//! and protocol names never contain `~`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use wavecast_core::frame::{encode_masked, FrameDecoder, OpCode};

use super::stats::{now_ns, Recorder, SubscriberState};
use super::{BenchError, BenchUrl, PublishVia, Target, CHANNEL};

/// Largest frame or message the tool accepts from a server (a bound on
/// what a broken server can make it buffer).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest HTTP response head or NATS control line.
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 4096;
/// How long a publisher waits for the server to acknowledge anything
/// before giving up.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last publication: how long the publisher waits for the next
/// acknowledgement before it stops waiting for the rest (a peer may drop
/// the publisher's own copies).
const ACK_SETTLE: Duration = Duration::from_secs(3);

/// Opens a TCP connection to `addr`, from `source` if given. Binding with
/// `IP_BIND_ADDRESS_NO_PORT` lets the kernel choose the port at connect
/// time for the whole 4-tuple, so each (source address, server) pair has
/// its own port range: a run spread over several servers needs no more
/// source addresses than one against a single server.
pub async fn open_tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, BenchError> {
    let socket = TcpSocket::new_v4().map_err(|e| BenchError::io("socket", e))?;
    if let Some(ip) = source {
        set_bind_address_no_port(&socket)
            .map_err(|e| BenchError::io("IP_BIND_ADDRESS_NO_PORT", e))?;
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
            .map_err(|e| BenchError::io(format!("bind {ip}"), e))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| BenchError::io(format!("connect {addr}"), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("TCP_NODELAY", e))?;
    Ok(stream)
}

fn set_bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is the open socket `socket` owns; the option value
    // points at a live c_int whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A `Sec-WebSocket-Key` unique within the process: 21 base64 digits from
/// a counter, then `A==` (a well-formed encoding of 16 bytes). Servers only
/// echo it back transformed; it has no security role for a load tool.
fn websocket_key() -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static COUNTER: AtomicU64 = AtomicU64::new(0x5eed);
    let mut n = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let mut key = String::with_capacity(24);
    for _ in 0..21 {
        key.push(char::from(DIGITS[(n & 63) as usize]));
        n = n.rotate_right(6);
    }
    key.push_str("A==");
    key
}

/// Sends the upgrade request and reads the response head; returns the
/// bytes that followed the head (the first frames, if the server was quick).
pub async fn websocket_handshake(
    stream: &mut TcpStream,
    url: &BenchUrl,
) -> Result<BytesMut, BenchError> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path,
        url.host,
        websocket_key()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| BenchError::io("sending the upgrade request", e))?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let head_len = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(BenchError::Server("upgrade response head too long".into()));
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| BenchError::io("reading the upgrade response", e))?;
        if n == 0 {
            return Err(BenchError::Server(
                "closed the connection during the handshake".into(),
            ));
        }
    };
    let status_line = buf[..]
        .split(|&b| b == b'\r')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 101") {
        return Err(BenchError::Server(format!(
            "refused the upgrade: {status_line}"
        )));
    }
    buf.advance(head_len);
    Ok(buf)
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes a publication's data: `~SEQ:SENT_NS:` padded with `x` to `size`
/// bytes (longer if `size` is too small for the two numbers).
pub fn write_payload(out: &mut Vec<u8>, seq: u64, sent_ns: u64, size: usize) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "~{seq}:{sent_ns}:");
    let written = out.len() - start;
    out.resize(start + written.max(size), b'x');
}

/// Finds the `~SEQ:SENT_NS:` marker in a message and parses it.
pub fn parse_marker(msg: &[u8]) -> Option<(u64, u64)> {
    let start = msg.iter().position(|&b| b == b'~')?;
    let rest = msg.get(start + 1..)?;
    let (seq, rest) = parse_decimal(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (sent, rest) = parse_decimal(rest)?;
    rest.strip_prefix(b":")?;
    Some((seq, sent))
}

fn parse_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s.get(..digits)? {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((v, s.get(digits..)?))
}

/// What the client must send back to keep the connection alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A WebSocket pong carrying the ping's payload.
    Pong(Bytes),
    /// A text frame (Socket.IO's `3` answering its `2`).
    Text(&'static [u8]),
    /// A binary frame (NATS's `PONG\r\n` answering `PING\r\n`).
    Binary(&'static [u8]),
}

/// One thing a server said, as far as the load tool cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publication arrived.
    Pub {
        /// Its sequence number.
        seq: u64,
        /// When the publisher sent it (monotonic nanoseconds).
        sent_ns: u64,
    },
    /// The subscription is in place (subscribe reply, Socket.IO `40`,
    /// NATS `PONG`).
    Subscribed,
    /// A publish was acknowledged (wavecast's publish reply or HTTP 200).
    Ack,
    /// The server refused a command.
    Error(String),
    /// The server expects an answer.
    Reply(Reply),
    /// The server closed the connection.
    Closed,
    /// Anything else.
    Other,
}

/// The reading half of a connection: a read buffer and frame decoding.
#[derive(Debug)]
pub struct Reader {
    target: Target,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// A fragmented message being reassembled, and its opcode.
    partial: Option<(OpCode, BytesMut)>,
    /// NATS: the protocol byte stream carried in binary frames.
    stream: BytesMut,
}

impl Reader {
    /// A reader that starts with `buf` (bytes that followed the handshake).
    pub fn new(target: Target, buf: BytesMut) -> Reader {
        Reader {
            target,
            buf,
            decoder: FrameDecoder::client(MAX_MESSAGE),
            partial: None,
            stream: BytesMut::new(),
        }
    }

    /// The next event.
    pub async fn next_event<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Event, BenchError> {
        loop {
            if self.target == Target::Nats {
                if let Some(ev) = self.nats_event()? {
                    return Ok(ev);
                }
            }
            let Some((opcode, payload)) = self.next_message(rd).await? else {
                return Ok(Event::Closed);
            };
            match opcode {
                OpCode::Ping => return Ok(Event::Reply(Reply::Pong(payload))),
                OpCode::Pong => {}
                OpCode::Close => return Ok(Event::Closed),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    if self.target == Target::Nats {
                        if self.stream.len().saturating_add(payload.len()) > MAX_MESSAGE {
                            return Err(BenchError::Server("NATS stream without line end".into()));
                        }
                        self.stream.extend_from_slice(&payload);
                    } else {
                        return Ok(classify(self.target, &payload));
                    }
                }
            }
        }
    }

    /// The next whole message (fragments joined) or control frame; `None`
    /// at end of stream.
    async fn next_message<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<(OpCode, Bytes)>, BenchError> {
        loop {
            let frame = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| BenchError::Server(format!("bad frame: {e}")))?;
            let Some(frame) = frame else {
                if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                    self.buf.reserve(READ_CHUNK);
                }
                let n = rd
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| BenchError::io("reading", e))?;
                if n == 0 {
                    return Ok(None);
                }
                continue;
            };
            if frame.opcode.is_control() {
                return Ok(Some((frame.opcode, frame.payload)));
            }
            match (frame.opcode, frame.fin, self.partial.take()) {
                (OpCode::Continuation, fin, Some((op, mut acc))) => {
                    if acc.len().saturating_add(frame.payload.len()) > MAX_MESSAGE {
                        return Err(BenchError::Server("message too large".into()));
                    }
                    acc.extend_from_slice(&frame.payload);
                    if fin {
                        return Ok(Some((op, acc.freeze())));
                    }
                    self.partial = Some((op, acc));
                }
                (OpCode::Continuation, _, None) => {
                    return Err(BenchError::Server(
                        "continuation frame without a first frame".into(),
                    ))
                }
                (_, _, Some(_)) => {
                    return Err(BenchError::Server(
                        "new message inside a fragmented one".into(),
                    ))
                }
                (op, true, None) => return Ok(Some((op, frame.payload))),
                (op, false, None) => self.partial = Some((op, BytesMut::from(&frame.payload[..]))),
            }
        }
    }

    /// One event from the NATS byte stream, if a whole line (and payload)
    /// is there.
    fn nats_event(&mut self) -> Result<Option<Event>, BenchError> {
        let Some(eol) = find(&self.stream, b"\r\n") else {
            if self.stream.len() > MAX_HEAD && !self.stream.starts_with(b"MSG ") {
                return Err(BenchError::Server("NATS control line too long".into()));
            }
            return Ok(None);
        };
        let line = &self.stream[..eol];
        if line.starts_with(b"MSG ") {
            let size = line
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| BenchError::Server("NATS MSG line without a size".into()))?;
            let total = eol
                .checked_add(4)
                .and_then(|t| t.checked_add(size))
                .filter(|&t| t <= MAX_MESSAGE)
                .ok_or_else(|| BenchError::Server("NATS message too large".into()))?;
            if self.stream.len() < total {
                return Ok(None);
            }
            let ev = match self
                .stream
                .get(eol + 2..eol + 2 + size)
                .and_then(parse_marker)
            {
                Some((seq, sent_ns)) => Event::Pub { seq, sent_ns },
                None => Event::Other,
            };
            self.stream.advance(total);
            return Ok(Some(ev));
        }
        let ev = if line == b"PING" {
            Event::Reply(Reply::Binary(b"PONG\r\n"))
        } else if line == b"PONG" {
            Event::Subscribed
        } else if line.starts_with(b"-ERR") {
            Event::Error(String::from_utf8_lossy(line).into_owned())
        } else {
            Event::Other
        };
        self.stream.advance(eol + 2);
        Ok(Some(ev))
    }
}

/// What a (non-NATS) text or binary message means for `target`.
pub fn classify(target: Target, msg: &[u8]) -> Event {
    let publication = || match parse_marker(msg) {
        Some((seq, sent_ns)) => Event::Pub { seq, sent_ns },
        None => Event::Other,
    };
    match target {
        Target::Wavecast => {
            if msg.starts_with(b"{\"push\"") {
                publication()
            } else if find(msg, b"\"error\"").is_some() {
                Event::Error(String::from_utf8_lossy(msg).into_owned())
            } else if find(msg, b"\"subscribe\"").is_some() {
                Event::Subscribed
            } else if find(msg, b"\"publish\"").is_some() {
                Event::Ack
            } else {
                Event::Other
            }
        }
        Target::Ws | Target::Tungstenite | Target::Nats => publication(),
        Target::Socketio => match msg {
            b"2" => Event::Reply(Reply::Text(b"3")),
            [b'4', b'2', ..] => publication(),
            [b'4', b'0', ..] => Event::Subscribed,
            [b'4', b'1', ..] => Event::Closed,
            [b'4', b'4', ..] => Event::Error(String::from_utf8_lossy(msg).into_owned()),
            _ => Event::Other,
        },
    }
}

/// The writing half of a connection: masks and frames what the client sends.
#[derive(Debug)]
pub struct Writer {
    out: BytesMut,
    mask: u32,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// A writer with its own mask sequence.
    pub fn new() -> Writer {
        static SEED: AtomicU32 = AtomicU32::new(0x2545_f491);
        Writer {
            out: BytesMut::new(),
            mask: SEED.fetch_add(0x9e37_79b9, Ordering::Relaxed) | 1,
        }
    }

    /// The next masking key (xorshift32: RFC 6455 wants keys a page's
    /// script cannot predict; a load tool only needs them to vary).
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_ne_bytes()
    }

    /// Sends one whole frame.
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), BenchError> {
        self.out.clear();
        let mask = self.next_mask();
        encode_masked(true, opcode, payload, mask, &mut self.out);
        wr.write_all(&self.out)
            .await
            .map_err(|e| BenchError::io("writing", e))
    }

    /// Answers a [`Reply`].
    pub async fn reply<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        reply: &Reply,
    ) -> Result<(), BenchError> {
        match reply {
            Reply::Pong(p) => self.send(wr, OpCode::Pong, p).await,
            Reply::Text(t) => self.send(wr, OpCode::Text, t).await,
            Reply::Binary(b) => self.send(wr, OpCode::Binary, b).await,
        }
    }
}

/// An open, subscribed connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Its reading half.
    pub reader: Reader,
    /// Its writing half.
    pub writer: Writer,
}

impl Conn {
    /// Waits for `Subscribed`, answering what needs answering; other events
    /// are dropped (nothing is published yet).
    async fn until_subscribed(&mut self) -> Result<(), BenchError> {
        loop {
            match self.reader.next_event(&mut self.stream).await? {
                Event::Subscribed => return Ok(()),
                Event::Error(e) => {
                    return Err(BenchError::Server(format!("refused to subscribe: {e}")))
                }
                Event::Closed => {
                    return Err(BenchError::Server("closed before subscribing".into()))
                }
                Event::Reply(r) => self.writer.reply(&mut self.stream, &r).await?,
                Event::Pub { .. } | Event::Ack | Event::Other => {}
            }
        }
    }
}

/// Opens a WebSocket to `url` and subscribes it to the bench channel the
/// target's way.
pub async fn connect_subscriber(
    target: Target,
    url: &BenchUrl,
    source: Option<Ipv4Addr>,
) -> Result<Conn, BenchError> {
    let mut stream = open_tcp(url.addr, source).await?;
    let buf = websocket_handshake(&mut stream, url).await?;
    let mut conn = Conn {
        stream,
        reader: Reader::new(target, buf),
        writer: Writer::new(),
    };
    match target {
        Target::Wavecast => {
            let cmd = format!("{{\"id\":1,\"subscribe\":{{\"channel\":\"{CHANNEL}\"}}}}");
            conn.writer
                .send(&mut conn.stream, OpCode::Text, cmd.as_bytes())
                .await?;
            conn.until_subscribed().await?;
        }
        // Connecting is subscribing.
        Target::Ws | Target::Tungstenite => {}
        Target::Socketio => {
            // The open packet `0{...}` comes first; `40` joins the default
            // namespace and `40{"sid":..}` confirms it.
            conn.writer
                .send(&mut conn.stream, OpCode::Text, b"40")
                .await?;
            conn.until_subscribed().await?;
        }
        Target::Nats => {
            let cmd = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {CHANNEL} 1\r\nPING\r\n"
            );
            conn.writer
                .send(&mut conn.stream, OpCode::Binary, cmd.as_bytes())
                .await?;
            conn.until_subscribed().await?;
        }
    }
    Ok(conn)
}

/// Reads deliveries until the server closes the connection (or the task
/// is aborted), recording each into `recorder`.
pub async fn run_subscriber(mut conn: Conn, recorder: Arc<Recorder>) -> Result<(), BenchError> {
    let mut state = SubscriberState::default();
    loop {
        match conn.reader.next_event(&mut conn.stream).await? {
            Event::Pub { seq, sent_ns } => recorder.record(&mut state, seq, sent_ns),
            Event::Reply(r) => conn.writer.reply(&mut conn.stream, &r).await?,
            Event::Closed => return Ok(()),
            Event::Subscribed | Event::Ack | Event::Other | Event::Error(_) => {}
        }
    }
}

/// How the publisher runs.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The server's protocol.
    pub target: Target,
    /// Where.
    pub url: BenchUrl,
    /// wavecast: WebSocket or HTTP API.
    pub via: PublishVia,
    /// API key for the HTTP API.
    pub api_key: Option<String>,
    /// How many.
    pub publications: u64,
    /// Publications per second; `None` = as fast as acknowledged.
    pub rate: Option<f64>,
    /// Unacknowledged publications allowed when `rate` is `None`.
    pub window: u64,
    /// Data bytes per publication.
    pub payload: usize,
}

/// What the publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// The publisher's connection, kept open until the run is collected:
    /// closing it early can make a server drop requests still in flight
    /// (pipelined HTTP requests, for one).
    pub connection: Option<PublisherConnection>,
    /// Publications acknowledged by the time publishing stopped.
    pub acked: u64,
    /// Monotonic time of the first send.
    pub first_ns: u64,
    /// Monotonic time of the last send.
    pub last_ns: u64,
    /// Publications sent.
    pub sent: u64,
}

/// Acknowledgements seen by the publisher's reading task.
#[derive(Debug, Default)]
struct Acks {
    acked: AtomicU64,
    notify: Notify,
    error: Mutex<Option<String>>,
}

impl Acks {
    fn ack(&self) {
        self.acked.fetch_add(1, Ordering::Release);
        self.notify.notify_one();
    }

    fn fail(&self, e: String) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.notify.notify_one();
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|s| s.clone())
    }
}

/// Sends `publications` publications and returns when the last is written.
/// Acknowledgements (wavecast's replies, HTTP responses, or the publisher's
/// own copy from the peers, which send every message to every client)
/// pace `--max`; a refused publish stops the run.
pub async fn publish(cfg: &PublishConfig) -> Result<Published, BenchError> {
    let acks = Arc::new(Acks::default());
    let api = cfg.target == Target::Wavecast && cfg.via == PublishVia::Api;
    let (rd, mut wr, mut writer, buf) = if api {
        let stream = open_tcp(cfg.url.addr, None).await?;
        let (rd, wr) = stream.into_split();
        (rd, wr, Writer::new(), BytesMut::new())
    } else if cfg.target == Target::Wavecast {
        let mut stream = open_tcp(cfg.url.addr, None).await?;
        let buf = websocket_handshake(&mut stream, &cfg.url).await?;
        let (rd, wr) = stream.into_split();
        (rd, wr, Writer::new(), buf)
    } else {
        // The peers send each message to the publisher too: subscribe it
        // like any other client and count its copies as acknowledgements.
        let conn = connect_subscriber(cfg.target, &cfg.url, None).await?;
        let Reader { buf, .. } = conn.reader;
        let (rd, wr) = conn.stream.into_split();
        (rd, wr, conn.writer, buf)
    };
    // Pongs from the reading task go through this channel to the writer.
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::unbounded_channel::<Reply>();
    let reader_task = {
        let acks = acks.clone();
        let target = cfg.target;
        tokio::spawn(async move {
            let result = if api {
                read_api_responses(rd, buf, &acks).await
            } else {
                read_acks(target, rd, buf, &acks, &pong_tx).await
            };
            if let Err(e) = result {
                acks.fail(e.to_string());
            }
        })
    };
    let abort = AbortOnDrop(reader_task);

    let mut payload = Vec::with_capacity(cfg.payload + 32);
    let mut message = Vec::with_capacity(cfg.payload + 256);
    let start = tokio::time::Instant::now();
    let mut done = Published::default();
    for seq in 0..cfg.publications {
        while let Ok(r) = pong_rx.try_recv() {
            writer.reply(&mut wr, &r).await?;
        }
        if let Some(e) = acks.error() {
            return Err(BenchError::Server(format!("publisher: {e}")));
        }
        match cfg.rate {
            Some(rate) if rate > 0.0 => {
                tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
            }
            _ => {
                while seq.saturating_sub(acks.acked.load(Ordering::Acquire)) >= cfg.window.max(1) {
                    if tokio::time::timeout(ACK_TIMEOUT, acks.notify.notified())
                        .await
                        .is_err()
                    {
                        return Err(BenchError::Server(format!(
                            "acknowledged nothing for {ACK_TIMEOUT:?} (publication {seq})"
                        )));
                    }
                    if let Some(e) = acks.error() {
                        return Err(BenchError::Server(format!("publisher: {e}")));
                    }
                }
            }
        }
        let sent_ns = now_ns();
        payload.clear();
        write_payload(&mut payload, seq, sent_ns, cfg.payload);
        message.clear();
        let data = String::from_utf8_lossy(&payload);
        let (opcode, bytes): (OpCode, &[u8]) = match cfg.target {
            Target::Wavecast if api => {
                let body = format!("{{\"channel\":\"{CHANNEL}\",\"data\":\"{data}\"}}");
                let key = cfg.api_key.as_deref().unwrap_or("");
                message.extend_from_slice(
                    format!(
                        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: apikey {key}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        cfg.url.host,
                        body.len()
                    )
                    .as_bytes(),
                );
                wr.write_all(&message)
                    .await
                    .map_err(|e| BenchError::io("writing a publish request", e))?;
                (OpCode::Text, &[])
            }
            Target::Wavecast => {
                message.extend_from_slice(
                    format!(
                        "{{\"id\":{},\"publish\":{{\"channel\":\"{CHANNEL}\",\"data\":\"{data}\"}}}}",
                        seq + 1
                    )
                    .as_bytes(),
                );
                (OpCode::Text, &message)
            }
            Target::Ws | Target::Tungstenite => (OpCode::Text, &payload),
            Target::Socketio => {
                message.extend_from_slice(format!("42[\"publish\",\"{data}\"]").as_bytes());
                (OpCode::Text, &message)
            }
            Target::Nats => {
                message
                    .extend_from_slice(format!("PUB {CHANNEL} {}\r\n", payload.len()).as_bytes());
                message.extend_from_slice(&payload);
                message.extend_from_slice(b"\r\n");
                (OpCode::Binary, &message)
            }
        };
        if !api {
            writer.send(&mut wr, opcode, bytes).await?;
        }
        if seq == 0 {
            done.first_ns = sent_ns;
        }
        done.last_ns = sent_ns;
        done.sent = seq + 1;
    }
    // Wait for the acknowledgements still due, as long as they keep coming.
    let mut seen = acks.acked.load(Ordering::Acquire);
    while seen < done.sent {
        if tokio::time::timeout(ACK_SETTLE, acks.notify.notified())
            .await
            .is_err()
        {
            let now = acks.acked.load(Ordering::Acquire);
            if now == seen {
                break;
            }
        }
        seen = acks.acked.load(Ordering::Acquire);
        while let Ok(r) = pong_rx.try_recv() {
            writer.reply(&mut wr, &r).await?;
        }
    }
    done.acked = seen;
    done.connection = Some(PublisherConnection {
        _write: wr,
        _reader: abort,
    });
    Ok(done)
}

/// The publisher's open connection (see [`Published::connection`]).
#[derive(Debug)]
pub struct PublisherConnection {
    _write: tokio::net::tcp::OwnedWriteHalf,
    _reader: AbortOnDrop,
}

/// Aborts a task when dropped (the publisher's reader outlives no run).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_acks<R: AsyncRead + Unpin>(
    target: Target,
    mut rd: R,
    buf: BytesMut,
    acks: &Acks,
    pongs: &tokio::sync::mpsc::UnboundedSender<Reply>,
) -> Result<(), BenchError> {
    let mut reader = Reader::new(target, buf);
    loop {
        match reader.next_event(&mut rd).await? {
            Event::Ack | Event::Pub { .. } => acks.ack(),
            Event::Error(e) => acks.fail(e),
            Event::Reply(r) => {
                // The writer is gone only when publishing is over.
                let _ = pongs.send(r);
            }
            Event::Closed => {
                return Err(BenchError::Server(
                    "closed the publisher's connection".into(),
                ))
            }
            Event::Subscribed | Event::Other => {}
        }
    }
}

/// Appends what the API connection has next to `buf`; its end is an error
/// (responses are still owed).
async fn read_more<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), BenchError> {
    buf.reserve(READ_CHUNK);
    let n = rd
        .read_buf(buf)
        .await
        .map_err(|e| BenchError::io("reading an API response", e))?;
    if n == 0 {
        return Err(BenchError::Server("closed the API connection".into()));
    }
    Ok(())
}

/// Reads pipelined HTTP/1.1 responses to `POST /api/publish`: 200 is an
/// acknowledgement, anything else a refusal.
async fn read_api_responses<R: AsyncRead + Unpin>(
    mut rd: R,
    mut buf: BytesMut,
    acks: &Acks,
) -> Result<(), BenchError> {
    loop {
        let head_len = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(BenchError::Server("API response head too long".into()));
            }
            read_more(&mut rd, &mut buf).await?;
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        let status = head.split(' ').nth(1).unwrap_or("").to_string();
        let body_len = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if body_len > MAX_MESSAGE {
            return Err(BenchError::Server("API response body too large".into()));
        }
        while buf.len() < head_len + body_len {
            read_more(&mut rd, &mut buf).await?;
        }
        if status == "200" {
            acks.ack();
        } else {
            let body = String::from_utf8_lossy(&buf[head_len..head_len + body_len]).into_owned();
            acks.fail(format!("HTTP {status}: {body}"));
        }
        buf.advance(head_len + body_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_parses_back() {
        let mut p = Vec::new();
        write_payload(&mut p, 42, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_marker(&p), Some((42, 123_456_789)));
        // Too small a size: the numbers still fit.
        let mut p = Vec::new();
        write_payload(&mut p, 7, 8, 1);
        assert_eq!(p, b"~7:8:");
        // Inside each target's envelope.
        let wrapped = br#"{"push":{"channel":"bench","pub":{"offset":3,"data":"~7:8:xx"}}}"#;
        assert_eq!(
            classify(Target::Wavecast, wrapped),
            Event::Pub { seq: 7, sent_ns: 8 }
        );
        assert_eq!(
            classify(Target::Socketio, b"42[\"msg\",\"~1:2:x\"]"),
            Event::Pub { seq: 1, sent_ns: 2 }
        );
    }

    #[test]
    fn broken_markers_are_not_publications() {
        for bad in [
            &b"~"[..],
            b"~1",
            b"~1:",
            b"~1:2",
            b"~a:2:",
            b"~99999999999999999999999:1:",
            b"no marker",
        ] {
            assert_eq!(
                parse_marker(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wavecast_replies_are_told_apart() {
        assert_eq!(
            classify(
                Target::Wavecast,
                br#"{"id":1,"subscribe":{"epoch":"e","offset":0}}"#
            ),
            Event::Subscribed
        );
        assert_eq!(
            classify(Target::Wavecast, br#"{"id":2,"publish":{"offset":1}}"#),
            Event::Ack
        );
        assert!(matches!(
            classify(
                Target::Wavecast,
                br#"{"id":2,"error":{"code":104,"message":"no"}}"#
            ),
            Event::Error(_)
        ));
        assert_eq!(
            classify(Target::Socketio, b"2"),
            Event::Reply(Reply::Text(b"3"))
        );
        assert_eq!(
            classify(Target::Socketio, b"40{\"sid\":\"x\"}"),
            Event::Subscribed
        );
    }

    #[tokio::test]
    async fn nats_stream_is_parsed_across_and_within_frames() {
        // Two binary frames: a MSG split in the middle of its payload, then
        // the rest plus a PING and a PONG in one frame.
        let mut wire = BytesMut::new();
        let f1 = b"INFO {}\r\nMSG bench 1 7\r\n~1:2";
        let f2 = b":xx\r\nPING\r\nPONG\r\n";
        for f in [&f1[..], &f2[..]] {
            wavecast_core::frame::encode_frame(true, OpCode::Binary, f, &mut wire);
        }
        let mut reader = Reader::new(Target::Nats, BytesMut::new());
        let mut rd = &wire[..];
        let mut events = Vec::new();
        loop {
            let ev = reader.next_event(&mut rd).await.unwrap();
            if ev == Event::Closed {
                break;
            }
            events.push(ev);
        }
        assert_eq!(
            events,
            vec![
                Event::Other,
                Event::Pub { seq: 1, sent_ns: 2 },
                Event::Reply(Reply::Binary(b"PONG\r\n")),
                Event::Subscribed,
            ]
        );
    }

    #[test]
    fn websocket_keys_are_well_formed_and_differ() {
        let a = websocket_key();
        let b = websocket_key();
        assert_ne!(a, b);
        for k in [a, b] {
            assert_eq!(k.len(), 24);
            assert!(k.ends_with("A=="));
        }
    }
}
