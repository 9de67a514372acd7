//! A subscriber: a connection opened, authenticated when the run has
//! credentials ([`Conn::authenticate`]), and subscribed to the bench
//! channel the target's way ([`connect_subscriber`]), then its delivery
//! loop ([`run_subscriber`]), which records every publication.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::net::TcpStream;
use wavecast_core::frame::OpCode;
use wavecast_core::protocol::Command;

use super::connect::{open_tcp, websocket_handshake};
use super::reader::{Event, Reader};
use super::token::Credentials;
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

/// The id of the `connect` command of an authenticated connection.
const CONNECT_ID: u64 = 1;

impl Conn {
    /// wavecast: sends `connect` with the credentials' token and waits for
    /// its reply, which must be a `connect` reply for the token's user; an
    /// error reply (or another user) is [`BenchError::Auth`].
    pub async fn authenticate(&mut self, credentials: &Credentials) -> Result<(), BenchError> {
        let cmd = wavecast_request(
            CONNECT_ID,
            Command::Connect {
                token: Some(credentials.token.clone()),
                data: None,
                ping: false,
            },
        );
        self.writer
            .send(&mut self.stream, OpCode::Text, &cmd)
            .await?;
        loop {
            match self.reader.next_event(&mut self.stream).await? {
                Event::Reply(r) => self.writer.reply(&mut self.stream, &r).await?,
                event => {
                    if connected(event, &credentials.user)? {
                        return Ok(());
                    }
                }
            }
        }
    }

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
                Event::Pub { .. } | Event::Ack | Event::Connected { .. } | Event::Other => {}
            }
        }
    }
}

/// Whether `event`, read while waiting for the `connect` reply, is that
/// reply for `user` (`false`: keep waiting). An error reply, a `connect`
/// reply for another user, or the end of the connection is an error.
fn connected(event: Event, user: &str) -> Result<bool, BenchError> {
    match event {
        Event::Connected { id, user: got } if id == CONNECT_ID => {
            if got == user {
                Ok(true)
            } else {
                Err(BenchError::Auth(format!(
                    "connected as user {got:?}, not the token's {user:?}"
                )))
            }
        }
        Event::Error(e) => Err(BenchError::Auth(format!("refused to connect: {e}"))),
        Event::Closed => Err(BenchError::Server("closed before connecting".into())),
        Event::Connected { .. }
        | Event::Subscribed
        | Event::Ack
        | Event::Pub { .. }
        | Event::Reply(_)
        | Event::Other => Ok(false),
    }
}

