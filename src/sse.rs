//! A Server-Sent Events reader over a plain TCP socket, as a browser's
//! `EventSource` reads `GET /sse` (no browser here): the response head,
//! then events parsed line by line per the HTML standard's rules (a
//! blank line dispatches, `:` starts a comment, `id` sets the last event
//! id that a reconnect sends back as `Last-Event-ID`).
//!
//! Every wait is bounded (by [`crate::pubsub::T`] unless the caller
//! gives a bound).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::pubsub::T;

/// One event of a stream (a comment is an event named `:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `id` field, if the event had one.
    pub id: Option<String>,
    /// The `event` field (`message` if absent, as in a browser).
    pub event: String,
    /// The `data` field, as JSON (`Null` for a comment).
    pub data: Value,
    /// The `retry` field, in milliseconds, if the event had one.
    pub retry: Option<u64>,
}

/// A refused stream request: the status, headers and body.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Refused {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {:?}", self.body))
    }
}

/// An open event stream.
pub struct SseStream {
    reader: BufReader<TcpStream>,
    /// The response's headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The last `id` received, as a browser keeps it.
    pub last_id: Option<String>,
}

impl SseStream {
    /// `GET target` with `headers`, on a new connection; `Err` with the
    /// answer if it is not 200.
    pub async fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, Refused> {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self::open_on(stream, target, headers).await
    }

    /// The same on a connection already open (e.g. one that carried other
    /// requests first).
    pub async fn open_on(
        mut stream: TcpStream,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, Refused> {
        let mut request =
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader).await;
        if status != 200 {
            let len = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            tokio::time::timeout(T, reader.read_exact(&mut body))
                .await
                .expect("body in time")
                .expect("read body");
            return Err(Refused {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(SseStream {
            reader,
            headers,
            last_id: None,
        })
    }

    /// The value of response header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next event or comment within `bound`; `None` at the end of the
    /// stream. Panics if nothing complete comes in time.
    pub async fn next_within(&mut self, bound: Duration) -> Option<Event> {
        tokio::time::timeout(bound, self.read_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {bound:?}"))
    }

    /// The next event that is not a comment (bounded by [`T`]); panics at
    /// the end of the stream.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let ev = self
                .next_within(T)
                .await
                .expect("the stream ended before the next event");
            if ev.event != ":" {
                return ev;
            }
        }
    }

    /// Reads until the stream ends (bounded by `bound`), returning the
    /// events meanwhile; panics if it does not end in time.
    pub async fn until_end(&mut self, bound: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = self.next_within(bound).await {
            out.push(ev);
        }
        out
    }

    async fn read_event(&mut self) -> Option<Event> {
        let mut ev = Event {
            id: None,
            event: String::new(),
            data: Value::Null,
            retry: None,
        };
        let mut data: Option<String> = None;
        let mut seen = false;
        loop {
            let mut line = String::new();
            // A reset is an end as well.
            let n: usize = self.reader.read_line(&mut line).await.unwrap_or_default();
            if n == 0 {
                return None;
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if let Some(d) = data.take() {
                    ev.data = serde_json::from_str(&d)
                        .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {d:?}"));
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    return Some(ev);
                }
                if seen && ev.event == ":" {
                    return Some(ev);
                }
                // An event without data (e.g. `retry:` alone) dispatches
                // nothing.
                seen = false;
                continue;
            }
            seen = true;
            if line.starts_with(':') {
                ev.event = ":".into();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => {
                    ev.id = Some(value.to_owned());
                    self.last_id = Some(value.to_owned());
                }
                "event" => ev.event = value.to_owned(),
                "data" => {
                    let d = data.get_or_insert_with(String::new);
                    if !d.is_empty() {
                        d.push('\n');
                    }
                    d.push_str(value);
                }
                "retry" => ev.retry = value.parse().ok(),
                _ => {}
            }
        }
    }
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut status = 0;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(T, reader.read_line(&mut line))
            .await
            .expect("response head in time")
            .expect("read response head");
        assert!(n > 0, "connection closed before the response head");
        let line = line.trim_end();
        if line.is_empty() {
            return (status, headers);
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {line:?}"));
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
}

/// `(channel, offset)` of every `pub` event of `events`.
pub fn pubs(events: &[Event]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e.event == "pub")
        .map(|e| {
            (
                e.data["channel"].as_str().unwrap_or_default().to_owned(),
                e.data["offset"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}
