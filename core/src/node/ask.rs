//! What the node asks of the world outside (see [`crate::proxy`]): backend
//! proxy calls and key-set fetches, queued as [`Ask`]s for the driver, and
//! what the node does with the answers.
//!
//! A connection waiting for an answer is held (`Client::held`): its further
//! commands stay unread until the answer comes, so they are handled in
//! order (a `subscribe` pipelined after a proxied `connect` is handled as
//! the user the backend named) and a client that pipelines is slowed
//! through TCP. Each connection waits for one answer at most, besides the
//! refresh proxy's, which the server asks on its own and which holds
//! nothing; so what waits is bounded by the connections. The driver answers
//! every ask (a timeout or a refusal is an answer), and a connection that
//! ends takes its asks with it.

use std::collections::{BTreeMap, VecDeque};

use crate::auth::SubscriptionClaims;
use crate::metrics::CommandKind;
use crate::namespace::NamespaceOptions;
use crate::protocol::{close, Command, Encoding, ErrorCode, Payload, Reply, StreamPosition};
use crate::proxy::{
    AskId, ConnectResult, ProxyAnswer, ProxyKind, ProxyRequest, PublishResult, RefreshResult,
    APP_ERROR_CODES,
};
use crate::time::Timestamp;

use super::request::error;
use super::slab::Auth;
use super::{ConnId, Node};

/// Something the node needs done outside (drained with
/// [`Node::poll_ask`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ask {
    /// Call a backend proxy and answer with [`Node::handle_proxy`].
    Proxy {
        /// The id to answer with.
        ask: AskId,
        /// The connection it is for (the driver forwards its request
        /// headers named in `proxy_headers`).
        conn: ConnId,
        /// Which proxy.
        kind: ProxyKind,
        /// The request body.
        request: ProxyRequest,
    },
    /// A token named a key id the key set does not have: fetch the set
    /// again (the driver does so at most every 30 s) and answer with
    /// [`Node::handle_keys`], with the new set or, if no fetch was made or
    /// it failed, without one. The held token checks are decided then.
    Keys,
}

/// What a proxy answer goes on with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Waiting {
    /// A `connect` without a token.
    Connect {
        conn: ConnId,
        enc: Encoding,
        rid: u64,
        /// Application-level pings asked.
        ping: bool,
    },
    /// The server's own refresh of a proxied connection at its expiry.
    Refresh { conn: ConnId },
    /// An admitted `subscribe`, and its subscription token's `exp` if it
    /// had one.
    Subscribe {
        conn: ConnId,
        enc: Encoding,
        rid: u64,
        channel: String,
        recover: Option<StreamPosition>,
        options: NamespaceOptions,
        token: Option<SubscriptionClaims>,
    },
    /// An admitted `publish`.
    Publish {
        conn: ConnId,
        enc: Encoding,
        rid: u64,
        channel: String,
        data: Payload,
        options: NamespaceOptions,
    },
}

impl Waiting {
    fn conn(&self) -> ConnId {
        match self {
            Waiting::Connect { conn, .. }
            | Waiting::Refresh { conn }
            | Waiting::Subscribe { conn, .. }
            | Waiting::Publish { conn, .. } => *conn,
        }
    }
}

/// A command held until the key set is fetched again (its token named an
/// unknown key id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ForKeys {
    pub(super) conn: ConnId,
    pub(super) enc: Encoding,
    pub(super) rid: u64,
    pub(super) command: Command,
}

/// The asks of a node: queued for the driver, and waiting for answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Asks {
    queue: VecDeque<Ask>,
    waiting: BTreeMap<AskId, Waiting>,
    /// Commands held for the key set; `Ask::Keys` is queued once for all.
    for_keys: Vec<ForKeys>,
    /// SSE streams whose token waits for the key set (`sse.rs`).
    pub(super) streams_for_keys: Vec<ConnId>,
    /// Held commands are being decided after a fetch: an unknown key id
    /// is now final.
    pub(super) keys_final: bool,
    next: u64,
}

impl Node {
    /// The next ask for the driver.
    pub fn poll_ask(&mut self) -> Option<Ask> {
        self.asks.queue.pop_front()
    }