/// Opens a WebSocket to `url` (offering permessage-deflate with
/// `deflate`) and subscribes it to the bench channel the target's way;
/// with `credentials` (wavecast only), `connect` comes first and the
/// subscribe waits for its reply.
pub async fn connect_subscriber(
    target: Target,
    url: &BenchUrl,
    source: Option<Ipv4Addr>,
    credentials: Option<&Credentials>,
    deflate: bool,
) -> Result<Conn, BenchError> {
    if credentials.is_some() && target != Target::Wavecast {
        return Err(BenchError::Usage(
            "--token-hmac-secret is for --target wavecast".into(),
        ));
    }
    let mut stream = open_tcp(url.addr, source).await?;
    let (buf, deflate) = websocket_handshake(&mut stream, url, deflate).await?;
    let mut reader = Reader::new(target, buf);
    if deflate {
        reader = reader.with_deflate();
    }
    let mut conn = Conn {
        stream,
        reader,
        writer: Writer::new(),
    };
    match target {
        Target::Wavecast => {
            // Without credentials exactly what it always was: one
            // subscribe, id 1 (the server connects the client anonymously).
            let id = match credentials {
                Some(c) => {
                    conn.authenticate(c).await?;
                    CONNECT_ID + 1
                }
                None => 1,
            };
            let cmd = wavecast_request(
                id,
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
    // What arrived while subscribing is not the run's.
    conn.reader.take_bytes_read();
    loop {
        let event = conn.reader.next_event(&mut conn.stream).await?;
        recorder.add_bytes(conn.reader.take_bytes_read());
        match event {
            Event::Pub { seq, sent_ns } => recorder.record(&mut state, seq, sent_ns),
            Event::Reply(r) => conn.writer.reply(&mut conn.stream, &r).await?,
            Event::Closed => return Ok(()),
            Event::Subscribed
            | Event::Ack
            | Event::Connected { .. }
            | Event::Other
            | Event::Error(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wavecast_core::frame::{encode, FrameDecoder};
    use wavecast_core::handshake::{accept, parse_request, HandshakeConfig};
    use wavecast_core::protocol::{decode_request, Encoding, Request};

    use crate::client::token::{user_for, TokenSigner};

    /// A server that upgrades one connection (the core's own handshake
    /// code), answers each command with what `answer` returns (whole
    /// messages: text frames, or `None` for a ping), and returns what it
    /// got: each command, and `pong` for each pong.
    async fn scripted(
        answer: fn(&Request) -> Vec<Option<&'static str>>,
    ) -> (BenchUrl, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            loop {
                s.read_buf(&mut buf).await.unwrap();
                if let Some(head) = parse_request(&buf, 8192).unwrap() {
                    let ok = accept(&head, &HandshakeConfig::default()).unwrap();
                    s.write_all(&ok.response).await.unwrap();
                    // The client sends nothing before the answer.
                    buf.clear();
                    break;
                }
            }
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            loop {
                let Some(frame) = decoder.decode(&mut buf).unwrap() else {
                    if s.read_buf(&mut buf).await.unwrap() == 0 {
                        return got;
                    }
                    continue;
                };
                match frame.opcode {
                    OpCode::Pong => got.push("pong".to_owned()),
                    OpCode::Close => return got,
                    _ => {
                        got.push(String::from_utf8(frame.payload.to_vec()).unwrap());
                        let request = decode_request(Encoding::Json, &frame.payload).unwrap();
                        for out in answer(&request) {
                            let frame: Bytes = match out {
                                Some(text) => encode(OpCode::Text, text.as_bytes()),
                                None => encode(OpCode::Ping, b"p"),
                            };
                            s.write_all(&frame).await.unwrap();
                        }
                    }
                }
            }
        });
        let url = BenchUrl::parse(&format!("ws://{addr}/ws"), Target::Wavecast).unwrap();
        (url, task)
    }

    const SUBSCRIBED: &str = r#"{"id":2,"subscribe":{"epoch":"e","offset":0}}"#;

    fn credentials() -> Credentials {
        TokenSigner::new("S")
            .unwrap()
            .credentials(user_for(7))
            .unwrap()
    }

    #[tokio::test]
    async fn with_credentials_connect_comes_first_and_subscribe_waits_for_its_reply() {
        let (url, server) = scripted(|r| match &r.command {
            // A ping before the reply is answered while waiting.
            Command::Connect { .. } => vec![
                None,
                Some(
                    r#"{"id":1,"connect":{"client":"c-1","user":"u7","expires":true,"ttl":3599}}"#,
                ),
            ],
            Command::Subscribe { .. } => vec![Some(SUBSCRIBED)],
            _ => vec![],
        })
        .await;
        let c = credentials();
        let conn = connect_subscriber(Target::Wavecast, &url, None, Some(&c), false)
            .await
            .unwrap();
        drop(conn);
        let got = server.await.unwrap();
        assert_eq!(
            got,
            [
                format!(r#"{{"id":1,"connect":{{"token":"{}"}}}}"#, c.token),
                "pong".to_owned(),
                r#"{"id":2,"subscribe":{"channel":"bench"}}"#.to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn without_credentials_only_the_subscribe_is_sent_as_before() {
        let (url, server) = scripted(|r| match &r.command {
            Command::Subscribe { .. } => {
                vec![Some(r#"{"id":1,"subscribe":{"epoch":"e","offset":0}}"#)]
            }
            _ => vec![],
        })
        .await;
        drop(
            connect_subscriber(Target::Wavecast, &url, None, None, false)
                .await
                .unwrap(),
        );
        assert_eq!(
            server.await.unwrap(),
            [r#"{"id":1,"subscribe":{"channel":"bench"}}"#]
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_authentication_error_and_nothing_is_subscribed() {
        let (url, server) = scripted(|r| match &r.command {
            Command::Connect { .. } => vec![Some(
                r#"{"id":1,"error":{"code":112,"message":"bad token signature"}}"#,
            )],
            _ => vec![Some(SUBSCRIBED)],
        })
        .await;
        let err = connect_subscriber(Target::Wavecast, &url, None, Some(&credentials()), false)
            .await
            .unwrap_err();
        assert!(matches!(err, BenchError::Auth(_)), "{err:?}");
        assert!(err.to_string().contains("112"), "{err}");
        assert_eq!(err.exit_code(), 1);
        assert_eq!(server.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_connect_reply_for_another_user_is_an_authentication_error() {
        let (url, _server) = scripted(|r| match &r.command {
            Command::Connect { .. } => vec![Some(
                r#"{"id":1,"connect":{"client":"c","user":"","expires":false}}"#,
            )],
            _ => vec![Some(SUBSCRIBED)],
        })
        .await;
        let err = connect_subscriber(Target::Wavecast, &url, None, Some(&credentials()), false)
            .await
            .unwrap_err();
        match err {
            BenchError::Auth(e) => assert!(e.contains("\"u7\""), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn credentials_are_for_wavecast_only() {
        let url = BenchUrl::parse("ws://127.0.0.1:9/", Target::Nats).unwrap();
        let err = connect_subscriber(Target::Nats, &url, None, Some(&credentials()), false)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn only_the_connect_reply_to_the_connect_command_ends_the_wait() {
        let reply = |id| Event::Connected {
            id,
            user: "u1".into(),
        };
        assert!(connected(reply(CONNECT_ID), "u1").unwrap());
        assert!(!connected(reply(CONNECT_ID + 5), "u1").unwrap());
        for other in [Event::Other, Event::Ack, Event::Subscribed] {
            assert!(!connected(other, "u1").unwrap());
        }
        assert!(matches!(
            connected(Event::Error("command 1: 111 token expired".into()), "u1"),
            Err(BenchError::Auth(_))
        ));
        assert!(matches!(
            connected(Event::Closed, "u1"),
            Err(BenchError::Server(_))
        ));
    }
}
