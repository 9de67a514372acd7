//! The client side of the pub/sub protocol as a sans-I/O state machine:
//! a Rust client (the load tool, the tests, the model-based node tests)
//! drives a [`Client`] the way the runtime drives a
//! [`Node`](crate::node::Node).
//!
//! The driver owns the transport (a WebSocket, already through its
//! handshake, see [`ClientHandshake`](crate::handshake::ClientHandshake))
//! and feeds the client what happens to it:
//! - [`Client::handle_open`] when a connection is up (the client sends
//!   `connect`, with [`ClientConfig::token`] if set, and restores its
//!   subscriptions once the server accepts it),
//!   [`Client::handle_message`] for each message it carries,
//!   [`Client::handle_close`] when it ends (with the close code, if any),
//!   [`Client::handle_timeout`] at [`Client::poll_timeout`];
//! - the application's calls: [`Client::connect`], [`Client::disconnect`],
//!   [`Client::set_token`] (a fresh token: `refresh` while connected),
//!   [`Client::subscribe`], [`Client::unsubscribe`], [`Client::publish`],
//!   [`Client::history`], [`Client::presence`];
//!
//! and drains [`Client::poll_transmit`] (messages to send, unframed) and
//! [`Client::poll_event`] (what the application is told, [`Event`]).
//!
//! What it guarantees the application: each subscription's publications
//! once each, in offset order, across reconnects (it resubscribes with
//! `recover` from the last offset delivered), or an [`Event::Gap`] saying
//! that something was missed and the channel's state should be reloaded.
//! Reconnecting follows the close-code table ([`reconnect::should_reconnect`])
//! with jittered backoff ([`Backoff`]). The JavaScript client mirrors these
//! states and names.
//!
//! # Files
//! - `reconnect.rs`: whether and when to reconnect;
//! - `subscription.rs`: one subscription's position and delivery rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::close::CloseCode;
use crate::protocol::{
    decode_server_message, encode_request, unsubscribe_code, ClientInfo, Command, Encoding,
    ErrorReply, Payload, Publication, Push, Reply, Request, ServerMessage, ServerMessageError,
    StreamPosition,
};
use crate::time::Timestamp;

pub mod reconnect;
mod subscription;

pub use reconnect::Backoff;
use subscription::{Arrival, Subscription};
pub use subscription::{GapReason, SubState};

/// Where the connection stands (the JavaScript client's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection, and none being made (before [`Client::connect`],
    /// after [`Client::disconnect`], or after a close that says not to
    /// reconnect).
    Disconnected,
    /// Waiting to reconnect, or a connection is being opened.
    Connecting,
    /// Connected: commands flow.
    Connected,
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The encoding of the connection's subprotocol.
    pub encoding: Encoding,
    /// Backoff between reconnect attempts.
    pub backoff: Backoff,
    /// How long a call (publish, history, presence) waits for its reply.
    pub timeout: Duration,
    /// The connection token sent in `connect` (`None`: connect
    /// anonymously).
    pub token: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            encoding: Encoding::Json,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(5),
            token: None,
        }
    }
}

