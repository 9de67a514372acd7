//! One server shard's whole state as one state machine.
//!
//! A [`Node`] owns every connection of its shard (a slab indexed by
//! [`ConnId`]), one timer set for all of them, the list of connections with
//! bytes to write, and the shard's view of its channels: which local
//! connections subscribe to what, and how far each channel's stream has
//! been delivered. The backbone ([`crate::backbone`]) sequences
//! publications; the node only delivers them, in offset order, to its local
//! subscribers (see [`channels`](self#channels) below).
//!
//! The driver (the runtime's shard, the model, a test):
//!
//! 1. feeds it: `handle_connect`, `handle_read`, `handle_eof`,
//!    `handle_written`, `handle_backbone`, `handle_proxy` and
//!    `handle_keys` (answers to its asks), `handle_timeout` (safe early or
//!    twice);
//! 2. drains it, in this order: `poll_ask()` (make each backend proxy call
//!    or key-set fetch, and answer it later), `poll_backbone()` (send each
//!    command to the backbone), `poll_reading()` (stop or resume reading a connection:
//!    one with `max_requests_in_flight` commands waiting has the rest of
//!    its input held until replies drain), `poll_transmit()` (write each
//!    returned connection's
//!    `queue`, report with `handle_written`), then `poll_finished()` (drop
//!    those transports: the node keeps nothing of them), then
//!    `poll_timeout()` (when to call `handle_timeout` next).
//!
//! Timers: each connection has one registered deadline in a set ordered by
//! time. A read only moves a connection's deadline later, so the registered
//! entry is left in place and may fire early; firing early is harmless
//! because `Connection::handle_timeout` recomputes from its own instants.
//!
//! # Channels
//!
//! A channel exists in a node while a local connection subscribes to it
//! (or is subscribing); the node holds one backbone subscription for it
//! exactly that long. Per channel the node knows the stream's epoch and the
//! last offset it delivered (`synced`), and delivers a publication only if
//! its offset is exactly the next one: an older one is a duplicate and is
//! dropped, a newer one is a gap, which the node fills from the backbone's
//! history before delivering anything after it, or, if history cannot fill
//! it, tells every subscriber with an `unsubscribe` push (code
//! `INSUFFICIENT_STATE`) so that it resubscribes with recover. A gap is never
//! silent.
//!
//! A subscribe asks the backbone for the channel's position (and, with
//! `recover`, the publications after the client's position). The reply's
//! `top` is where the subscription starts: publications after it that the
//! node delivered while the reply was in flight are replayed to the new
//! subscriber from a short list kept while subscribes are pending.
//!
//! # Files
//!
//! - `mod.rs` (this file): [`Node`], [`NodeConfig`] and the driver
//!   interface (`handle_*`, `poll_*`), and the connection loop every input
//!   ends in (drain a connection's events, list it for writing, re-arm its
//!   timer, release it when finished);
//! - `slab.rs`: the generational slab of connections ([`ConnId`]);
//! - `command.rs`: client commands, one method per command;
//! - `auth.rs`: `connect`, `refresh` and `sub_refresh`, the gate before
//!   every other command, and the authentication deadlines;
//! - the per-connection rate limits are the crate's `rate` module
//!   (shared with the connection's ping allowance);
//! - `server_subs.rs`: the subscriptions a connection gets on connect
//!   (a token's `channels`), and the connect reply that waits for them;
//! - `ask.rs`: what the node asks outside (backend proxies, the key set)
//!   and what it does with the answers;
//! - `request.rs`: requests waiting for the backbone and their replies;
//! - `channel.rs`: channel ordering and recovery (delivery in offset
//!   order, holding and gap filling, subscribe replies, resets);
//! - `sse.rs`: Server-Sent Events streams (opening, their positions and
//!   events, resubscribing after a gap);
//! - `call.rs`: who makes a client's call over HTTP and whether they may;
//! - `reconfigure.rs`: [`Node::reconfigure`], new settings while running
//!   (the server's reload);
//! - `heartbeat.rs`: the one timer of application-level pings and SSE
//!   heartbeat comments;
//! - `observe.rs`: what the node counts for the operator
//!   ([`crate::metrics`]), kept out of its state's equality and hash.

