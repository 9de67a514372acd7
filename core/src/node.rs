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
//!    `handle_written`, `handle_backbone`, `handle_timeout` (safe early or
//!    twice);
//! 2. drains it, in this order: `poll_backbone()` (send each command to the
//!    backbone), `poll_reading()` (stop or resume reading a connection:
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::backbone::{
    self, BackboneError, Command as BbCommand, Event as BbEvent, HistoryPage, RequestId,
};
use crate::connection::{CloseCause, Connection, ConnectionConfig, Event};
use crate::frame::{self, OpCode};
use crate::message::CloseCode;
use crate::namespace::{NamespaceOptions, Namespaces};
use crate::protocol::{
    self, close, unsubscribe_code, ClientInfo, Command, Encoding, ErrorCode, ErrorReply,
    Publication, Push, Recovery, Reply, StreamPosition,
};
use crate::queue::OutQueue;
use crate::time::Timestamp;

/// Most channels one connection may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 512;
/// Most publications kept for replay to pending subscribers of a channel;
/// past it a pending subscribe fails with "not available, retry".
pub const MAX_REPLAY: usize = 4096;
/// Most publications held back in a channel while a gap is being filled;
/// past it the gap is declared unfillable.
pub const MAX_HELD: usize = 4096;

/// A connection's handle within its node: slab index and generation, so a
/// stale handle never reaches a newer connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The slab index (dense, reused after the connection ends).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The generation of the slot.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

/// What a connection is for, chosen by the path it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/echo`: every message goes back unchanged (conformance runs).
    Echo,
    /// `/ws`: the pub/sub protocol in this encoding.
    PubSub(Encoding),
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    generation: u32,
    /// Boxed: the slab grows by doubling, and an empty or spare slot should
    /// cost a pointer, not a whole client.
    client: Option<Box<Client>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Client {
    conn: Connection,
    endpoint: Endpoint,
    /// The deadline registered in `Node::timers`, if any.
    timer: Option<Timestamp>,
    /// Already listed in `Node::transmit`.
    listed: bool,
    /// Held back: at `max_requests_in_flight` with input left to handle;
    /// the driver was told to stop reading it.
    paused: bool,
    /// Requests of this connection waiting for the backbone.
    in_flight: u16,
    /// Channels subscribed or being subscribed.
    subs: Vec<String>,
    /// The user the connection belongs to (empty: anonymous).
    user: String,
}

/// A publication kept in a channel while it cannot be delivered yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Held {
    epoch: String,
    publication: Publication,
}

