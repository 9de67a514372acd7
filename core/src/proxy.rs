//! What a node asks of the world outside and how the answers come back:
//! calls to the application's backend (the connect, refresh, subscribe and
//! publish proxies) and a fresh fetch of the token key set (a JWKS URL)
//! when a token names a key id the node does not know.
//!
//! The node never performs these itself (sans-I/O): it queues an ask
//! (`Node::poll_ask`, see [`crate::node::Ask`]), holds the connection that
//! waits for it (its further commands stay unread, so their order is kept
//! and a client that pipelines is slowed through TCP), and goes on when
//! the driver answers with `Node::handle_proxy` or `Node::handle_keys`.
//! The driver makes the HTTP
//! request, bounds how many are in flight and how long each may take, and
//! turns every failure (timeout, refused connection, a non-2xx status, a
//! body that is not one of the three shapes) into
//! [`ProxyAnswer::Unavailable`]: a backend that is down is a temporary
//! error for the client, never an open door.
//!
//! The request and answer bodies are Centrifugo's proxy shapes, so that
//! backends written for it port over: the request is
//! `{"client", "user", "transport", "encoding", "channel", "data"}`, the
//! answer `{"result": {...}}`, `{"error": {"code", "message"}}` or
//! `{"disconnect": {"code", "reason"}}`. [`ProxyAnswer::parse`] reads an
//! answer; the `result` of each kind is read by the node
//! ([`ConnectResult`], [`RefreshResult`], [`PublishResult`]).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::MAX_INFO_SIZE;
use crate::close::CloseCode;
use crate::protocol::{Encoding, Payload};

/// Which backend call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// `connect_proxy`: a `connect` without a token; the backend says who
    /// the connection is (from its cookies or `data`).
    Connect,
    /// `refresh_proxy`: the connection's expiry (`expire_at` of the connect
    /// result) arrived; the backend extends it or ends it.
    Refresh,
    /// `subscribe_proxy`: a client subscribe that passed the namespace's
    /// permissions; the backend may still refuse it.
    Subscribe,
    /// `publish_proxy`: a client publication that passed the namespace's
    /// permissions; the backend may refuse it or rewrite its data.
    Publish,
}

impl ProxyKind {
    /// The setting that names this proxy's URL.
    pub fn setting(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect_proxy",
            ProxyKind::Refresh => "refresh_proxy",
            ProxyKind::Subscribe => "subscribe_proxy",
            ProxyKind::Publish => "publish_proxy",
        }
    }
}

/// Which proxies are configured (the node only needs to know whether to
/// ask; the URLs are the driver's business).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Proxies {
    /// `connect_proxy` is set.
    pub connect: bool,
    /// `refresh_proxy` is set.
    pub refresh: bool,
    /// `subscribe_proxy` is set.
    pub subscribe: bool,
    /// `publish_proxy` is set.
    pub publish: bool,
}

/// The id of an ask ([`crate::node::Ask`]), unique within its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AskId(pub u64);

/// The body of a proxy request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyRequest {
    /// The connection's client id.
    pub client: String,
    /// The connection's user (empty before connect and for anonymous).
    pub user: String,
    /// The connection's encoding.
    pub encoding: Encoding,
    /// The channel (subscribe and publish).
    pub channel: Option<String>,
    /// The command's `data` (connect, subscribe: optional; publish: the
    /// publication).
    pub data: Option<Payload>,
}

impl ProxyRequest {
    /// The request as the JSON body the backend gets.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"client\":");
        json_str(&mut out, &self.client);
        out.extend_from_slice(b",\"transport\":\"websocket\",\"protocol\":");
        let encoding = match self.encoding {
            Encoding::Json => "json",
            Encoding::MsgPack => "msgpack",
        };
        json_str(&mut out, encoding);
        out.extend_from_slice(b",\"encoding\":\"json\"");
        if !self.user.is_empty() {
            out.extend_from_slice(b",\"user\":");
            json_str(&mut out, &self.user);
        }
        if let Some(channel) = &self.channel {
            out.extend_from_slice(b",\"channel\":");
            json_str(&mut out, channel);
        }
        if let Some(data) = &self.data {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data.as_json());
        }
        out.push(b'}');
        out
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a string with every escape JSON needs.
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// The backend's answer to a proxy request, as the driver hands it in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxyAnswer {
    /// `{"result": ...}`: the raw JSON of `result`.
    Result(Payload),
    /// `{"error": {"code", "message"}}`: the client gets this error.
    Error {
        /// The application's error code (400-1999; others become 100).
        code: u16,
        /// For humans.
        message: String,
    },
    /// `{"disconnect": {"code", "reason"}}`: the connection is closed with
    /// this code (3000-4999; others become 4503).
    Disconnect {
        /// The close code.
        code: u16,
        /// The close reason (cut to fit a close frame).
        reason: String,
    },
    /// No usable answer: a timeout, the backend down, a non-2xx status,
    /// too many requests in flight, or a body that is none of the above.
    /// The client gets error 100 (temporary; retry).
    Unavailable(String),
}