mod ask;
mod auth;
mod call;
mod channel;
mod command;
mod heartbeat;
mod observe;
mod reconfigure;
mod request;
mod server_subs;
mod slab;
mod sse;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::auth::AuthConfig;
use crate::backbone::{BackboneCommand, BackboneEvent, RequestId};
use crate::close::CloseCode;
use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{self, OpCode};
use crate::namespace::Namespaces;
use crate::protocol::{self, close, Encoding, Push, Reply};
use crate::queue::OutQueue;
use crate::time::Timestamp;

use channel::LocalChannel;
use request::InFlight;
use slab::{Auth, Client, IdQueue, Slab};

pub use ask::Ask;
pub use call::{CallAdmitted, CallRefusal};
pub use slab::ConnId;

/// Default of [`NodeConfig::max_subscriptions`].
pub const MAX_SUBSCRIPTIONS: usize = 512;
pub use crate::rate::OVER_LIMIT_GRACE;
/// Most publications kept for replay to pending subscribers of a channel;
/// past it a pending subscribe fails with "not available, retry".
pub const MAX_REPLAY: usize = 4096;
/// Most publications held back in a channel while a gap is being filled;
/// past it the gap is declared unfillable.
pub const MAX_HELD: usize = 4096;

/// How a finished connection ended ([`Node::poll_ended`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ended {
    /// The close code that describes the end (sent, received, or 1006
    /// when none was exchanged).
    pub code: CloseCode,
    /// Who or what ended it ([`crate::connection::CloseCause::label`]).
    pub cause: &'static str,
    /// The user it was connected as, if any (a status page lists the last
    /// closes with their user). Taken from the connection as it is
    /// released: nothing is kept per live connection for it.
    pub user: Option<Box<str>>,
    /// What it was connected to.
    pub endpoint: Endpoint,
}

/// What a connection is for, chosen by the path it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/echo`: every message goes back unchanged (conformance runs).
    Echo,
    /// `/ws`: the pub/sub protocol in this encoding.
    PubSub(Encoding),
    /// `/sse`: a Server-Sent Events stream ([`Node::handle_sse`]), which
    /// only writes.
    Sse,
}

/// Settings of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// Settings of every connection.
    pub connection: ConnectionConfig,
    /// Channel namespaces.
    pub namespaces: Namespaces,
    /// Prefix of this node's client ids: unique per node in the cluster and
    /// per process start, so client ids are never reused.
    pub client_prefix: String,
    /// Most commands of one connection that may wait for the backbone at
    /// once. A connection at the bound has the rest of its input held (its
    /// events stay in its `Connection`) and the driver is told to stop
    /// reading it ([`Node::poll_reading`]) until replies drain: a client
    /// that pipelines faster than the sequencer answers is slowed through
    /// TCP, not buffered.
    pub max_requests_in_flight: usize,
    /// How pub/sub connections authenticate (default: open, every
    /// connection anonymous, as on a loopback development server).
    pub auth: AuthConfig,
    /// Commands per second one connection may send, with bursts of twice
    /// that; over it a command gets error 107, and a connection still over
    /// it [`OVER_LIMIT_GRACE`] after its first 107 is closed with 4504.
    /// 0: no limit (the default here; the server's default is 100).
    pub client_command_rate: u32,
    /// Publications per second one connection may send (the same rules;
    /// 0: no limit; the server's default is 20).
    pub client_publish_rate: u32,
    /// Most channels one connection may subscribe to (error 107 beyond).
    pub max_subscriptions: usize,
    /// Which backend proxies are configured (see [`crate::proxy`]).
    pub proxies: crate::proxy::Proxies,
    /// permessage-deflate: `Some` to compress publications for the
    /// connections that negotiated it (the handshake decides who, see
    /// [`Node::handle_connect_with`]); `None` (the default) compresses
    /// nothing (a connection that negotiated it anyway is still read).
    pub compression: Option<crate::deflate::CompressionConfig>,
}

/// The shard's codec under `compression` (none without it).
fn codec_for(
    compression: &Option<crate::deflate::CompressionConfig>,
) -> Option<Box<crate::deflate::Codec>> {
    compression.map(|c| Box::new(crate::deflate::Codec::new(c.level)))
}