/// How far the node has delivered a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Sync {
    /// No position known yet: waiting for the first subscribe's reply.
    Unknown,
    /// Delivered everything up to `offset` of `epoch`.
    Synced { epoch: String, offset: u64 },
    /// Like `Synced`, but a gap was seen: history since `offset` was asked
    /// with `request`, and later publications are held meanwhile.
    Filling {
        epoch: String,
        offset: u64,
        request: RequestId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Channel {
    options: NamespaceOptions,
    /// Live subscribers and the offset after which each one receives.
    live: BTreeMap<ConnId, u64>,
    /// Subscribers waiting for the backbone's reply, by request.
    pending: BTreeMap<ConnId, RequestId>,
    sync: Sync,
    /// Publications received but not deliverable yet (no position, or a
    /// gap being filled), in arrival order.
    held: Vec<Held>,
    /// Publications delivered while subscribes are pending, for replay.
    recent: VecDeque<Publication>,
    /// `recent` overflowed: pending subscribes cannot be replayed to.
    recent_lost: bool,
}

impl Channel {
    fn new(options: NamespaceOptions) -> Self {
        Channel {
            options,
            live: BTreeMap::new(),
            pending: BTreeMap::new(),
            sync: Sync::Unknown,
            held: Vec::new(),
            recent: VecDeque::new(),
            recent_lost: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }
}

/// A request to the backbone waiting for its reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pending {
    Subscribe {
        conn: ConnId,
        id: u64,
        channel: String,
        recover: bool,
    },
    Publish {
        conn: ConnId,
        id: u64,
    },
    History {
        conn: ConnId,
        id: u64,
    },
    Presence {
        conn: ConnId,
        id: u64,
    },
    Fill {
        channel: String,
    },
}

impl Pending {
    /// The connection that waits for this request (none for a gap fill).
    fn conn(&self) -> Option<ConnId> {
        match self {
            Pending::Subscribe { conn, .. }
            | Pending::Publish { conn, .. }
            | Pending::History { conn, .. }
            | Pending::Presence { conn, .. } => Some(*conn),
            Pending::Fill { .. } => None,
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
}

/// One shard's connections, channels and timers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    config: NodeConfig,
    echo_config: Rc<ConnectionConfig>,
    pubsub_config: Rc<ConnectionConfig>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    timers: BTreeSet<(Timestamp, ConnId)>,
    transmit: VecDeque<ConnId>,
    finished: VecDeque<ConnId>,
    channels: BTreeMap<String, Channel>,
    requests: BTreeMap<RequestId, Pending>,
    next_request: u64,
    backbone: VecDeque<BbCommand>,
    /// Scratch list of a fan-out's recipients (see `deliver`).
    targets: Vec<ConnId>,
    /// Paused connections whose requests drained below the bound: their
    /// held input is handled at the end of the current input.
    unpaused: Vec<ConnId>,
    /// Changes of whether the driver should read a connection.
    reading: VecDeque<(ConnId, bool)>,
    #[cfg(feature = "mutations")]
    mutation: Option<Mutation>,
}

impl Node {
    /// An empty node.
    pub fn new(config: NodeConfig) -> Self {
        let echo_config = Rc::new(config.connection.clone());
        // Pub/sub clients get wavecast's own codes, which say whether to
        // reconnect and recover (docs/PROTOCOL.md).
        let pubsub_config = Rc::new(ConnectionConfig {
            heartbeat_close_code: CloseCode(close::HEARTBEAT_TIMEOUT),
            slow_consumer_close_code: CloseCode(close::SLOW_CONSUMER),
            ..config.connection.clone()
        });
        Node {
            echo_config,
            pubsub_config,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BTreeSet::new(),
            transmit: VecDeque::new(),
            finished: VecDeque::new(),
            channels: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: 1,
            backbone: VecDeque::new(),
            targets: Vec::new(),
            unpaused: Vec::new(),
            reading: VecDeque::new(),
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
        self.live
    }

    /// A connection whose handshake completed at `now`; `leftover` are the
    /// bytes that arrived after the request head.
    pub fn handle_connect(
        &mut self,
        now: Timestamp,
        endpoint: Endpoint,
        leftover: &[u8],
    ) -> ConnId {
        let config = match endpoint {
            Endpoint::PubSub(_) => self.pubsub_config.clone(),
            Endpoint::Echo => self.echo_config.clone(),
        };
        let conn = Connection::with_config(now, config);
        let client = Client {
            conn,
            endpoint,
            timer: None,
            listed: false,
            paused: false,
            in_flight: 0,
            subs: Vec::new(),
            user: String::new(),
        };
        let id = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.client = Some(Box::new(client));
                ConnId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
                self.slots.push(Slot {
                    generation: 0,
                    client: Some(Box::new(client)),
                });
                ConnId {
                    index,
                    generation: 0,
                }
            }
        };
        self.live += 1;
        if !leftover.is_empty() {
            self.with_conn(now, id, |c| c.handle_read(now, leftover));
        } else {
            self.after(now, id);
        }
        id
    }

    /// Bytes read from a connection's transport.
    pub fn handle_read(&mut self, now: Timestamp, id: ConnId, data: &[u8]) {
        self.with_conn(now, id, |c| c.handle_read(now, data));
    }

    /// A connection's transport reached end of stream or failed.
    pub fn handle_eof(&mut self, now: Timestamp, id: ConnId) {
        self.with_conn(now, id, |c| c.handle_eof(now));
    }

    /// The driver wrote `n` bytes of a connection's queue.
    pub fn handle_written(&mut self, now: Timestamp, id: ConnId, n: usize) {
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

    /// Closes a connection with `code` (e.g. an operator's disconnect).
    pub fn close(&mut self, now: Timestamp, id: ConnId, code: CloseCode, reason: &str) {
        self.with_conn(now, id, |c| c.close(now, code, reason));
    }

    /// Closes every connection (graceful shutdown): pub/sub clients with
    /// [`close::SHUTDOWN`] (reconnect and recover), echo clients with 1001.
    pub fn shutdown(&mut self, now: Timestamp) {
        let ids: Vec<ConnId> = self.ids().collect();
        for id in ids {
            let code = match self.client_mut(id).map(|c| c.endpoint) {
                Some(Endpoint::PubSub(_)) => CloseCode(close::SHUTDOWN),
                _ => CloseCode::GOING_AWAY,
            };
            self.close(now, id, code, close::reason(code.0));
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
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

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next command for the backbone.
    pub fn poll_backbone(&mut self) -> Option<BbCommand> {
        self.backbone.pop_front()
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
        self.finished.pop_front()
    }

    /// Handles of every live connection, in slab order.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.client.as_ref().map(|_| ConnId {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    /// The client id of a connection, as clients and the API see it.
    pub fn client_id(&self, id: ConnId) -> String {
        format!(
            "{}{}.{}",
            self.config.client_prefix, id.index, id.generation
        )
    }

    /// The connection a client id names, if it is one of this node's.
    pub fn conn_of(&self, client: &str) -> Option<ConnId> {
        let rest = client.strip_prefix(self.config.client_prefix.as_str())?;
        let (index, generation) = rest.split_once('.')?;
        let id = ConnId {
            index: index.parse().ok()?,
            generation: generation.parse().ok()?,
        };
        let slot = self.slots.get(id.index())?;
        (slot.generation == id.generation && slot.client.is_some()).then_some(id)
    }

    /// Bytes queued for writing across all connections.
    pub fn queued_bytes(&self) -> usize {
        self.clients().map(|c| c.conn.queued_bytes()).sum()
    }

    /// Timers registered (one at most per live connection).
    pub fn timers(&self) -> usize {
        self.timers.len()
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
        self.slots
            .get(id.index())
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.client.as_ref())
            .map(|c| c.subs.clone())
            .unwrap_or_default()
    }

    fn clients(&self) -> impl Iterator<Item = &Client> + '_ {
        self.slots.iter().filter_map(|s| s.client.as_deref())
    }

    fn client_mut(&mut self, id: ConnId) -> Option<&mut Client> {
        client_in(&mut self.slots, id)
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
            let Some(client) = client_in(&mut self.slots, id) else {
                return;
            };
            if usize::from(client.in_flight) >= max
                && client.conn.state() == crate::connection::State::Open
                && client.conn.has_events()
            {
                // Hold the rest of its input until replies drain. A
                // connection that is closing is not held: its last
                // commands are handled and its end released at once.
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
                    client.conn.close(now, CloseCode(code), close::reason(code));
                }
                (_, Event::Closed(cause)) => self.on_closed(now, id, &cause),
            }
        }
        self.settle(id);
    }

    /// Lists a connection for writing, re-arms its timer, and releases it
    /// once finished.
    fn settle(&mut self, id: ConnId) {
        let Some(client) = client_in(&mut self.slots, id) else {
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
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        let Some(client) = slot.client.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(at) = client.timer {
            self.timers.remove(&(at, id));
        }
        self.free.push(id.index);
        self.live -= 1;
        self.finished.push_back(id);
    }

    fn request_id(&mut self) -> RequestId {
        let r = RequestId(self.next_request);
        self.next_request += 1;
        r
    }

    /// Records a request waiting for the backbone and queues its command
    /// (built from the new request id); the connection behind it, if any,
    /// counts it against `max_requests_in_flight`.
    fn ask(&mut self, pending: Pending, command: impl FnOnce(RequestId) -> BbCommand) -> RequestId {
        let request = self.request_id();
        if let Some(client) = pending.conn().and_then(|c| client_in(&mut self.slots, c)) {
            client.in_flight = client.in_flight.saturating_add(1);
        }
        self.requests.insert(request, pending);
        self.backbone.push_back(command(request));
        request
    }

    /// Forgets a request (answered, failed or abandoned); a connection held
    /// back at the bound is handled again once below it.
    fn take_request(&mut self, request: RequestId) -> Option<Pending> {
        let pending = self.requests.remove(&request)?;
        if let Some(conn) = pending.conn() {
            self.request_done(conn);
        }
        Some(pending)
    }

    fn request_done(&mut self, conn: ConnId) {
        let max = self.config.max_requests_in_flight;
        if let Some(client) = client_in(&mut self.slots, conn) {
            client.in_flight = client.in_flight.saturating_sub(1);
            if client.paused && usize::from(client.in_flight) < max {
                self.unpaused.push(conn);
            }
        }
    }

    /// Handles the held input of connections that dropped below the bound.
    fn resume_unpaused(&mut self, now: Timestamp) {
        while let Some(id) = self.unpaused.pop() {
            self.after(now, id);
        }
    }

    // ---------------------------------------------------------------
    // Client commands

    fn on_command(&mut self, now: Timestamp, id: ConnId, enc: Encoding, bytes: &[u8]) {
        let request = match protocol::decode_request(enc, bytes) {
            Ok(r) => r,
            Err(e) => {
                match (e.error_reply(), e.close_code()) {
                    (Some((rid, reply)), _) => {
                        let reply = Reply::Error(reply.clone());
                        self.reply(now, id, enc, rid, &reply);
                    }
                    (None, Some(code)) => {
                        self.close(now, id, CloseCode(code), close::reason(code));
                    }
                    (None, None) => {}
                }
                return;
            }
        };
        let rid = request.id;
        let channel = request.command.channel().to_string();
        let options = match self.config.namespaces.resolve(&channel) {
            Ok(o) => *o,
            Err(e) => {
                let reply = error(ErrorCode::UnknownNamespace, e.to_string());
                self.reply(now, id, enc, rid, &reply);
                return;
            }
        };
        match request.command {
            Command::Subscribe { channel, recover } => {
                self.subscribe(now, id, enc, rid, channel, recover, options)
            }
            Command::Unsubscribe { channel } => {
                let was = self
                    .client_mut(id)
                    .is_some_and(|c| c.subs.contains(&channel));
                let reply = if was {
                    self.unsubscribe(now, id, &channel);
                    Reply::Unsubscribe
                } else {
                    error(ErrorCode::NotSubscribed, "not subscribed to this channel")
                };
                self.reply(now, id, enc, rid, &reply);
            }
            Command::Publish { channel, data } => {
                if !options.allow_publish {
                    let reply = error(
                        ErrorCode::PermissionDenied,
                        "clients may not publish in this namespace",
                    );
                    self.reply(now, id, enc, rid, &reply);
                    return;
                }
                #[cfg(feature = "mutations")]
                if self.mutation == Some(Mutation::DeliverLocalDirectly) {
                    if let Some(Sync::Synced { offset, .. }) =
                        self.channels.get(&channel).map(|c| &c.sync)
                    {
                        let publication = Publication {
                            offset: offset + 1,
                            data: data.clone(),
                        };
                        self.deliver(now, &channel, publication);
                    }
                }
                self.ask(Pending::Publish { conn: id, id: rid }, |request| {
                    BbCommand::Publish {
                        request,
                        channel,
                        data,
                        history: options.history(),
                    }
                });
            }
            Command::Presence { channel } => {
                if !options.presence {
                    let reply = error(ErrorCode::NotAvailable, "presence is off in this namespace");
                    self.reply(now, id, enc, rid, &reply);
                    return;
                }
                self.ask(Pending::Presence { conn: id, id: rid }, |request| {
                    BbCommand::Presence { request, channel }
                });
            }
            Command::History {
                channel,
                since,
                limit,
            } => {
                let cap = options.history_size;
                let limit = Some(limit.map_or(cap, |l| (l as usize).min(cap)));
                self.ask(Pending::History { conn: id, id: rid }, |request| {
                    BbCommand::History {
                        request,
                        channel,
                        since,
                        limit,
                    }
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        channel: String,
        recover: Option<StreamPosition>,
        options: NamespaceOptions,
    ) {
        let Some(client) = self.client_mut(id) else {
            return;
        };
        if client.subs.contains(&channel) {
            let reply = error(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this channel",
            );
            self.reply(now, id, enc, rid, &reply);
            return;
        }
        if client.subs.len() >= MAX_SUBSCRIPTIONS {
            let reply = error(
                ErrorCode::LimitExceeded,
                "too many subscriptions on this connection",
            );
            self.reply(now, id, enc, rid, &reply);
            return;
        }
        if client.subs.is_empty() {
            // Most connections subscribe to one channel: a Vec's first push
            // would reserve four.
            client.subs.reserve_exact(1);
        }
        client.subs.push(channel.clone());
        if !self.channels.contains_key(&channel) {
            self.backbone.push_back(BbCommand::Subscribe {
                channel: channel.clone(),
            });
            self.channels.insert(channel.clone(), Channel::new(options));
        }
        let recovering = recover.is_some();
        let pending = Pending::Subscribe {
            conn: id,
            id: rid,
            channel: channel.clone(),
            recover: recovering,
        };
        // Without recover only the position is needed (limit 0).
        let limit = if recovering { None } else { Some(0) };
        let name = channel.clone();
        let request = self.ask(pending, |request| BbCommand::History {
            request,
            channel: name,
            since: recover,
            limit,
        });
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.pending.insert(id, request);
        }
    }

    /// Removes a connection's subscription (or pending subscribe) to
    /// `channel`; drops the channel, and its backbone subscription, with
    /// the last local subscriber.
    fn unsubscribe(&mut self, _now: Timestamp, id: ConnId, channel: &str) {
        let user = match self.client_mut(id) {
            Some(client) => {
                client.subs.retain(|c| c != channel);
                client.user.clone()
            }
            None => String::new(),
        };
        let client = self.client_id(id);
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let was_live = ch.live.remove(&id).is_some();
        let pending = ch.pending.remove(&id);
        let (presence, join_leave) = (ch.options.presence, ch.options.join_leave);
        if let Some(request) = pending {
            self.take_request(request);
        }
        if was_live && presence {
            self.backbone.push_back(BbCommand::PresenceRemove {
                channel: channel.to_string(),
                info: ClientInfo { client, user },
                announce: join_leave,
            });
        }
        self.drop_if_empty(channel);
    }

    fn drop_if_empty(&mut self, channel: &str) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if !ch.is_empty() {
            return;
        }
        if let Sync::Filling { request, .. } = ch.sync {
            self.requests.remove(&request);
        }
        self.channels.remove(channel);
        #[cfg(feature = "mutations")]
        if self.mutation == Some(Mutation::KeepBackboneSubscription) {
            return;
        }
        self.backbone.push_back(BbCommand::Unsubscribe {
            channel: channel.to_string(),
        });
    }

    fn on_closed(&mut self, now: Timestamp, id: ConnId, _cause: &CloseCause) {
        let subs = match self.client_mut(id) {
            Some(c) => std::mem::take(&mut c.subs),
            None => return,
        };
        #[cfg(feature = "mutations")]
        let subs = match self.mutation {
            Some(Mutation::SkipUnsubscribeOnClose) => Vec::new(),
            _ => subs,
        };
        for channel in subs {
            self.unsubscribe(now, id, &channel);
        }
        // Requests this connection made that are still in flight are
        // dropped here, so nothing of it outlives it.
        if let Some(client) = self.client_mut(id) {
            client.in_flight = 0;
        }
        self.requests.retain(|_, p| match p {
            Pending::Subscribe { conn, .. }
            | Pending::Publish { conn, .. }
            | Pending::History { conn, .. }
            | Pending::Presence { conn, .. } => *conn != id,
            Pending::Fill { .. } => true,
        });
    }

    fn reply(&mut self, now: Timestamp, id: ConnId, enc: Encoding, rid: u64, reply: &Reply) {
        let payload = protocol::encode_reply(enc, rid, reply);
        self.send(now, id, frame::encode(enc.frame_opcode(), &payload));
    }

    fn push(&mut self, now: Timestamp, id: ConnId, push: &Push) {
        let Some(Endpoint::PubSub(enc)) = self.client_mut(id).map(|c| c.endpoint) else {
            return;
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

    // ---------------------------------------------------------------
    // Backbone events

    /// An event from the backbone.
    pub fn handle_backbone(&mut self, now: Timestamp, event: BbEvent) {
        match event {
            BbEvent::Publication {
                channel,
                epoch,
                publication,
            } => self.on_publication(now, &channel, epoch, publication),
            BbEvent::Join { channel, info } => self.on_presence_push(
                now,
                &channel,
                Push::Join {
                    channel: channel.clone(),
                    info,
                },
            ),
            BbEvent::Leave { channel, info } => self.on_presence_push(
                now,
                &channel,
                Push::Leave {
                    channel: channel.clone(),
                    info,
                },
            ),
            BbEvent::Reply { request, reply } => self.on_reply(now, request, reply),
            BbEvent::Reset => self.on_reset(now),
        }
        self.resume_unpaused(now);
    }

    fn on_presence_push(&mut self, now: Timestamp, channel: &str, push: Push) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if !ch.options.join_leave {
            return;
        }
        let ids: Vec<ConnId> = ch.live.keys().copied().collect();
        for id in ids {
            self.push(now, id, &push);
        }
    }

    fn on_publication(
        &mut self,
        now: Timestamp,
        channel: &str,
        epoch: String,
        publication: Publication,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return; // no longer subscribed here
        };
        match &ch.sync {
            Sync::Unknown | Sync::Filling { .. } => {
                if ch.held.len() >= MAX_HELD {
                    ch.held.clear();
                    self.gap_unfillable(now, channel, None);
                    return;
                }
                ch.held.push(Held { epoch, publication });
            }
            Sync::Synced { epoch: e, offset } => {
                let (e, offset) = (e.clone(), *offset);
                if epoch != e {
                    // The stream was reset behind our back (history lost).
                    self.gap_unfillable(now, channel, Some(Held { epoch, publication }));
                } else if publication.offset <= offset {
                    // A duplicate: already delivered.
                } else if publication.offset == offset + 1 {
                    self.deliver(now, channel, publication);
                } else {
                    #[cfg(feature = "mutations")]
                    if self.mutation == Some(Mutation::IgnoreGap) {
                        return self.deliver(now, channel, publication);
                    }
                    let since = Some(StreamPosition {
                        epoch: e.clone(),
                        offset,
                    });
                    let request = self.fill(channel, since);
                    let ch = self.channels.get_mut(channel).expect("checked above");
                    ch.held.push(Held { epoch, publication });
                    ch.sync = Sync::Filling {
                        epoch: e,
                        offset,
                        request,
                    };
                }
            }
        }
    }

    /// Asks the backbone for a channel's history after `since`, to fill a
    /// gap.
    fn fill(&mut self, channel: &str, since: Option<StreamPosition>) -> RequestId {
        let name = channel.to_string();
        let pending = Pending::Fill {
            channel: name.clone(),
        };
        self.ask(pending, |request| BbCommand::History {
            request,
            channel: name,
            since,
            limit: None,
        })
    }

    /// Delivers the next publication of a synced channel to every live
    /// subscriber, encoding it once per encoding.
    fn deliver(&mut self, now: Timestamp, channel: &str, publication: Publication) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Sync::Synced { offset, .. } = &mut ch.sync {
            *offset = publication.offset;
        }
        let mut frames: [Option<Bytes>; 2] = [None, None];
        // The subscribers are listed first (sending may close a slow one,
        // which changes `live`); the list's storage is kept between
        // publications so fan-out allocates nothing per publication.
        let mut targets = std::mem::take(&mut self.targets);
        targets.extend(
            ch.live
                .iter()
                .filter(|&(_, &after)| publication.offset > after)
                .map(|(&id, _)| id),
        );
        if !ch.pending.is_empty() {
            if ch.recent.len() >= MAX_REPLAY {
                ch.recent.pop_front();
                ch.recent_lost = true;
            }
            ch.recent.push_back(publication.clone());
        }
        for id in targets.drain(..) {
            let Some(client) = client_in(&mut self.slots, id) else {
                continue;
            };
            let Endpoint::PubSub(enc) = client.endpoint else {
                continue;
            };
            let frame = frames[enc.index()]
                .get_or_insert_with(|| {
                    let payload = protocol::encode_pub(enc, channel, &publication);
                    frame::encode(enc.frame_opcode(), &payload)
                })
                .clone();
            let _ = client.conn.send(now, frame);
            self.after(now, id);
        }
        self.targets = targets;
    }

    /// Delivers held publications of a synced channel in offset order, as
    /// far as they are contiguous.
    fn drain_held(&mut self, now: Timestamp, channel: &str) {
        loop {
            let Some(ch) = self.channels.get_mut(channel) else {
                return;
            };
            let Sync::Synced { epoch, offset } = &ch.sync else {
                return;
            };
            let (epoch, offset) = (epoch.clone(), *offset);
            if ch.held.is_empty() {
                return;
            }
            let mut held = std::mem::take(&mut ch.held);
            held.sort_by_key(|h| h.publication.offset);
            held.retain(|h| !(h.epoch == epoch && h.publication.offset <= offset));
            match held.first() {
                None => return,
                Some(h) if h.epoch != epoch => {
                    let first = held.remove(0);
                    let ch = self.channels.get_mut(channel).expect("present");
                    ch.held = held;
                    self.gap_unfillable(now, channel, Some(first));
                    return;
                }
                Some(h) if h.publication.offset == offset + 1 => {
                    let first = held.remove(0);
                    self.channels.get_mut(channel).expect("present").held = held;
                    self.deliver(now, channel, first.publication);
                }
                Some(_) => {
                    // Still a gap: ask history for it.
                    let first = held.remove(0);
                    self.channels.get_mut(channel).expect("present").held = held;
                    self.on_publication(now, channel, first.epoch, first.publication);
                    return;
                }
            }
        }
    }

    /// A gap that history cannot fill: every live subscriber is told with
    /// an `unsubscribe` push (resubscribe with recover) and removed; the
    /// channel's position is forgotten. Pending subscribes are unaffected:
    /// their replies give them a position.
    fn gap_unfillable(&mut self, now: Timestamp, channel: &str, next: Option<Held>) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Sync::Filling { request, .. } = ch.sync {
            self.requests.remove(&request);
        }
        let ch = self.channels.get_mut(channel).expect("present");
        ch.sync = Sync::Unknown;
        // Held publications are kept for the pending subscribes: they may
        // be past the position those replies will give (e.g. of the new
        // epoch after a reset), and dropping them would be a silent gap.
        ch.recent.clear();
        let ids: Vec<ConnId> = ch.live.keys().copied().collect();
        let push = Push::Unsubscribe {
            channel: channel.to_string(),
            code: unsubscribe_code::INSUFFICIENT_STATE,
            reason: "missed publications; resubscribe with recover".into(),
        };
        for id in ids {
            self.push(now, id, &push);
            self.unsubscribe(now, id, channel);
        }
        if let Some(ch) = self.channels.get_mut(channel) {
            if let Some(next) = next {
                ch.held.push(next);
            }
            if ch.pending.is_empty() {
                // Nobody waits for a position: forget held publications.
                ch.held.clear();
            }
        }
    }

    fn on_reply(&mut self, now: Timestamp, request: RequestId, reply: backbone::Reply) {
        let Some(pending) = self.take_request(request) else {
            return; // its connection or channel is gone
        };
        match (pending, reply) {
            (Pending::Publish { conn, id }, backbone::Reply::Published(r)) => {
                let reply = match r {
                    Ok(pos) => Reply::Publish { offset: pos.offset },
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (Pending::Presence { conn, id }, backbone::Reply::Presence(r)) => {
                let reply = match r {
                    Ok(clients) => Reply::Presence { clients },
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (Pending::History { conn, id }, backbone::Reply::History(r)) => {
                let reply = match r {
                    Ok(page) => Reply::History {
                        epoch: page.epoch,
                        offset: page.top,
                        publications: page.publications,
                    },
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (
                Pending::Subscribe {
                    conn,
                    id,
                    channel,
                    recover,
                },
                backbone::Reply::History(r),
            ) => self.on_subscribed(now, request, conn, id, &channel, recover, r),
            (Pending::Fill { channel }, backbone::Reply::History(r)) => {
                self.on_filled(now, request, &channel, r)
            }
            (pending, reply) => {
                // A reply of the wrong kind: the backbone's bug. Fail the
                // request rather than guess.
                let e = BackboneError::Internal(format!("unexpected reply {reply:?}"));
                self.fail_request(now, pending, &e);
            }
        }
    }

    /// A request the backbone could not serve: the client behind it gets
    /// an error reply (and a pending subscribe is undone); a gap fill that
    /// failed is a gap that cannot be filled.
    fn fail_request(&mut self, now: Timestamp, pending: Pending, e: &BackboneError) {
        match pending {
            Pending::Subscribe {
                conn, id, channel, ..
            } => {
                self.unsubscribe(now, conn, &channel);
                self.reply_to(now, conn, id, &backbone_error(e));
            }
            Pending::Publish { conn, id }
            | Pending::History { conn, id }
            | Pending::Presence { conn, id } => self.reply_to(now, conn, id, &backbone_error(e)),
            Pending::Fill { channel } => self.gap_unfillable(now, &channel, None),
        }
    }

    fn reply_to(&mut self, now: Timestamp, conn: ConnId, rid: u64, reply: &Reply) {
        let Some(Endpoint::PubSub(enc)) = self.client_mut(conn).map(|c| c.endpoint) else {
            return;
        };
        self.reply(now, conn, enc, rid, reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_subscribed(
        &mut self,
        now: Timestamp,
        request: RequestId,
        conn: ConnId,
        rid: u64,
        channel: &str,
        recover: bool,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if ch.pending.get(&conn) != Some(&request) {
            return;
        }
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                self.unsubscribe(now, conn, channel);
                self.reply_to(now, conn, rid, &backbone_error(&e));
                return;
            }
        };
        // The channel learns its position from its first reply.
        if ch.sync == Sync::Unknown {
            ch.sync = Sync::Synced {
                epoch: page.epoch.clone(),
                offset: page.top,
            };
        }
        let (epoch, delivered) = match &ch.sync {
            Sync::Synced { epoch, offset } | Sync::Filling { epoch, offset, .. } => {
                (epoch.clone(), *offset)
            }
            Sync::Unknown => unreachable!("set above"),
        };
        if page.epoch != epoch {
            // The stream changed epoch between the channel's position and
            // this reply: the channel's subscribers have a gap; this one
            // starts fresh in the new epoch.
            self.gap_unfillable(now, channel, None);
            if let Some(ch) = self.channels.get_mut(channel) {
                ch.sync = Sync::Synced {
                    epoch: page.epoch.clone(),
                    offset: page.top,
                };
            }
            self.on_subscribed_synced(now, conn, rid, channel, recover, page, Vec::new());
            return self.drain_held(now, channel);
        }
        // Publications in (top, delivered] went out while this reply was in
        // flight: replay them from `recent` after the reply.
        let replay = if delivered > page.top {
            let ch = self.channels.get(channel).expect("present");
            let first_kept = ch.recent.front().map(|p| p.offset);
            let covered = !ch.recent_lost && first_kept.is_some_and(|f| f <= page.top + 1);
            if !covered {
                self.unsubscribe(now, conn, channel);
                let reply = error(
                    ErrorCode::NotAvailable,
                    "channel too busy to subscribe now; retry",
                );
                self.reply_to(now, conn, rid, &reply);
                return;
            }
            ch.recent
                .iter()
                .filter(|p| p.offset > page.top && p.offset <= delivered)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.on_subscribed_synced(now, conn, rid, channel, recover, page, replay);
        self.drain_held(now, channel);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_subscribed_synced(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        rid: u64,
        channel: &str,
        recover: bool,
        page: HistoryPage,
        replay: Vec<Publication>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        ch.pending.remove(&conn);
        // Deliver to it everything after the later of its start and what
        // was replayed.
        let start = replay.last().map_or(page.top, |p| p.offset);
        ch.live.insert(conn, start);
        if ch.pending.is_empty() {
            ch.recent.clear();
            ch.recent_lost = false;
        }
        let options = ch.options;
        let recovery = recover.then(|| Recovery {
            recovered: page.complete,
            publications: if page.complete {
                page.publications
            } else {
                Vec::new()
            },
        });
        let reply = Reply::Subscribe {
            epoch: page.epoch,
            offset: page.top,
            recovery,
        };
        self.reply_to(now, conn, rid, &reply);
        for publication in replay {
            let push = Push::Pub {
                channel: channel.to_string(),
                publication,
            };
            self.push(now, conn, &push);
        }
        if options.presence {
            let client = self.client_id(conn);
            let user = self
                .client_mut(conn)
                .map(|c| c.user.clone())
                .unwrap_or_default();
            self.backbone.push_back(BbCommand::PresenceAdd {
                channel: channel.to_string(),
                info: ClientInfo { client, user },
                announce: options.join_leave,
            });
        }
    }

    fn on_filled(
        &mut self,
        now: Timestamp,
        request: RequestId,
        channel: &str,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let Sync::Filling {
            epoch,
            offset,
            request: r,
        } = &ch.sync
        else {
            return;
        };
        if *r != request {
            return;
        }
        let (epoch, offset) = (epoch.clone(), *offset);
        match result {
            Ok(page) if page.complete && page.epoch == epoch => {
                ch.sync = Sync::Synced { epoch, offset };
                for publication in page.publications {
                    let Some(ch) = self.channels.get(channel) else {
                        return;
                    };
                    let Sync::Synced { offset, .. } = ch.sync else {
                        return;
                    };
                    if publication.offset == offset + 1 {
                        self.deliver(now, channel, publication);
                    }
                }
                self.drain_held(now, channel);
            }
            _ => self.gap_unfillable(now, channel, None),
        }
    }

    /// The backbone link was lost and is back: every request in flight is
    /// failed, every channel resubscribed and checked for a gap.
    fn on_reset(&mut self, now: Timestamp) {
        let requests = std::mem::take(&mut self.requests);
        let e = BackboneError::Unavailable;
        for (_, pending) in requests {
            if let Some(conn) = pending.conn() {
                self.request_done(conn);
            }
            // Gap fills are asked again below, channel by channel.
            if !matches!(pending, Pending::Fill { .. }) {
                self.fail_request(now, pending, &e);
            }
        }
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for channel in names {
            let Some(ch) = self.channels.get_mut(&channel) else {
                continue;
            };
            self.backbone.push_back(BbCommand::Subscribe {
                channel: channel.clone(),
            });
            let (epoch, offset) = match &ch.sync {
                Sync::Synced { epoch, offset } | Sync::Filling { epoch, offset, .. } => {
                    (epoch.clone(), *offset)
                }
                Sync::Unknown => continue,
            };
            // Publications may have been missed while the link was down:
            // fill from history before delivering anything newer.
            let since = Some(StreamPosition {
                epoch: epoch.clone(),
                offset,
            });
            let request = self.fill(&channel, since);
            let ch = self.channels.get_mut(&channel).expect("present");
            ch.sync = Sync::Filling {
                epoch,
                offset,
                request,
            };
            let live: Vec<ConnId> = ch.live.keys().copied().collect();
            let options = ch.options;
            if options.presence {
                for id in live {
                    let client = self.client_id(id);
                    let user = self
                        .client_mut(id)
                        .map(|c| c.user.clone())
                        .unwrap_or_default();
                    self.backbone.push_back(BbCommand::PresenceAdd {
                        channel: channel.clone(),
                        info: ClientInfo { client, user },
                        announce: false,
                    });
                }
            }
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(ErrorReply::new(code, message))
}

fn backbone_error(e: &BackboneError) -> Reply {
    let code = match e {
        BackboneError::Unavailable => ErrorCode::NotAvailable,
        BackboneError::Internal(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

/// The live client in `id`'s slot, if the generation still matches. A free
/// function so callers can borrow other fields of the node meanwhile.
fn client_in(slots: &mut [Slot], id: ConnId) -> Option<&mut Client> {
    let slot = slots.get_mut(id.index())?;
    if slot.generation != id.generation {
        return None;
    }
    slot.client.as_deref_mut()
}