/// What the application is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a connection now (the first after [`Client::connect`], or a
    /// reconnect once its backoff passed); report it with
    /// [`Client::handle_open`] or [`Client::handle_close`].
    Connecting,
    /// The server accepted `connect`; subscriptions are being restored.
    Connected {
        /// This connection's client id.
        client: String,
        /// The user the server knows it as (empty: anonymous).
        user: String,
        /// Seconds until the token expires (`None`: it does not); refresh
        /// before ([`Client::set_token`]).
        ttl: Option<u64>,
    },
    /// The server refused the token (`connect` or `refresh`): 111 expired
    /// (give a fresh one with [`Client::set_token`]), 112 bad (the server
    /// closes the connection with 4503).
    TokenRefused {
        /// The error code.
        code: u16,
        /// Why, for humans.
        message: String,
    },
    /// A `refresh` was accepted.
    Refreshed {
        /// Seconds until the new token expires.
        ttl: Option<u64>,
    },
    /// The connection ended.
    Disconnected {
        /// The close code (`None`: the transport ended without one).
        code: Option<CloseCode>,
        /// The close reason.
        reason: String,
        /// Whether the client will reconnect by itself.
        reconnect: bool,
    },
    /// A subscription is (again) live.
    Subscribed {
        /// The channel.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The offset the stream continues from.
        offset: u64,
        /// Whether everything since the previous position was recovered
        /// (and is delivered as [`Event::Publication`]s right after).
        recovered: bool,
    },
    /// A publication, in offset order, once.
    Publication {
        /// The channel.
        channel: String,
        /// The publication.
        publication: Publication,
    },
    /// Someone subscribed to the channel.
    Join {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
    },
    /// Someone unsubscribed from the channel.
    Leave {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
    },
    /// Publications may have been missed: the stream continues from
    /// `epoch`/`offset`; reload the channel's state.
    Gap {
        /// The channel.
        channel: String,
        /// The epoch the stream continues in.
        epoch: String,
        /// The offset it continues from.
        offset: u64,
        /// Why.
        reason: GapReason,
    },
    /// The subscription ended and will not be restored: refused by the
    /// server (`error`), or ended by it (an unsubscribe push with a code
    /// that says not to resubscribe).
    Unsubscribed {
        /// The channel.
        channel: String,
        /// The unsubscribe push's code, or the error reply's code.
        code: u16,
        /// Why, for humans.
        reason: String,
    },
    /// The reply to a call ([`Client::publish`], [`Client::history`],
    /// [`Client::presence`]).
    Reply {
        /// The call's id, as returned by the call.
        id: u64,
        /// The reply (an [`Reply::Error`] for a refused call).
        reply: Reply,
    },
    /// A call got no reply: the connection ended or the timeout passed.
    CallFailed {
        /// The call's id.
        id: u64,
        /// Why.
        reason: CallFailure,
    },
    /// The server did something the protocol does not allow (a hole in a
    /// subscription's offsets without an unsubscribe push, a duplicate, a
    /// reply to nothing). The client has already done the safe thing
    /// (resubscribed with recover, dropped the duplicate); this is for
    /// logs and tests.
    Anomaly(String),
}

/// Why a call failed without a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallFailure {
    /// No reply within [`ClientConfig::timeout`].
    Timeout,
    /// The connection ended first.
    Disconnected,
}

/// Why the client refused an application's call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A call needs a connection.
    #[error("not connected")]
    NotConnected,
    /// [`Client::subscribe`] on a channel already subscribed (or
    /// subscribing).
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(String),
    /// [`Client::unsubscribe`] on a channel not subscribed.
    #[error("not subscribed to {0:?}")]
    NotSubscribed(String),
}

/// What a request in flight was.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asked {
    /// The connection's `connect`.
    Connect,
    /// A `refresh`.
    Refresh,
    /// A subscribe on this channel.
    Subscribe(String),
    /// An unsubscribe (its reply changes nothing).
    Unsubscribe,
    /// An application call, answered with [`Event::Reply`], due by this
    /// time.
    Call(Timestamp),
}

/// The client: see the module documentation.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: State,
    /// Whether the application wants a connection (false after
    /// `disconnect` and after a close that says not to reconnect).
    wanted: bool,
    /// Reconnect attempts since the last connection was up.
    attempt: u32,
    /// A transport is open (connected, or `connect` on its way).
    open: bool,
    /// When to reconnect, while waiting.
    reconnect_at: Option<Timestamp>,
    /// A xorshift state for backoff jitter, seeded by the caller.
    random: u64,
    next_id: u64,
    requests: BTreeMap<u64, Asked>,
    /// Call deadlines, earliest first.
    deadlines: BTreeSet<(Timestamp, u64)>,
    subs: BTreeMap<String, Subscription>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
}