    /// Asks the `kind` proxy for connection `conn`; `hold` keeps its input
    /// unread until the answer.
    pub(super) fn ask_proxy(
        &mut self,
        conn: ConnId,
        kind: ProxyKind,
        channel: Option<String>,
        data: Option<Payload>,
        waiting: Waiting,
    ) {
        let Some(client) = self.slab.get(conn) else {
            return;
        };
        let encoding = match client.endpoint {
            super::Endpoint::PubSub(enc) => enc,
            super::Endpoint::Echo | super::Endpoint::Sse => return,
        };
        let request = ProxyRequest {
            client: self.client_id(conn),
            user: client.auth.presence_user(),
            encoding,
            channel,
            data,
        };
        if !matches!(waiting, Waiting::Refresh { .. }) {
            self.hold(conn);
        }
        self.asks.next += 1;
        let ask = AskId(self.asks.next);
        self.asks.waiting.insert(ask, waiting);
        self.asks.queue.push_back(Ask::Proxy {
            ask,
            conn,
            kind,
            request,
        });
    }

    /// Whether a token's unknown key id may still be found by fetching the
    /// key set (keys come from one, and this is not the decision after a
    /// fetch).
    pub(super) fn keys_may_come(&self) -> bool {
        !self.asks.keys_final
            && self
                .config
                .auth
                .verifier
                .as_ref()
                .is_some_and(|v| v.config().jwks)
    }

    /// Holds a command until the key set is fetched again, if an unknown
    /// key id is not final yet; false if it is (refuse the token then).
    pub(super) fn wait_for_keys(&mut self, item: ForKeys) -> bool {
        if !self.keys_may_come() {
            return false;
        }
        self.ask_keys();
        self.hold(item.conn);
        self.asks.for_keys.push(item);
        true
    }

    /// Queues `Ask::Keys` unless one is out already (one fetch answers
    /// every command and stream waiting for it).
    pub(super) fn ask_keys(&mut self) {
        if self.asks.for_keys.is_empty() && self.asks.streams_for_keys.is_empty() {
            self.asks.queue.push_back(Ask::Keys);
        }
    }

    /// Queues `Ask::Keys` for a caller that does not wait for the answer
    /// (an HTTP call), unless one is out or queued already: however many
    /// such calls come, the queue holds one.
    pub(super) fn ask_keys_unheld(&mut self) {
        if !self.asks.queue.contains(&Ask::Keys) {
            self.ask_keys();
        }
    }

    pub(super) fn hold(&mut self, conn: ConnId) {
        if let Some(client) = self.slab.get_mut(conn) {
            client.held = true;
        }
    }

    /// Lets a held connection's input be read again (at the end of the
    /// current input).
    pub(super) fn release_hold(&mut self, conn: ConnId) {
        if let Some(client) = self.slab.get_mut(conn) {
            if client.held {
                client.held = false;
                self.unpaused.push(conn);
            }
        }
    }

    /// Forgets what a connection that ended was waiting for.
    pub(super) fn forget_asks(&mut self, conn: ConnId) {
        self.asks.waiting.retain(|_, w| w.conn() != conn);
        self.asks.for_keys.retain(|k| k.conn != conn);
        self.connecting.remove(&conn);
    }

    /// A key-set fetch finished: `jwks` is the new set (a JWKS document),
    /// or `None` if the fetch failed or was not made (the old keys stay).
    /// Every command held for an unknown key id is decided now.
    pub fn handle_keys(&mut self, now: Timestamp, jwks: Option<&str>) {
        if let (Some(json), Some(verifier)) = (jwks, self.config.auth.verifier.as_mut()) {
            // A document that is not a key set leaves the old keys.
            let _ = verifier.set_jwks(json);
        }
        let held = std::mem::take(&mut self.asks.for_keys);
        self.asks.keys_final = true;
        for item in held {
            if let Some(client) = self.slab.get_mut(item.conn) {
                client.held = false;
            }
            let kind = Some(super::command::command_kind(&item.command));
            self.answering(kind, |node| {
                node.dispatch(now, item.conn, item.enc, item.rid, item.command)
            });
            self.after(now, item.conn);
            self.unpaused.push(item.conn);
        }
        self.sse_keys_fetched(now);
        self.asks.keys_final = false;
        self.resume_unpaused(now);
    }

    /// The backend's answer to [`Ask::Proxy`] `ask` (an answer for a
    /// connection that is gone is ignored).
    pub fn handle_proxy(&mut self, now: Timestamp, ask: AskId, answer: ProxyAnswer) {
        let Some(waiting) = self.asks.waiting.remove(&ask) else {
            return;
        };
        let conn = waiting.conn();
        if self.slab.get(conn).is_none() {
            return;
        }
        self.release_hold(conn);
        let kind = match &waiting {
            Waiting::Connect { .. } => CommandKind::Connect,
            Waiting::Refresh { .. } => CommandKind::Refresh,
            Waiting::Subscribe { .. } => CommandKind::Subscribe,
            Waiting::Publish { .. } => CommandKind::Publish,
        };
        self.answering(Some(kind), |node| node.proxy_answered(now, waiting, answer));
        self.after(now, conn);
        self.resume_unpaused(now);
    }

