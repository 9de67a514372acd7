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
//!   [`Client::subscribe`] and [`Client::subscribe_with`] (with a
//!   subscription token), [`Client::set_sub_token`] (a fresh subscription
//!   token: `sub_refresh` while subscribed), [`Client::unsubscribe`],
//!   [`Client::publish`], [`Client::history`], [`Client::presence`];
//!
//! and drains [`Client::poll_transmit`] (messages to send, unframed) and
//! [`Client::poll_event`] (what the application is told, [`Event`]).
//!
//! What it guarantees the application: each subscription's publications
//! once each, in offset order, across reconnects (it resubscribes with
//! `recover` from the last offset delivered, and with the subscription's
//! token), or an [`Event::Gap`] saying that something was missed and the
//! channel's state should be reloaded. Reconnecting follows the close-code
//! table ([`reconnect::should_reconnect`]) with jittered backoff
//! ([`Backoff`]); a `connect` answered with a temporary error (100, 108, or
//! an application's own code from the connect proxy) is sent again on the
//! same transport after the same backoff ([`Event::ConnectFailed`]). The
//! JavaScript client mirrors these states and names.
//!
//! # Subscription tokens
//! A channel whose namespace wants a subscription token is subscribed with
//! [`Client::subscribe_with`]; the token is kept and sent with every
//! subscribe of the channel (reconnects, recovery). Before it expires,
//! [`Client::set_sub_token`] sends `sub_refresh` ([`Event::SubRefreshed`] or
//! [`Event::SubTokenRefused`]). When it has expired (the server's
//! `unsubscribe` push 2501, or a subscribe refused with 111) the
//! subscription waits, [`Event::SubTokenExpired`], sending nothing until
//! [`Client::set_sub_token`] gives a new token; it then resubscribes with
//! `recover` from the last position delivered. A subscribe refused for
//! good (104, 112, an application error, ...) ends it with
//! [`Event::Unsubscribed`].
//!
//! # Server-side subscriptions
//! The channels a `connect` reply lists (`subs`: the token's or the connect
//! proxy's `channels`) are subscribed by the server: the client tracks them
//! like its own (position, offset holes, unsubscribe pushes) and says
//! [`Event::Subscribed`] with `server_side: true`, but does not subscribe
//! them on a reconnect; the server does again on `connect`. The server
//! recovers nothing for them, so the client compares the new position with
//! the last one delivered: the same is `recovered: true`; further on in the
//! same epoch is an [`Event::Gap`] with [`GapReason::Missed`] (read
//! [`Client::history`] since that position to fill it); another epoch is
//! [`GapReason::NotRecovered`]. One the reply no longer lists ends with
//! [`Event::Unsubscribed`] (code 2000), unless the application subscribed
//! the channel itself too, in which case the client subscribes it (with
//! `recover`) as its own.
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
    ErrorCode, ErrorReply, Payload, Publication, Push, Reply, Request, ServerMessage,
    ServerMessageError, StreamPosition,
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
    /// anonymously, or as the connect proxy decides).
    pub token: Option<String>,
    /// The `data` sent in `connect`, for the server's connect proxy (e.g.
    /// a session id).
    pub connect_data: Option<Payload>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            encoding: Encoding::Json,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(5),
            token: None,
            connect_data: None,
        }
    }
}