impl Client {
    /// A disconnected client. `seed` seeds the backoff jitter (any value;
    /// give different clients different seeds).
    pub fn new(config: ClientConfig, seed: u64) -> Client {
        Client {
            config,
            state: State::Disconnected,
            wanted: false,
            attempt: 0,
            open: false,
            reconnect_at: None,
            random: seed | 1,
            next_id: 1,
            requests: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            subs: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The encoding messages are sent and read in.
    pub fn encoding(&self) -> Encoding {
        self.config.encoding
    }

    /// Where a subscription stands.
    pub fn sub_state(&self, channel: &str) -> SubState {
        self.subs
            .get(channel)
            .map_or(SubState::Unsubscribed, |s| s.state)
    }

    /// The last position delivered on `channel` (to store, and to pass back
    /// as `since` after a restart).
    pub fn position(&self, channel: &str) -> Option<&StreamPosition> {
        self.subs.get(channel).and_then(|s| s.position.as_ref())
    }

    /// The channels subscribed or subscribing.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.subs.keys().map(String::as_str)
    }

    /// Asks for a connection: [`Event::Connecting`] tells the driver to open
    /// one. Does nothing unless disconnected.
    pub fn connect(&mut self, _now: Timestamp) {
        if self.state == State::Disconnected {
            self.wanted = true;
            self.attempt = 0;
            self.start_connecting();
        }
    }

    /// Ends the connection for good (the driver closes the transport with
    /// 1000). Subscriptions are kept and restored by the next
    /// [`Client::connect`].
    pub fn disconnect(&mut self, _now: Timestamp) {
        self.wanted = false;
        self.reconnect_at = None;
        if self.state != State::Disconnected {
            self.lose_connection(Some(CloseCode::NORMAL), "disconnect called".into(), false);
        }
    }

    /// The transport is up (its handshake succeeded): `connect` goes out
    /// (with the token, if any); once the server accepts it, subscriptions
    /// are sent again, with `recover` where a position is known.
    pub fn handle_open(&mut self, _now: Timestamp) {
        if self.state != State::Connecting || self.open {
            return;
        }
        self.open = true;
        self.reconnect_at = None;
        self.send_connect();
    }

    /// Replaces the connection token: sent as `refresh` while connected,
    /// or as a new `connect` after the server refused an expired one.
    pub fn set_token(&mut self, token: String) {
        self.config.token = Some(token.clone());
        if self.state == State::Connected {
            self.send(Command::Refresh { token }, Asked::Refresh);
        } else if self.open && !self.requests.values().any(|a| *a == Asked::Connect) {
            self.send_connect();
        }
    }

    fn send_connect(&mut self) {
        let token = self.config.token.clone();
        self.send(Command::Connect { token }, Asked::Connect);
    }

    /// The transport ended (or could not be opened), with the server's
    /// close code if a close frame came. Calls in flight fail; the client
    /// reconnects after a backoff if the code says so.
    pub fn handle_close(&mut self, now: Timestamp, code: Option<CloseCode>, reason: &str) {
        if self.state == State::Disconnected {
            return;
        }
        let reconnect = self.wanted && reconnect::should_reconnect(code);
        self.lose_connection(code, reason.into(), reconnect);
        if reconnect {
            let random = self.next_random();
            let delay = self.config.backoff.delay(self.attempt, random);
            self.attempt = self.attempt.saturating_add(1);
            self.state = State::Connecting;
            self.reconnect_at = Some(now + delay);
        } else {
            self.wanted = false;
        }
    }

    /// One message from the server. A message that does not decode is the
    /// server's fault: the driver should close the transport (1002 or
    /// 1007) and report it with [`Client::handle_close`].
    pub fn handle_message(
        &mut self,
        _now: Timestamp,
        bytes: &[u8],
    ) -> Result<(), ServerMessageError> {
        if !self.open {
            return Ok(());
        }
        match decode_server_message(self.config.encoding, bytes)? {
            ServerMessage::Reply { id, reply } => self.on_reply(id, reply),
            ServerMessage::Push(push) => self.on_push(push),
        }
        Ok(())
    }

    /// Time passed: calls past their timeout fail, and a reconnect whose
    /// backoff passed starts ([`Event::Connecting`]).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if self.requests.remove(&id).is_some() {
                self.events.push_back(Event::CallFailed {
                    id,
                    reason: CallFailure::Timeout,
                });
            }
        }
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.start_connecting();
        }
    }

    /// When [`Client::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let call = self.deadlines.first().map(|&(at, _)| at);
        match (call, self.reconnect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message to send (one WebSocket message: text for JSON,
    /// binary for MessagePack).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next thing the application is told.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Subscribes to `channel` (restored on every reconnect until
    /// [`Client::unsubscribe`]); with `since`, first recovers what was
    /// published after that position (e.g. one stored before a restart).
    /// Allowed while disconnected: it is sent once connected.
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<(), ClientError> {
        if self.subs.contains_key(channel) {
            return Err(ClientError::AlreadySubscribed(channel.into()));
        }
        self.subs
            .insert(channel.to_owned(), Subscription::new(since));
        if self.state == State::Connected {
            self.send_subscribe(channel);
        }
        Ok(())
    }

    /// Ends a subscription (its position is forgotten).
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        if self.subs.remove(channel).is_none() {
            return Err(ClientError::NotSubscribed(channel.into()));
        }
        if self.state == State::Connected {
            self.send(
                Command::Unsubscribe {
                    channel: channel.into(),
                },
                Asked::Unsubscribe,
            );
        }
        Ok(())
    }

    /// Publishes `data` to `channel`; the reply comes as [`Event::Reply`]
    /// with the returned id.
    pub fn publish(
        &mut self,
        now: Timestamp,
        channel: &str,
        data: Payload,
    ) -> Result<u64, ClientError> {
        self.call(
            now,
            Command::Publish {
                channel: channel.into(),
                data,
            },
        )
    }

    /// Reads `channel`'s history (after `since`, at most `limit`).
    pub fn history(
        &mut self,
        now: Timestamp,
        channel: &str,
        since: Option<StreamPosition>,
        limit: Option<u32>,
    ) -> Result<u64, ClientError> {
        self.call(
            now,
            Command::History {
                channel: channel.into(),
                since,
                limit,
            },
        )
    }

    /// Lists `channel`'s subscribers.
    pub fn presence(&mut self, now: Timestamp, channel: &str) -> Result<u64, ClientError> {
        self.call(
            now,
            Command::Presence {
                channel: channel.into(),
            },
        )
    }

    fn call(&mut self, now: Timestamp, command: Command) -> Result<u64, ClientError> {
        if self.state != State::Connected {
            return Err(ClientError::NotConnected);
        }
        let due = now + self.config.timeout;
        let id = self.send(command, Asked::Call(due));
        self.deadlines.insert((due, id));
        Ok(id)
    }

    fn send(&mut self, command: Command, asked: Asked) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request { id, command };
        self.transmit
            .push_back(encode_request(self.config.encoding, &request));
        self.requests.insert(id, asked);
        id
    }

    fn send_subscribe(&mut self, channel: &str) {
        let recover = self.subs.get(channel).and_then(|s| s.position.clone());
        let id = self.send(
            Command::Subscribe {
                channel: channel.into(),
                recover,
                token: None,
            },
            Asked::Subscribe(channel.into()),
        );
        if let Some(sub) = self.subs.get_mut(channel) {
            sub.state = SubState::Subscribing;
            sub.request = Some(id);
        }
    }

    fn start_connecting(&mut self) {
        self.state = State::Connecting;
        self.events.push_back(Event::Connecting);
    }

    /// The connection is gone: calls fail, subscriptions wait to be
    /// restored, nothing queued is sent.
    fn lose_connection(&mut self, code: Option<CloseCode>, reason: String, reconnect: bool) {
        self.state = State::Disconnected;
        self.open = false;
        self.transmit.clear();
        self.deadlines.clear();
        for (id, asked) in std::mem::take(&mut self.requests) {
            if matches!(asked, Asked::Call(_)) {
                self.events.push_back(Event::CallFailed {
                    id,
                    reason: CallFailure::Disconnected,
                });
            }
        }
        for sub in self.subs.values_mut() {
            sub.state = SubState::Subscribing;
            sub.request = None;
        }
        self.events.push_back(Event::Disconnected {
            code,
            reason,
            reconnect,
        });
    }

    fn on_reply(&mut self, id: u64, reply: Reply) {
        match self.requests.remove(&id) {
            None => self
                .events
                .push_back(Event::Anomaly(format!("a reply to no request: {id}"))),
            Some(Asked::Unsubscribe) => {}
            Some(Asked::Connect) => self.on_connected(reply),
            Some(Asked::Refresh) => match reply {
                Reply::Refresh { ttl } => self.events.push_back(Event::Refreshed { ttl }),
                Reply::Error(e) => self.events.push_back(Event::TokenRefused {
                    code: e.code.code(),
                    message: e.message,
                }),
                other => self
                    .events
                    .push_back(Event::Anomaly(format!("refresh answered with {other:?}"))),
            },
            Some(Asked::Call(due)) => {
                self.deadlines.remove(&(due, id));
                self.events.push_back(Event::Reply { id, reply });
            }
            Some(Asked::Subscribe(channel)) => self.on_subscribed(id, channel, reply),
        }
    }

    fn on_connected(&mut self, reply: Reply) {
        match reply {
            Reply::Connect { client, user, ttl } => {
                self.state = State::Connected;
                self.attempt = 0;
                self.events
                    .push_back(Event::Connected { client, user, ttl });
                let channels: Vec<String> = self.subs.keys().cloned().collect();
                for channel in channels {
                    self.send_subscribe(&channel);
                }
            }
            Reply::Error(e) => self.events.push_back(Event::TokenRefused {
                code: e.code.code(),
                message: e.message,
            }),
            other => self
                .events
                .push_back(Event::Anomaly(format!("connect answered with {other:?}"))),
        }
    }

    fn on_subscribed(&mut self, id: u64, channel: String, reply: Reply) {
        // Unsubscribed meanwhile, or subscribed again under a newer id: the
        // unsubscribe that followed (sent in order) ends it on the server.
        let Some(sub) = self
            .subs
            .get_mut(&channel)
            .filter(|s| s.request == Some(id))
        else {
            return;
        };
        match reply {
            Reply::Subscribe {
                epoch,
                offset,
                recovery,
            } => {
                let settled = sub.settle(epoch.clone(), offset, recovery);
                self.events.push_back(Event::Subscribed {
                    channel: channel.clone(),
                    epoch: epoch.clone(),
                    offset,
                    recovered: settled.recovered,
                });
                if let Some(reason) = settled.gap {
                    self.events.push_back(Event::Gap {
                        channel: channel.clone(),
                        epoch,
                        offset,
                        reason,
                    });
                }
                for publication in settled.publications {
                    self.events.push_back(Event::Publication {
                        channel: channel.clone(),
                        publication,
                    });
                }
            }
            Reply::Error(ErrorReply { code, message }) => {
                self.subs.remove(&channel);
                self.events.push_back(Event::Unsubscribed {
                    channel,
                    code: code.code(),
                    reason: message,
                });
            }
            other => {
                self.subs.remove(&channel);
                self.events.push_back(Event::Anomaly(format!(
                    "subscribe {id} on {channel:?} answered with {other:?}"
                )));
            }
        }
    }

    fn on_push(&mut self, push: Push) {
        let channel = push.channel().to_owned();
        let Some(sub) = self.subs.get_mut(&channel) else {
            // A push after our unsubscribe, before the server saw it.
            return;
        };
        match push {
            Push::Pub { publication, .. } => match sub.arrive(publication.offset) {
                Arrival::Next => self.events.push_back(Event::Publication {
                    channel,
                    publication,
                }),
                Arrival::Ignore => {}
                Arrival::Duplicate => self.events.push_back(Event::Anomaly(format!(
                    "offset {} on {channel:?} again",
                    publication.offset
                ))),
                Arrival::Hole { expected } => {
                    self.events.push_back(Event::Anomaly(format!(
                        "offset {} on {channel:?} where {expected} was next",
                        publication.offset
                    )));
                    self.resubscribe(&channel);
                }
            },
            Push::Join { info, .. } if sub.state == SubState::Subscribed => {
                self.events.push_back(Event::Join { channel, info });
            }
            Push::Leave { info, .. } if sub.state == SubState::Subscribed => {
                self.events.push_back(Event::Leave { channel, info });
            }
            Push::Join { .. } | Push::Leave { .. } => {}
            Push::Unsubscribe { code, reason, .. } => {
                if unsubscribe_code::should_resubscribe(code) {
                    // The server could not deliver everything: its side of
                    // the subscription is gone; ask again from where we are.
                    self.send_subscribe(&channel);
                } else {
                    self.subs.remove(&channel);
                    self.events.push_back(Event::Unsubscribed {
                        channel,
                        code,
                        reason,
                    });
                }
            }
        }
    }

    /// Ends the server's side of a subscription and asks again with
    /// recover from the last offset delivered (a hole the server did not
    /// announce).
    fn resubscribe(&mut self, channel: &str) {
        self.send(
            Command::Unsubscribe {
                channel: channel.into(),
            },
            Asked::Unsubscribe,
        );
        self.send_subscribe(channel);
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough to spread reconnects; not for secrets.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }
}

#[cfg(test)]
mod tests;