pub use crate::protocol::APP_ERROR_CODES;

#[derive(Deserialize)]
struct RawAnswer<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    disconnect: Option<RawDisconnect>,
}

#[derive(Deserialize)]
struct RawError {
    code: u16,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RawDisconnect {
    code: u16,
    #[serde(default)]
    reason: String,
}

impl ProxyAnswer {
    /// Reads a backend's 2xx body. Anything but exactly one of `result`,
    /// `error` and `disconnect` is `Unavailable` (the backend's fault).
    pub fn parse(body: &[u8]) -> ProxyAnswer {
        let raw: RawAnswer<'_> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return ProxyAnswer::Unavailable(format!("backend answer: {e}")),
        };
        match (raw.result, raw.error, raw.disconnect) {
            (Some(result), None, None) => match Payload::from_json(result.get().as_bytes()) {
                Ok(p) => ProxyAnswer::Result(p),
                Err(e) => ProxyAnswer::Unavailable(format!("backend result: {e}")),
            },
            (None, Some(e), None) => ProxyAnswer::Error {
                code: e.code,
                message: e.message,
            },
            (None, None, Some(d)) => ProxyAnswer::Disconnect {
                code: d.code,
                reason: d.reason,
            },
            _ => ProxyAnswer::Unavailable(
                "backend answer has not exactly one of result, error, disconnect".into(),
            ),
        }
    }

    /// The close code of a `Disconnect`: the backend's if it is one an
    /// application may send (3000-4999), else `UNAUTHORIZED` (4503).
    pub fn close_code(code: u16) -> CloseCode {
        match code {
            3000..=4999 => CloseCode(code),
            _ => crate::protocol::close::UNAUTHORIZED,
        }
    }
}

/// Why a backend's `result` cannot be used: the backend's fault, so the
/// client gets error 100.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend result: {0}")]
pub struct ResultError(String);

/// The `result` of a connect proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectResult {
    /// The user (empty: anonymous).
    pub user: String,
    /// When the connection expires (Unix seconds; `None`: never). Then the
    /// refresh proxy is asked, or without one the connection is closed
    /// with 4005 after the refresh grace.
    pub expire_at: Option<u64>,
    /// Public information about the connection (as a token's `info`).
    pub info: Option<Payload>,
    /// Data for the client, in the connect reply.
    pub data: Option<Payload>,
    /// Channels to subscribe the connection to (as a token's `channels`).
    pub channels: Vec<String>,
}

/// The `result` of a refresh proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefreshResult {
    /// The connection is over: close it with 4005.
    pub expired: bool,
    /// The new expiry (Unix seconds; `None`: never).
    pub expire_at: Option<u64>,
}

/// The `result` of a publish proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishResult {
    /// Data to publish instead of the client's.
    pub data: Option<Payload>,
}

#[derive(Deserialize)]
struct RawConnect<'a> {
    #[serde(default)]
    user: String,
    #[serde(default)]
    expire_at: Option<u64>,
    #[serde(borrow, default)]
    info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Deserialize)]
struct RawRefresh {
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expire_at: Option<u64>,
}

#[derive(Deserialize)]
struct RawPublish<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

fn payload(raw: Option<&RawValue>, what: &str) -> Result<Option<Payload>, ResultError> {
    raw.map(|r| Payload::from_json(r.get().as_bytes()))
        .transpose()
        .map_err(|e| ResultError(format!("{what}: {e}")))
}