    /// [`Node::handle_proxy`] for a live connection, within its count of
    /// replies.
    fn proxy_answered(&mut self, now: Timestamp, waiting: Waiting, answer: ProxyAnswer) {
        match (waiting, answer) {
            (Waiting::Refresh { conn }, answer) => self.on_refreshed(now, conn, answer),
            (waiting, ProxyAnswer::Disconnect { code, reason }) => {
                let code = ProxyAnswer::close_code(code);
                let reason = cut(&reason, 120);
                self.close(now, waiting.conn(), code, reason);
            }
            (waiting, ProxyAnswer::Error { code, message }) => {
                let reply = if APP_ERROR_CODES.contains(&code) {
                    Reply::AppError { code, message }
                } else {
                    error(
                        ErrorCode::Internal,
                        format!("backend error {code}: {message}"),
                    )
                };
                self.answer(now, &waiting, &reply);
            }
            (waiting, ProxyAnswer::Unavailable(why)) => {
                let reply = error(
                    ErrorCode::Internal,
                    format!("backend unavailable ({why}); retry"),
                );
                self.answer(now, &waiting, &reply);
            }
            (
                Waiting::Connect {
                    conn,
                    enc,
                    rid,
                    ping,
                },
                ProxyAnswer::Result(result),
            ) => match ConnectResult::parse(&result) {
                Ok(r) => self.proxy_connected(now, conn, enc, rid, r, ping),
                Err(e) => self.reply(
                    now,
                    conn,
                    enc,
                    rid,
                    &error(ErrorCode::Internal, e.to_string()),
                ),
            },
            (
                Waiting::Subscribe {
                    conn,
                    enc,
                    rid,
                    channel,
                    recover,
                    options,
                    token,
                },
                ProxyAnswer::Result(_),
            ) => self.subscribe_admitted(now, conn, enc, rid, channel, recover, options, token),
            (
                Waiting::Publish {
                    conn,
                    enc,
                    rid,
                    channel,
                    data,
                    options,
                },
                ProxyAnswer::Result(result),
            ) => match PublishResult::parse(&result) {
                Ok(r) => {
                    let data = r.data.unwrap_or(data);
                    self.publish(now, conn, rid, channel, data, options);
                }
                Err(e) => self.reply(
                    now,
                    conn,
                    enc,
                    rid,
                    &error(ErrorCode::Internal, e.to_string()),
                ),
            },
        }
    }

    /// Replies to the command a proxy answer was for.
    fn answer(&mut self, now: Timestamp, waiting: &Waiting, reply: &Reply) {
        let (conn, enc, rid) = match waiting {
            Waiting::Connect { conn, enc, rid, .. }
            | Waiting::Subscribe { conn, enc, rid, .. }
            | Waiting::Publish { conn, enc, rid, .. } => (*conn, *enc, *rid),
            Waiting::Refresh { .. } => return,
        };
        self.reply(now, conn, enc, rid, reply);
    }

    /// The refresh proxy's answer: extend the connection, end it (4005),
    /// or, on a failure, ask again a little later until the grace is over.
    fn on_refreshed(&mut self, now: Timestamp, conn: ConnId, answer: ProxyAnswer) {
        let Some(Auth::User(identity)) = self.slab.get(conn).map(|c| &c.auth) else {
            return;
        };
        let mut identity = (**identity).clone();
        match answer {
            ProxyAnswer::Result(result) => match RefreshResult::parse(&result) {
                Ok(r) if r.expired => {
                    let code = close::TOKEN_EXPIRED;
                    return self.close(now, conn, code, close::reason(code));
                }
                Ok(r) => {
                    let unix_now = self.unix_now(now);
                    identity.expires = self.expiry(r.expire_at, unix_now).0;
                    let at = identity.expires.map(|(at, _)| at);
                    identity.set_refresh_at(at);
                }
                Err(_) => identity.set_refresh_at(Some(now + REFRESH_RETRY)),
            },
            ProxyAnswer::Disconnect { code, reason } => {
                let code = ProxyAnswer::close_code(code);
                return self.close(now, conn, code, cut(&reason, 120));
            }
            ProxyAnswer::Error { .. } | ProxyAnswer::Unavailable(_) => {
                identity.set_refresh_at(Some(now + REFRESH_RETRY));
            }
        }
        self.set_auth(conn, Auth::User(Box::new(identity)));
    }
}

/// How long after a failed refresh proxy call it is asked again (until the
/// connection's expiry plus the refresh grace, when it is closed).
pub const REFRESH_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