/// How to subscribe ([`Client::subscribe_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Recover what was published after this position first (e.g. one
    /// stored before a restart).
    pub since: Option<StreamPosition>,
    /// A subscription token, for a channel whose namespace asks for one;
    /// kept and sent with every subscribe of the channel until replaced
    /// ([`Client::set_sub_token`]).
    pub token: Option<String>,
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
        /// What the connect proxy returned for the client, if anything.
        data: Option<Payload>,
    },
    /// `connect` failed for now: the server or the application's backend
    /// (its connect proxy) is down or busy (100, 108), or the backend
    /// refused with its own code ([`ClientError::App`]). The client sends
    /// `connect` again on the same transport after a backoff; if the
    /// server closes the transport meanwhile, it reconnects.
    ConnectFailed {
        /// What the server answered.
        error: ClientError,
    },
    /// The server refused the token (`connect` or `refresh`): 111 expired
    /// (give a fresh one with [`Client::set_token`]), 112 bad (the server
    /// closes the connection with 4503); for `refresh`, also an
    /// application's code from the refresh proxy.
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
        /// (and is delivered as [`Event::Publication`]s right after); for
        /// a server-side subscription, whether it continues exactly from
        /// the last position delivered.
        recovered: bool,
        /// The server subscribed it (a channel of the connect reply's
        /// `subs`), and does again on every connect: the client does not.
        server_side: bool,
    },
    /// A subscription's token expired (an `unsubscribe` push 2501, or a
    /// subscribe refused with 111): the subscription waits, sending
    /// nothing, until [`Client::set_sub_token`] gives a new token; then it
    /// resubscribes with `recover` from the last position delivered.
    SubTokenExpired {
        /// The channel.
        channel: String,
    },
    /// A `sub_refresh` ([`Client::set_sub_token`] on a live subscription)
    /// was accepted.
    SubRefreshed {
        /// The channel.
        channel: String,
        /// Seconds until the new token expires (`None`: it does not).
        ttl: Option<u64>,
    },
    /// A `sub_refresh` was refused (111 expired, 112 not valid for this
    /// channel and user, or an application's code): the subscription
    /// stays until its old token's deadline; give another token.
    SubTokenRefused {
        /// The channel.
        channel: String,
        /// The error code.
        code: u16,
        /// Why, for humans.
        message: String,
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
    /// server (`error`, or an application's error from the subscribe
    /// proxy), or ended by it (an unsubscribe push with a code that says
    /// not to resubscribe, e.g. 2000, or 2001 permission revoked; or a
    /// server-side subscription the connect reply no longer lists, 2000).
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
        /// The reply, or why the server refused the call
        /// ([`ClientError::Server`], or [`ClientError::App`] from the
        /// application's backend); never a [`Reply::Error`] or
        /// [`Reply::AppError`].
        reply: Result<Reply, ClientError>,
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

/// Why an application's call failed: refused by the client itself, or
/// answered with an error by the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A call needs a connection.
    #[error("not connected")]
    NotConnected,
    /// [`Client::subscribe`] on a channel already subscribed (or
    /// subscribing).
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(String),
    /// [`Client::unsubscribe`] or [`Client::set_sub_token`] on a channel
    /// not subscribed.
    #[error("not subscribed to {0:?}")]
    NotSubscribed(String),
    /// The server refused with one of wavecast's error codes.
    #[error("{0}")]
    Server(ErrorReply),
    /// The application's backend (a proxy) refused with its own code
    /// (400-1999).
    #[error("application error {code}: {message}")]
    App {
        /// The application's code.
        code: u16,
        /// For humans.
        message: String,
    },
}

impl ClientError {
    /// The error code the server answered with (`None` for the client's
    /// own refusals).
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Server(e) => Some(e.code.code()),
            ClientError::App { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A reply as a result: error replies become [`ClientError::Server`]
    /// and [`ClientError::App`].
    pub fn from_reply(reply: Reply) -> Result<Reply, ClientError> {
        match reply {
            Reply::Error(e) => Err(ClientError::Server(e)),
            Reply::AppError { code, message } => Err(ClientError::App { code, message }),
            other => Ok(other),
        }
    }
}

/// What a request in flight was.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asked {
    /// The connection's `connect`.
    Connect,
    /// A `refresh`.
    Refresh,
    /// A `sub_refresh` of this channel's subscription, sending the token
    /// of this `token_seq`, while the subscription was in this
    /// incarnation.
    SubRefresh {
        channel: String,
        seq: u64,
        incarnation: u64,
    },
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
    /// Reconnect attempts and `connect` retries since the server last
    /// accepted a `connect`.
    attempt: u32,
    /// A transport is open (connected, or `connect` on its way).
    open: bool,
    /// When to reconnect, while waiting.
    reconnect_at: Option<Timestamp>,
    /// When to send `connect` again on the open transport, after a
    /// temporary failure.
    connect_retry_at: Option<Timestamp>,
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
            connect_retry_at: None,
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