impl ConnectResult {
    /// Reads a connect proxy's `result`.
    pub fn parse(result: &Payload) -> Result<ConnectResult, ResultError> {
        let raw: RawConnect<'_> =
            serde_json::from_slice(result.as_json()).map_err(|e| ResultError(e.to_string()))?;
        let info = payload(raw.info, "info")?;
        if info
            .as_ref()
            .is_some_and(|i| i.as_json().len() > MAX_INFO_SIZE)
        {
            return Err(ResultError(format!(
                "info longer than {MAX_INFO_SIZE} bytes"
            )));
        }
        Ok(ConnectResult {
            user: raw.user,
            expire_at: raw.expire_at.filter(|&t| t > 0),
            info,
            data: payload(raw.data, "data")?,
            channels: raw.channels,
        })
    }
}

impl RefreshResult {
    /// Reads a refresh proxy's `result`.
    pub fn parse(result: &Payload) -> Result<RefreshResult, ResultError> {
        let raw: RawRefresh =
            serde_json::from_slice(result.as_json()).map_err(|e| ResultError(e.to_string()))?;
        Ok(RefreshResult {
            expired: raw.expired,
            expire_at: raw.expire_at.filter(|&t| t > 0),
        })
    }
}

impl PublishResult {
    /// Reads a publish proxy's `result`.
    pub fn parse(result: &Payload) -> Result<PublishResult, ResultError> {
        let raw: RawPublish<'_> =
            serde_json::from_slice(result.as_json()).map_err(|e| ResultError(e.to_string()))?;
        Ok(PublishResult {
            data: payload(raw.data, "data")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_each_shape() {
        assert_eq!(
            ProxyAnswer::parse(br#"{"result":{"user":"42"}}"#),
            ProxyAnswer::Result(Payload::from_json(br#"{"user":"42"}"#).unwrap())
        );
        assert_eq!(
            ProxyAnswer::parse(br#"{"error":{"code":1000,"message":"no"}}"#),
            ProxyAnswer::Error {
                code: 1000,
                message: "no".into()
            }
        );
        assert_eq!(
            ProxyAnswer::parse(br#"{"disconnect":{"code":4600,"reason":"banned"}}"#),
            ProxyAnswer::Disconnect {
                code: 4600,
                reason: "banned".into()
            }
        );
        for bad in [
            &b"not json"[..],
            b"{}",
            b"[]",
            br#"{"result":{},"error":{"code":400}}"#,
            br#"{"error":{"message":"no code"}}"#,
        ] {
            assert!(
                matches!(ProxyAnswer::parse(bad), ProxyAnswer::Unavailable(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn disconnect_codes_outside_the_application_range_become_4503() {
        assert_eq!(ProxyAnswer::close_code(4600), CloseCode(4600));
        assert_eq!(ProxyAnswer::close_code(3000), CloseCode(3000));
        assert_eq!(ProxyAnswer::close_code(1000), CloseCode(4503));
        assert_eq!(ProxyAnswer::close_code(5000), CloseCode(4503));
    }

    #[test]
    fn connect_results() {
        let r = ConnectResult::parse(
            &Payload::from_json(
                br#"{"user":"42","expire_at":1700000000,"info":{"name":"Ann"},"channels":["a","b"],"data":[1]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.user, "42");
        assert_eq!(r.expire_at, Some(1_700_000_000));
        assert_eq!(r.info.unwrap().as_json(), br#"{"name":"Ann"}"#);
        assert_eq!(r.channels, ["a", "b"]);
        assert_eq!(r.data.unwrap().as_json(), b"[1]");
        let big = format!(r#"{{"user":"1","info":"{}"}}"#, "x".repeat(MAX_INFO_SIZE));
        assert!(ConnectResult::parse(&Payload::from_json(big.as_bytes()).unwrap()).is_err());
        assert!(ConnectResult::parse(&Payload::from_json(br#"{"user":42}"#).unwrap()).is_err());
    }

    #[test]
    fn request_bodies_are_json_with_every_field() {
        let r = ProxyRequest {
            client: "c1.2".into(),
            user: "4\"2".into(),
            encoding: Encoding::MsgPack,
            channel: Some("chat:a".into()),
            data: Some(Payload::from_json(br#"{"x":1}"#).unwrap()),
        };
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"client":"c1.2","user":"4\"2","transport":"websocket",
                "protocol":"msgpack","encoding":"json","channel":"chat:a","data":{"x":1}})
        );
    }
}