/// Default of [`NodeConfig::max_requests_in_flight`]: enough for a client
/// that resubscribes to dozens of channels at once to pipeline them.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            connection: ConnectionConfig::default(),
            namespaces: Namespaces::default(),
            client_prefix: String::new(),
            max_requests_in_flight: MAX_REQUESTS_IN_FLIGHT,
            auth: AuthConfig::default(),
            client_command_rate: 0,
            client_publish_rate: 0,
            max_subscriptions: MAX_SUBSCRIPTIONS,
            proxies: crate::proxy::Proxies::default(),
            compression: None,
        }
    }
}

/// A deliberately planted bug (feature `mutations`, tests only): the
/// model-based tests (`core/tests/node_model.rs`) must fail with each one
/// switched on, which shows that they can find such bugs.
#[cfg(feature = "mutations")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// A closed connection's subscriptions are not removed.
    SkipUnsubscribeOnClose,
    /// A publication after a gap is delivered at once, the gap unfilled.
    IgnoreGap,
    /// A channel dropped locally keeps its backbone subscription.
    KeepBackboneSubscription,
    /// A local client's publication is delivered to the local subscribers
    /// at once, at the offset the node expects next, instead of waiting
    /// for the backbone to sequence it (the short-cut the delivery
    /// contract forbids).
    DeliverLocalDirectly,
    /// A client's `subscribe` is admitted without the namespace's
    /// permission check (as the HTTP API would be): an anonymous
    /// connection subscribes to a channel for authenticated ones. Caught
    /// by the stateright model's authenticating topology
    /// (`model/tests/check.rs`), not by `node_model.rs`.
    SkipSubscribePermission,
    /// A server-side subscription (a token's `channels` claim) is made
    /// without the namespace's permission check. Caught by
    /// `core/tests/node_auth.rs`.
    SkipServerSubscribePermission,
}

/// One shard's connections, channels and timers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    config: NodeConfig,
    echo_config: Rc<ConnectionConfig>,
    pubsub_config: Rc<ConnectionConfig>,
    sse_config: Rc<ConnectionConfig>,
    slab: Slab,
    timers: BTreeSet<(Timestamp, ConnId)>,
    /// Authentication deadlines (connect timeout, token expiry plus grace),
    /// apart from `timers` so that the delivery path never looks at them.
    auth_timers: BTreeSet<(Timestamp, ConnId)>,
    /// Subscriptions made with an expiring subscription token: when each
    /// ends unless refreshed (`exp` plus the refresh grace), and the same
    /// ordered by time.
    sub_expiry: BTreeMap<(ConnId, String), Timestamp>,
    sub_timers: BTreeSet<(Timestamp, ConnId, String)>,
    /// The `info` of subscription tokens, by subscription (shown in
    /// presence and as a publication's sender).
    sub_info: BTreeMap<(ConnId, String), protocol::Payload>,
    transmit: IdQueue,
    finished: VecDeque<(ConnId, Ended)>,
    /// How each connection that has closed but is not finished yet (its
    /// last bytes are being written) ended; moved to `finished` with it.
    /// Only closing connections are here: an open one costs nothing.
    ended: BTreeMap<ConnId, Ended>,
    channels: BTreeMap<String, LocalChannel>,
    /// Requests waiting for the backbone, and when each was sent.
    requests: BTreeMap<RequestId, (InFlight, observe::Sent)>,
    next_request: u64,
    backbone: VecDeque<BackboneCommand>,
    /// Scratch list of a fan-out's recipients (see `deliver`).
    targets: Vec<ConnId>,
    /// Paused connections whose requests drained below the bound: their
    /// held input is handled at the end of the current input.
    unpaused: Vec<ConnId>,
    /// Changes of whether the driver should read a connection.
    reading: VecDeque<(ConnId, bool)>,
    /// Asks for the driver and the ones waiting for answers.
    asks: ask::Asks,
    /// Connect replies waiting for their server-side subscriptions.
    connecting: BTreeMap<ConnId, server_subs::Connecting>,
    /// The WebSockets that asked for pings in `connect` (they and every
    /// open SSE stream get a heartbeat every interval, `heartbeat.rs`).
    heartbeats: BTreeSet<ConnId>,
    /// When the heartbeats go out next (`None`: nobody is due one).
    next_heartbeat: Option<Timestamp>,
    /// The ping push as a frame of each encoding, built once: every
    /// connection's queue holds clones of these bytes.
    ping_frames: [Bytes; 2],
    /// The node's SSE streams: their channels and positions (`sse.rs`).
    streams: BTreeMap<ConnId, sse::Stream>,
    /// Counts for the operator (`observe.rs`).
    observed: observe::Observed,
    /// The shard's one deflater and inflater (permessage-deflate without
    /// context takeover keeps no state per connection); present while
    /// compression is configured.
    codec: Option<Box<crate::deflate::Codec>>,
    #[cfg(feature = "mutations")]
    mutation: Option<Mutation>,
}

