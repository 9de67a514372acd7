//! A subscriber: a connection opened and subscribed to the bench channel
//! the target's way ([`connect_subscriber`]), then its delivery loop
//! ([`run_subscriber`]), which records every publication.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::net::TcpStream;
use wavecast_core::frame::OpCode;
use wavecast_core::protocol::Command;

use super::connect::{open_tcp, websocket_handshake};
use super::reader::{Event, Reader};
use super::wavecast_request;
use super::writer::Writer;
use crate::stats::{Recorder, SubscriberState};
use crate::{BenchError, BenchUrl, Target, CHANNEL};

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
            let cmd = wavecast_request(
                1,
                Command::Subscribe {
                    channel: CHANNEL.into(),
                    recover: None,
                    token: None,
                },
            );
            conn.writer
                .send(&mut conn.stream, OpCode::Text, &cmd)
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