    /// The channels subscribed or subscribing (server-side ones included).
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.subs.keys().map(String::as_str)
    }

    /// Whether the server subscribed `channel` on connect (the last
    /// connect reply listed it).
    pub fn is_server_side(&self, channel: &str) -> bool {
        self.subs.get(channel).is_some_and(|s| s.server_side)
    }

    /// Whether `channel`'s subscription waits for a new subscription token
    /// ([`Event::SubTokenExpired`]; its state is
    /// [`SubState::Subscribing`]).
    pub fn waits_for_sub_token(&self, channel: &str) -> bool {
        self.subs.get(channel).is_some_and(|s| s.waiting_token)
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
    /// or as a new `connect` after the server refused an expired one (or
    /// at once, when a `connect` waits to be retried).
    pub fn set_token(&mut self, token: String) {
        self.config.token = Some(token.clone());
        if self.state == State::Connected {
            self.send(Command::Refresh { token }, Asked::Refresh);
        } else if self.open && !self.requests.values().any(|a| *a == Asked::Connect) {
            self.send_connect();
        }
    }

    fn send_connect(&mut self) {
        self.connect_retry_at = None;
        let token = self.config.token.clone();
        let data = self.config.connect_data.clone();
        // No application-level pings: a Rust client sees WebSocket pings.
        let ping = false;
        self.send(Command::Connect { token, data, ping }, Asked::Connect);
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
            let delay = self.next_backoff();
            self.state = State::Connecting;
            self.reconnect_at = Some(now + delay);
        } else {
            self.wanted = false;
        }
    }

    /// The delay before the next attempt (reconnect or `connect` retry),
    /// counting the attempt.
    fn next_backoff(&mut self) -> Duration {
        let random = self.next_random();
        let delay = self.config.backoff.delay(self.attempt, random);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// One message from the server. A message that does not decode is the
    /// server's fault: the driver should close the transport (1002 or
    /// 1007) and report it with [`Client::handle_close`].
    pub fn handle_message(
        &mut self,
        now: Timestamp,
        bytes: &[u8],
    ) -> Result<(), ServerMessageError> {
        if !self.open {
            return Ok(());
        }
        match decode_server_message(self.config.encoding, bytes)? {
            ServerMessage::Reply { id, reply } => self.on_reply(now, id, reply),
            ServerMessage::Push(push) => self.on_push(push),
        }
        Ok(())
    }

    /// Time passed: calls past their timeout fail, a `connect` whose retry
    /// is due goes out again, and a reconnect whose backoff passed starts
    /// ([`Event::Connecting`]).
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
        if self.connect_retry_at.is_some_and(|at| at <= now) && self.open {
            self.send_connect();
        }
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.start_connecting();
        }
    }

    /// When [`Client::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let call = self.deadlines.first().map(|&(at, _)| at);
        [call, self.reconnect_at, self.connect_retry_at]
            .into_iter()
            .flatten()
            .min()
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
        self.subscribe_with(channel, SubscribeOptions { since, token: None })
    }

    /// [`Client::subscribe`] with options: a subscription token besides
    /// `since`.
    pub fn subscribe_with(
        &mut self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), ClientError> {
        if self.subs.contains_key(channel) {
            return Err(ClientError::AlreadySubscribed(channel.into()));
        }
        let sub = Subscription::new(options.since, options.token);
        self.subs.insert(channel.to_owned(), sub);
        if self.state == State::Connected {
            self.send_subscribe(channel);
        }
        Ok(())
    }

    /// Replaces `channel`'s subscription token (kept for every later
    /// subscribe of the channel). A live subscription sends it as
    /// `sub_refresh` ([`Event::SubRefreshed`] or
    /// [`Event::SubTokenRefused`]); one waiting for a token
    /// ([`Event::SubTokenExpired`]) subscribes again with it and `recover`
    /// (once connected); one being subscribed takes it on its next
    /// subscribe, or refreshes with it once the one in flight is accepted.
    pub fn set_sub_token(&mut self, channel: &str, token: String) -> Result<(), ClientError> {
        let connected = self.state == State::Connected;
        let Some(sub) = self.subs.get_mut(channel) else {
            return Err(ClientError::NotSubscribed(channel.into()));
        };
        sub.token = Some(token);
        sub.token_seq += 1;
        if sub.waiting_token {
            sub.waiting_token = false;
            if connected {
                self.send_subscribe(channel);
            }
        } else if connected && sub.state == SubState::Subscribed {
            self.send_sub_refresh(channel);
        }
        Ok(())
    }

    /// Ends a subscription (its position is forgotten). A server-side one
    /// comes back on the next connect if the server still subscribes the
    /// connection to it.
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        let Some(sub) = self.subs.remove(channel) else {
            return Err(ClientError::NotSubscribed(channel.into()));
        };
        // One waiting for a token has nothing on the server to end.
        if self.state == State::Connected && !sub.waiting_token {
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
                reverse: false,
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
        let Some(sub) = self.subs.get(channel) else {
            return;
        };
        let command = Command::Subscribe {
            channel: channel.into(),
            recover: sub.position.clone(),
            token: sub.token.clone(),
        };
        let id = self.send(command, Asked::Subscribe(channel.into()));
        if let Some(sub) = self.subs.get_mut(channel) {
            sub.state = SubState::Subscribing;
            sub.request = Some(id);
            sub.sent_seq = sub.token_seq;
        }
    }

    fn send_sub_refresh(&mut self, channel: &str) {
        let Some(sub) = self.subs.get(channel) else {
            return;
        };
        let Some(token) = sub.token.clone() else {
            return;
        };
        let asked = Asked::SubRefresh {
            channel: channel.into(),
            seq: sub.token_seq,
            incarnation: sub.incarnation,
        };
        let command = Command::SubRefresh {
            channel: channel.into(),
            token,
        };
        self.send(command, asked);
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
        self.connect_retry_at = None;
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

    fn on_reply(&mut self, now: Timestamp, id: u64, reply: Reply) {
        match self.requests.remove(&id) {
            None => self
                .events
                .push_back(Event::Anomaly(format!("a reply to no request: {id}"))),
            Some(Asked::Unsubscribe) => {}
            Some(Asked::Connect) => self.on_connected(now, reply),
            Some(Asked::Refresh) => match reply {
                Reply::Refresh { ttl } => self.events.push_back(Event::Refreshed { ttl }),
                Reply::Error(e) => self.events.push_back(Event::TokenRefused {
                    code: e.code.code(),
                    message: e.message,
                }),
                Reply::AppError { code, message } => {
                    self.events.push_back(Event::TokenRefused { code, message })
                }
                other => self
                    .events
                    .push_back(Event::Anomaly(format!("refresh answered with {other:?}"))),
            },
            Some(Asked::SubRefresh {
                channel,
                seq,
                incarnation,
            }) => self.on_sub_refreshed(channel, seq, incarnation, reply),
            Some(Asked::Call(due)) => {
                self.deadlines.remove(&(due, id));
                self.events.push_back(Event::Reply {
                    id,
                    reply: ClientError::from_reply(reply),
                });
            }
            Some(Asked::Subscribe(channel)) => self.on_subscribed(id, channel, reply),
        }
    }

    fn on_connected(&mut self, now: Timestamp, reply: Reply) {
        let error = match reply {
            Reply::Connect {
                client,
                user,
                ttl,
                data,
                subs,
                ..
            } => {
                self.state = State::Connected;
                self.attempt = 0;
                self.events.push_back(Event::Connected {
                    client,
                    user,
                    ttl,
                    data,
                });
                self.restore_subscriptions(subs);
                return;
            }
            Reply::Error(e) => ClientError::Server(e),
            Reply::AppError { code, message } => ClientError::App { code, message },
            other => {
                return self
                    .events
                    .push_back(Event::Anomaly(format!("connect answered with {other:?}")))
            }
        };
        let temporary = match &error {
            ClientError::Server(e) => {
                matches!(e.code, ErrorCode::Internal | ErrorCode::NotAvailable)
            }
            _ => true,
        };
        if temporary {
            // The connection stays open: ask again after a backoff (if the
            // server's connect timeout closes it first, the client
            // reconnects, see `reconnect::should_reconnect`).
            let delay = self.next_backoff();
            self.connect_retry_at = Some(now + delay);
            self.events.push_back(Event::ConnectFailed { error });
        } else if let ClientError::Server(e) = error {
            self.events.push_back(Event::TokenRefused {
                code: e.code.code(),
                message: e.message,
            });
        }
    }

    /// Connected: the server-side subscriptions of the reply (`subs`) are
    /// live from their positions; the application's others are sent.
    fn restore_subscriptions(&mut self, listed: Vec<(String, StreamPosition)>) {
        let mut server_side = BTreeSet::new();
        for (channel, at) in listed {
            let sub = self
                .subs
                .entry(channel.clone())
                .or_insert_with(Subscription::server);
            sub.server_side = true;
            let settled = sub.settle_server(at.clone());
            self.events.push_back(Event::Subscribed {
                channel: channel.clone(),
                epoch: at.epoch.clone(),
                offset: at.offset,
                recovered: settled.recovered,
                server_side: true,
            });
            if let Some(reason) = settled.gap {
                self.events.push_back(Event::Gap {
                    channel: channel.clone(),
                    epoch: at.epoch,
                    offset: at.offset,
                    reason,
                });
            }
            server_side.insert(channel);
        }
        let others: Vec<String> = self
            .subs
            .keys()
            .filter(|c| !server_side.contains(*c))
            .cloned()
            .collect();
        for channel in others {
            let Some(sub) = self.subs.get_mut(&channel) else {
                continue;
            };
            sub.server_side = false;
            if !sub.client_side {
                // The server no longer subscribes the connection to it.
                self.subs.remove(&channel);
                self.events.push_back(Event::Unsubscribed {
                    channel,
                    code: unsubscribe_code::SERVER,
                    reason: "no longer a server-side subscription".into(),
                });
            } else if !sub.waiting_token {
                self.send_subscribe(&channel);
            }
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
        let (code, message) = match reply {
            Reply::Subscribe {
                epoch,
                offset,
                recovery,
            } => {
                let settled = sub.settle(epoch.clone(), offset, recovery);
                let server_side = sub.server_side;
                // A token given while the subscribe was on its way.
                let newer_token = sub.server_seq < sub.token_seq;
                self.events.push_back(Event::Subscribed {
                    channel: channel.clone(),
                    epoch: epoch.clone(),
                    offset,
                    recovered: settled.recovered,
                    server_side,
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
                if newer_token {
                    self.send_sub_refresh(&channel);
                }
                return;
            }
            Reply::Error(ErrorReply {
                code: ErrorCode::TokenExpired,
                ..
            }) if sub.sent_seq < sub.token_seq => {
                // Refused with a token already replaced: try the new one.
                return self.send_subscribe(&channel);
            }
            Reply::Error(ErrorReply {
                code: ErrorCode::TokenExpired,
                ..
            }) => return self.wait_for_sub_token(&channel),
            Reply::Error(ErrorReply { code, message }) => (code.code(), message),
            Reply::AppError { code, message } => (code, message),
            other => {
                self.subs.remove(&channel);
                return self.events.push_back(Event::Anomaly(format!(
                    "subscribe {id} on {channel:?} answered with {other:?}"
                )));
            }
        };
        self.subs.remove(&channel);
        self.events.push_back(Event::Unsubscribed {
            channel,
            code,
            reason: message,
        });
    }

    /// The subscription's token expired: nothing is sent for it until
    /// [`Client::set_sub_token`].
    fn wait_for_sub_token(&mut self, channel: &str) {
        if let Some(sub) = self.subs.get_mut(channel) {
            sub.state = SubState::Subscribing;
            sub.request = None;
            sub.waiting_token = true;
            self.events.push_back(Event::SubTokenExpired {
                channel: channel.into(),
            });
        }
    }

    fn on_sub_refreshed(&mut self, channel: String, seq: u64, incarnation: u64, reply: Reply) {
        // A reply about a subscription since ended or made again (whose
        // subscribe carried the newest token) changes nothing.
        let Some(sub) = self
            .subs
            .get_mut(&channel)
            .filter(|s| s.incarnation == incarnation && s.state == SubState::Subscribed)
        else {
            return;
        };
        let event = match reply {
            Reply::SubRefresh { ttl } => {
                sub.server_seq = sub.server_seq.max(seq);
                Event::SubRefreshed { channel, ttl }
            }
            Reply::Error(e) => Event::SubTokenRefused {
                channel,
                code: e.code.code(),
                message: e.message,
            },
            Reply::AppError { code, message } => Event::SubTokenRefused {
                channel,
                code,
                message,
            },
            other => Event::Anomaly(format!("sub_refresh answered with {other:?}")),
        };
        self.events.push_back(event);
    }

    fn on_push(&mut self, push: Push) {
        // A ping (which this client does not ask for) is about no channel.
        let Some(channel) = push.channel().map(str::to_owned) else {
            return;
        };
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
            Push::Join { .. } | Push::Leave { .. } | Push::Ping => {}
            Push::Unsubscribe { code, reason, .. } => {
                // With a subscribe in flight, the push is about the
                // server's previous subscription (a subscribe's reply comes
                // before any push of what it made).
                let replaced = sub.request.is_some();
                if !unsubscribe_code::should_resubscribe(code) {
                    // 2000 by the server, 2001 permission revoked, and the
                    // rest of 2000-2499: stay unsubscribed.
                    self.subs.remove(&channel);
                    if replaced {
                        self.send(
                            Command::Unsubscribe {
                                channel: channel.clone(),
                            },
                            Asked::Unsubscribe,
                        );
                    }
                    self.events.push_back(Event::Unsubscribed {
                        channel,
                        code,
                        reason,
                    });
                } else if replaced {
                    // The subscribe in flight makes it again.
                } else if code == unsubscribe_code::TOKEN_EXPIRED && sub.server_seq >= sub.token_seq
                {
                    self.wait_for_sub_token(&channel);
                } else {
                    // 2500 and the rest of 2500-2999 (or 2501 with a token
                    // given since): the server's side of the subscription
                    // is gone; ask again from where we are.
                    self.send_subscribe(&channel);
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