impl Node {
    /// An empty node.
    pub fn new(config: NodeConfig) -> Self {
        let (echo_config, pubsub_config, sse_config) =
            reconfigure::connection_configs(&config.connection);
        let config_compression = config.compression;
        Node {
            echo_config,
            pubsub_config,
            sse_config,
            config,
            slab: Slab::default(),
            timers: BTreeSet::new(),
            auth_timers: BTreeSet::new(),
            sub_expiry: BTreeMap::new(),
            sub_timers: BTreeSet::new(),
            sub_info: BTreeMap::new(),
            transmit: IdQueue::default(),
            finished: VecDeque::new(),
            ended: BTreeMap::new(),
            channels: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 1,
            backbone: VecDeque::new(),
            targets: Vec::new(),
            unpaused: Vec::new(),
            reading: VecDeque::new(),
            asks: ask::Asks::default(),
            connecting: BTreeMap::new(),
            heartbeats: BTreeSet::new(),
            next_heartbeat: None,
            ping_frames: [
                protocol::ping_frame(Encoding::Json),
                protocol::ping_frame(Encoding::MsgPack),
            ],
            streams: BTreeMap::new(),
            observed: observe::Observed::default(),
            codec: codec_for(&config_compression),
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Plants a bug (tests only; see [`Mutation`]).
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, m: Mutation) {
        self.mutation = Some(m);
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Connections currently held.
    pub fn connections(&self) -> usize {
        self.slab.len()
    }

    /// A connection whose handshake completed at `now`; `leftover` are the
    /// bytes that arrived after the request head. (An SSE stream is
    /// opened with [`Node::handle_sse`], which knows its channels; given
    /// [`Endpoint::Sse`] here, it is a stream of no channel, refused 400.)
    pub fn handle_connect(
        &mut self,
        now: Timestamp,
        endpoint: Endpoint,
        leftover: &[u8],
    ) -> ConnId {
        self.handle_connect_with(now, endpoint, leftover, false)
    }

    /// [`Node::handle_connect`] for a WebSocket whose handshake negotiated
    /// permessage-deflate if `compression` (RFC 7692): it may send
    /// compressed messages, and gets the compressed frame of publications
    /// at or over the threshold.
    pub fn handle_connect_with(
        &mut self,
        now: Timestamp,
        endpoint: Endpoint,
        leftover: &[u8],
        compression: bool,
    ) -> ConnId {
        let config = match endpoint {
            Endpoint::PubSub(_) => self.pubsub_config.clone(),
            Endpoint::Echo => self.echo_config.clone(),
            Endpoint::Sse => {
                let none = crate::sse::SseRequest {
                    channels: Vec::new(),
                    positions: Vec::new(),
                    token: None,
                    origin: None,
                };
                return self.handle_sse(now, none, std::time::Duration::ZERO);
            }
        };
        let mut conn = Connection::with_config(now, config);
        if compression {
            conn.enable_deflate();
        }
        // `ENDPOINT_LABELS` order: ws, sse (counted in `handle_sse`), echo.
        let kind = if endpoint == Endpoint::Echo { 2 } else { 0 };
        self.observed.counters.accepted[kind] += 1;
        let auth = match endpoint {
            Endpoint::PubSub(_) if !self.config.auth.open() => {
                Auth::Pending(now + self.config.auth.connect_timeout)
            }
            Endpoint::PubSub(_) => Auth::Open,
            Endpoint::Echo | Endpoint::Sse => Auth::Anonymous,
        };
        let client = Client {
            conn,
            endpoint,
            timer: None,
            listed: false,
            paused: false,
            held: false,
            in_flight: 0,
            subs: Vec::new(),
            auth,
            rate: crate::rate::Rate::new(
                now,
                self.config.client_command_rate,
                self.config.client_publish_rate,
            ),
        };
        let id = self.slab.insert(client);
        if let Some(Auth::Pending(at)) = self.slab.get(id).map(|c| &c.auth) {
            self.auth_timers.insert((*at, id));
        }
        if !leftover.is_empty() {
            self.handle_read(now, id, leftover);
        } else {
            self.after(now, id);
        }
        id
    }

    /// Bytes read from a connection's transport. Compressed messages are
    /// inflated with the node's one codec.
    pub fn handle_read(&mut self, now: Timestamp, id: ConnId, data: &[u8]) {
        self.observed.counters.bytes_read += data.len() as u64;
        let Some(client) = self.slab.get_mut(id) else {
            return;
        };
        client
            .conn
            .handle_read_with(now, data, self.codec.as_deref_mut());
        self.after(now, id);
    }

    /// A connection's transport reached end of stream or failed.
    pub fn handle_eof(&mut self, now: Timestamp, id: ConnId) {
        self.with_conn(now, id, |c| c.handle_eof(now));
    }

    /// The driver wrote `n` bytes of a connection's queue.
    pub fn handle_written(&mut self, now: Timestamp, id: ConnId, n: usize) {
        self.observed.counters.bytes_written += n as u64;
        self.with_conn(now, id, |c| c.handle_written(now, n));
    }

    /// The driver's write to a connection's transport was refused (the
    /// kernel's send buffer is full): its queue budget applies until it
    /// drains (see [`Connection::handle_write_blocked`]).
    pub fn handle_write_blocked(&mut self, id: ConnId) {
        if let Some(client) = self.client_mut(id) {
            client.conn.handle_write_blocked();
        }
    }

    /// Closes a connection with `code` (e.g. an operator's disconnect); an
    /// open SSE stream gets a `close` event with it first.
    pub fn close(&mut self, now: Timestamp, id: ConnId, code: CloseCode, reason: &str) {
        if self.is_stream(id) {
            self.sse_closing(now, id, code, reason);
        }
        self.with_conn(now, id, |c| c.close(now, code, reason));
    }

    /// Closes every connection (graceful shutdown): pub/sub clients and
    /// SSE streams with [`close::SHUTDOWN`] (reconnect and recover), echo
    /// clients with 1001.
    pub fn shutdown(&mut self, now: Timestamp) {
        let ids: Vec<ConnId> = self.ids().collect();
        for id in ids {
            let code = match self.client_mut(id).map(|c| c.endpoint) {
                Some(Endpoint::PubSub(_) | Endpoint::Sse) => close::SHUTDOWN,
                _ => CloseCode::GOING_AWAY,
            };
            self.close(now, id, code, close::reason(code));
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.auth_timeout(now);
        self.heartbeat_timeout(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(client) = self.client_mut(id) {
                client.timer = None;
            }
            self.with_conn(now, id, |c| c.handle_timeout(now));
        }
    }

    /// An event from the backbone.
    pub fn handle_backbone(&mut self, now: Timestamp, event: BackboneEvent) {
        match event {
            BackboneEvent::Publication {
                channel,
                epoch,
                publication,
            } => self.on_publication(now, &channel, epoch, publication),
            BackboneEvent::Join { channel, info } => self.on_presence_push(
                now,
                &channel,
                Push::Join {
                    channel: channel.clone(),
                    info,
                },
            ),
            BackboneEvent::Leave { channel, info } => self.on_presence_push(
                now,
                &channel,
                Push::Leave {
                    channel: channel.clone(),
                    info,
                },
            ),
            BackboneEvent::Reply { request, reply } => self.on_reply(now, request, reply),
            BackboneEvent::Reset => self.on_reset(now),
        }
        self.resume_unpaused(now);
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let conn = self.timers.first().map(|&(at, _)| at);
        let auth = self.auth_timers.first().map(|&(at, _)| at);
        let sub = self.sub_timers.first().map(|(at, _, _)| *at);
        [conn, auth, sub, self.next_heartbeat]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next command for the backbone.
    pub fn poll_backbone(&mut self) -> Option<BackboneCommand> {
        self.backbone.pop_front()
    }

    /// Gives back a command from [`Node::poll_backbone`] that the driver
    /// could not send yet (its channel to the backbone is full): it is the
    /// next one polled again, so the order is kept.
    pub fn unpoll_backbone(&mut self, command: BackboneCommand) {
        self.backbone.push_front(command);
    }

    /// The next change of whether the driver should read a connection's
    /// transport: `(id, false)` when the connection has
    /// `max_requests_in_flight` commands waiting for the backbone and
    /// input left that it has not handled (stop reading it, so its peer is
    /// slowed by TCP), `(id, true)` once that input is handled (read it
    /// again). A driver that keeps reading anyway loses nothing; the node
    /// then holds what it read.
    pub fn poll_reading(&mut self) -> Option<(ConnId, bool)> {
        self.reading.pop_front()
    }

    /// The next connection with bytes to write.
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(id) = self.transmit.pop_front() {
            if let Some(client) = self.client_mut(id) {
                client.listed = false;
                if !client.conn.queue().is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// A connection's outbound queue, for the driver to write from.
    pub fn queue(&mut self, id: ConnId) -> Option<&mut OutQueue> {
        self.client_mut(id).map(|c| c.conn.queue())
    }

    /// The next connection that has ended: drop its transport. The node has
    /// already released everything it held for it.
    pub fn poll_finished(&mut self) -> Option<ConnId> {
        self.finished.pop_front().map(|(id, _)| id)
    }

    /// [`Node::poll_finished`], with how the connection ended (its close
    /// code and cause, for the driver's logs and counts).
    pub fn poll_ended(&mut self) -> Option<(ConnId, Ended)> {
        self.finished.pop_front()
    }

    /// Handles of every live connection, in slab order.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slab.ids()
    }

    /// The client id of a connection, as clients and the API see it.
    pub fn client_id(&self, id: ConnId) -> String {
        format!(
            "{}{}.{}",
            self.config.client_prefix, id.index, id.generation
        )
    }

    /// Who a connection is, as presence and a publication's sender show
    /// it: its client id, user, connection `info` and, for a channel, the
    /// `info` of its subscription token.
    fn client_info(&self, id: ConnId, channel: Option<&str>) -> protocol::ClientInfo {
        let auth = self.slab.get(id).map(|c| &c.auth);
        let chan_info = match channel {
            Some(channel) if !self.sub_info.is_empty() => {
                self.sub_info.get(&(id, channel.to_owned())).cloned()
            }
            _ => None,
        };
        protocol::ClientInfo {
            client: self.client_id(id),
            user: auth.map(|a| a.presence_user()).unwrap_or_default(),
            conn_info: auth.and_then(|a| a.info().cloned()),
            chan_info,
        }
    }

    /// The connection a client id names, if it is one of this node's.
    pub fn conn_of(&self, client: &str) -> Option<ConnId> {
        let rest = client.strip_prefix(self.config.client_prefix.as_str())?;
        let (index, generation) = rest.split_once('.')?;
        let id = ConnId {
            index: index.parse().ok()?,
            generation: generation.parse().ok()?,
        };
        self.slab.get(id).map(|_| id)
    }

    /// Bytes queued for writing across all connections.
    pub fn queued_bytes(&self) -> usize {
        self.clients().map(|c| c.conn.queued_bytes()).sum()
    }

    /// The `n` connections with the most bytes queued (those with none
    /// left out), most first: what a status page lists as the slowest
    /// readers. One pass over the connections, keeping `n` at most.
    pub fn most_queued(&self, n: usize) -> Vec<(ConnId, usize)> {
        let mut top: Vec<(ConnId, usize)> = Vec::with_capacity(n + 1);
        if n == 0 {
            return top;
        }
        for id in self.slab.ids() {
            let bytes = self.slab.get(id).map_or(0, |c| c.conn.queued_bytes());
            if bytes == 0 || (top.len() == n && top[n - 1].1 >= bytes) {
                continue;
            }
            let at = top.partition_point(|(_, b)| *b >= bytes);
            top.insert(at, (id, bytes));
            top.truncate(n);
        }
        top
    }

    /// Timers registered: one at most per live connection, one more for a
    /// connection waiting to authenticate or holding a token that expires,
    /// one per subscription admitted by an expiring subscription token,
    /// and the node's one heartbeat timer while it is armed.
    pub fn timers(&self) -> usize {
        self.timers.len()
            + self.auth_timers.len()
            + self.sub_timers.len()
            + usize::from(self.next_heartbeat.is_some())
    }

    /// Connections that get a heartbeat every interval (pings asked in
    /// `connect`, open SSE streams).
    pub fn heartbeat_connections(&self) -> usize {
        self.heartbeats.len() + self.streams.values().filter(|s| s.is_open()).count()
    }

    /// Requests to the backbone awaiting a reply.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Channels with local subscribers and their live subscriber counts.
    pub fn channels(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.channels
            .iter()
            .map(|(name, ch)| (name.as_str(), ch.live.len()))
    }

    /// Live local subscribers of `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |c| c.live.len())
    }

    /// The channels a connection subscribes to (or is subscribing to).
    pub fn subscriptions(&self, id: ConnId) -> Vec<String> {
        self.slab
            .get(id)
            .map(|c| c.subs.clone())
            .unwrap_or_default()
    }

    fn clients(&self) -> impl Iterator<Item = &Client> + '_ {
        self.slab.clients()
    }

    fn client_mut(&mut self, id: ConnId) -> Option<&mut Client> {
        self.slab.get_mut(id)
    }

    /// Runs `f` on a live connection, then handles what it produced.
    fn with_conn(&mut self, now: Timestamp, id: ConnId, f: impl FnOnce(&mut Connection)) {
        let Some(client) = self.client_mut(id) else {
            return;
        };
        f(&mut client.conn);
        self.after(now, id);
    }

    /// Drains a connection's events, lists it for writing, re-arms its
    /// timer, and releases it once it is finished.
    fn after(&mut self, now: Timestamp, id: ConnId) {
        let max = self.config.max_requests_in_flight;
        loop {
            let Some(client) = self.slab.get_mut(id) else {
                return;
            };
            // `has_events` first: on the delivery path it is false, and the
            // rest is not looked at.
            if client.conn.has_events()
                && (usize::from(client.in_flight) >= max || client.held)
                && client.conn.state() == crate::connection::State::Open
            {
                // Hold the rest of its input until replies drain (or the
                // answer it waits for comes). A connection that is closing
                // is not held: its last commands are handled and its end
                // released at once.
                if !client.paused {
                    client.paused = true;
                    self.reading.push_back((id, false));
                }
                break;
            }
            let Some(event) = client.conn.poll_event() else {
                if client.paused {
                    client.paused = false;
                    self.reading.push_back((id, true));
                }
                break;
            };
            match (client.endpoint, event) {
                (Endpoint::Echo, Event::Text(b)) => {
                    let f = frame::encode(OpCode::Text, &b);
                    let _ = client.conn.send(now, f);
                }
                (Endpoint::Echo, Event::Binary(b)) => {
                    let f = frame::encode(OpCode::Binary, &b);
                    let _ = client.conn.send(now, f);
                }
                (Endpoint::PubSub(enc), Event::Text(b)) if enc.frame_opcode() == OpCode::Text => {
                    self.on_command(now, id, enc, &b);
                }
                (Endpoint::PubSub(enc), Event::Binary(b))
                    if enc.frame_opcode() == OpCode::Binary =>
                {
                    self.on_command(now, id, enc, &b);
                }
                (Endpoint::PubSub(_), Event::Text(_) | Event::Binary(_)) => {
                    // JSON travels in text frames, MessagePack in binary
                    // ones: the other kind is not a command of ours.
                    let code = close::BAD_COMMAND;
                    client.conn.close(now, code, close::reason(code));
                }
                // A stream's connection reads nothing (`Framing::EventStream`).
                (Endpoint::Sse, Event::Text(_) | Event::Binary(_)) => {}
                (_, Event::Closed(cause)) => self.closed(now, id, &cause),
            }
        }
        self.settle(id);
    }

    /// A connection's `Event::Closed`: how it ended is kept for
    /// [`Node::poll_ended`], and everything it held is released. Out of
    /// line and cold: `after` runs once per delivery, and the close path
    /// must not cost the delivery path anything.
    #[cold]
    #[inline(never)]
    fn closed(&mut self, now: Timestamp, id: ConnId, cause: &crate::connection::CloseCause) {
        if let Some(client) = self.slab.get(id) {
            let ended = Ended {
                code: cause.code(client.conn.config()),
                cause: cause.label(),
                user: None,
                endpoint: client.endpoint,
            };
            self.ended.insert(id, ended);
        }
        self.on_closed(now, id, cause);
    }

    /// Lists a connection for writing, re-arms its timer, and releases it
    /// once finished.
    fn settle(&mut self, id: ConnId) {
        let Some(client) = self.slab.get_mut(id) else {
            return;
        };
        if client.conn.is_finished() {
            self.release(id);
            return;
        }
        if !client.listed && !client.conn.queue().is_empty() {
            client.listed = true;
            self.transmit.push_back(id);
        }
        let want = client.conn.poll_timeout();
        let have = client.timer;
        // Re-register only when the deadline moves earlier (or none is set);
        // a later deadline is found when the early entry fires.
        if let Some(want) = want {
            if have.is_none_or(|h| want < h) {
                client.timer = Some(want);
                if let Some(h) = have {
                    self.timers.remove(&(h, id));
                }
                self.timers.insert((want, id));
            }
        }
    }

    fn release(&mut self, id: ConnId) {
        let Some(client) = self.slab.remove(id) else {
            return;
        };
        if let Some(at) = client.timer {
            self.timers.remove(&(at, id));
        }
        if let Some(at) = self.auth_deadline(&client.auth) {
            self.auth_timers.remove(&(at, id));
        }
        self.heartbeats.remove(&id);
        if client.endpoint == Endpoint::Sse {
            self.sse_closed(id);
        }
        // Every connection is finished through `Event::Closed`; the
        // default only guards against a path that skips it.
        let mut ended = self.ended.remove(&id).unwrap_or(Ended {
            code: CloseCode::ABNORMAL,
            cause: "released without a close",
            user: None,
            endpoint: client.endpoint,
        });
        ended.user = client.auth.user().map(Into::into);
        self.finished.push_back((id, ended));
    }

    fn reply(&mut self, now: Timestamp, id: ConnId, enc: Encoding, rid: u64, reply: &Reply) {
        let answering = self.observed.answering;
        self.observed.counters.count_reply(reply, answering);
        let payload = protocol::encode_reply(enc, rid, reply);
        self.send(now, id, frame::encode(enc.frame_opcode(), &payload));
    }

    fn reply_to(&mut self, now: Timestamp, conn: ConnId, rid: u64, reply: &Reply) {
        let Some(Endpoint::PubSub(enc)) = self.client_mut(conn).map(|c| c.endpoint) else {
            return;
        };
        self.reply(now, conn, enc, rid, reply);
    }

    fn push(&mut self, now: Timestamp, id: ConnId, push: &Push) {
        let enc = match self.client_mut(id).map(|c| c.endpoint) {
            Some(Endpoint::PubSub(enc)) => enc,
            Some(Endpoint::Sse) => {
                self.sse_push(now, id, push);
                return self.after(now, id);
            }
            Some(Endpoint::Echo) | None => return,
        };
        let payload = protocol::encode_push(enc, push);
        self.send(now, id, frame::encode(enc.frame_opcode(), &payload));
    }

    /// Queues a frame on a connection and settles it (a slow consumer is
    /// closed by its connection, and its state released via `Closed`).
    fn send(&mut self, now: Timestamp, id: ConnId, frame: Bytes) {
        let Some(client) = self.client_mut(id) else {
            return;
        };
        let _ = client.conn.send(now, frame);
        self.after(now, id);
    }
}
