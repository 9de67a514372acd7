//! The publisher: one connection sending every publication (wavecast's
//! `publish` commands, `POST /api/publish` requests, or a peer's plain
//! messages), paced by a rate or by acknowledgements, which a reading task
//! counts (`Acks`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use wavecast_core::frame::OpCode;
use wavecast_core::protocol::{Command, Payload};

use super::connect::{open_tcp, websocket_handshake};
use super::marker::{write_json_payload, write_payload};
use super::reader::{Event, Reader, Reply};
use super::subscriber::{connect_subscriber, Conn};
use super::token::Credentials;
use super::writer::Writer;
use super::{find, wavecast_request, MAX_HEAD, MAX_MESSAGE, READ_CHUNK};
use crate::stats::now_ns;
use crate::{BenchError, BenchUrl, PublishVia, Target, CHANNEL};

/// How long a publisher waits for the server to acknowledge anything
/// before giving up.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last publication: how long the publisher waits for the next
/// acknowledgement before it stops waiting for the rest (a peer may drop
/// the publisher's own copies).
const ACK_SETTLE: Duration = Duration::from_secs(3);

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
    /// The data is a JSON object ([`write_json_payload`]), not a string.
    pub json_data: bool,
    /// wavecast over the WebSocket: authenticate the publisher's connection
    /// with these first (`--token-hmac-secret`).
    pub credentials: Option<Credentials>,
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

/// The data as wavecast's `data` value, into `out`: the object itself
/// (`--json-data`), or the marker text as a JSON string.
fn json_value(payload: &[u8], json_data: bool, out: &mut Vec<u8>) -> Result<(), BenchError> {
    out.clear();
    if json_data {
        out.extend_from_slice(payload);
        Ok(())
    } else {
        json_string(payload, out)
    }
}

/// Appends `text` as a JSON string (quoted, escaped) to `out`.
fn json_string(text: &[u8], out: &mut Vec<u8>) -> Result<(), BenchError> {
    serde_json::to_writer(out, &*String::from_utf8_lossy(text))?;
    Ok(())
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
        let (buf, _) = websocket_handshake(&mut stream, &cfg.url, false).await?;
        match &cfg.credentials {
            Some(credentials) => {
                let mut conn = Conn {
                    stream,
                    reader: Reader::new(cfg.target, buf),
                    writer: Writer::new(),
                };
                conn.authenticate(credentials).await?;
                let buf = conn.reader.into_buf();
                let (rd, wr) = conn.stream.into_split();
                (rd, wr, conn.writer, buf)
            }
            None => {
                let (rd, wr) = stream.into_split();
                (rd, wr, Writer::new(), buf)
            }
        }
    } else {
        // The peers send each message to the publisher too: subscribe it
        // like any other client and count its copies as acknowledgements.
        let conn = connect_subscriber(cfg.target, &cfg.url, None, None, false).await?;
        let buf = conn.reader.into_buf();
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
    let mut quoted = Vec::with_capacity(cfg.payload + 2);
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
        if cfg.json_data {
            write_json_payload(&mut payload, seq, sent_ns, cfg.payload);
        } else {
            write_payload(&mut payload, seq, sent_ns, cfg.payload);
        }
        message.clear();
        let (opcode, bytes): (OpCode, &[u8]) = match cfg.target {
            Target::Wavecast if api => {
                json_value(&payload, cfg.json_data, &mut quoted)?;
                let data = String::from_utf8_lossy(&quoted);
                let body = format!("{{\"channel\":\"{CHANNEL}\",\"data\":{data}}}");
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
                json_value(&payload, cfg.json_data, &mut quoted)?;
                let data = Payload::from_json(&quoted)
                    .map_err(|e| BenchError::Usage(format!("publication data: {e}")))?;
                let command = Command::Publish {
                    channel: CHANNEL.into(),
                    data,
                };
                message.extend_from_slice(&wavecast_request(seq + 1, command));
                (OpCode::Text, &message)
            }
            Target::Ws | Target::Tungstenite => (OpCode::Text, &payload),
            Target::Socketio => {
                // Socket.IO's event argument is a JSON string, whatever the
                // data is.
                message.extend_from_slice(b"42[\"publish\",");
                json_string(&payload, &mut message)?;
                message.push(b']');
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
            Event::Subscribed | Event::Connected { .. } | Event::Other => {}
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
