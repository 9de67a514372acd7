//! Model-based property tests of one server's pub/sub: two [`Node`]s
//! (NodeIds 0 and 1) around one in-memory [`Hub`], driven entirely in
//! memory by random sequences of client and backbone operations, with the
//! delivery contract of docs/PROTOCOL.md checked after every step.
//!
//! The harness plays every part the runtime and the network would:
//!
//! - clients are in-memory WebSocket clients: they send masked JSON frames
//!   into `Node::handle_read` and read the node's queues back, decoding the
//!   frames and the messages they carry (with the core's client side,
//!   `protocol::decode_server_message`); they answer pings and close frames;
//! - commands from a node go to the hub at once and in order;
//! - events from the hub are held in lanes, one per (node, channel) for
//!   publications and one per reply, and delivered when an operation says
//!   so: events of one channel to one node stay in order (what the real
//!   backbone promises), everything else may be delayed and reordered.
//!   A reset drops the events in flight to a node, makes the hub forget the
//!   node (its subscriptions and presence, as a lost link does), and tells
//!   the node with `Event::Reset`. A lost publication (only one that a later
//!   publication of the same lane will reveal as a gap) exercises gap
//!   filling.
//!
//! The reference model is the sequence of publications of each channel, per
//! epoch, as the hub sequenced them (taken from the hub's answers). The
//! invariants, after every step:
//!
//! 1. order, no duplicates, no loss in the middle: every publication a
//!    client receives on a subscription has exactly the next offset after
//!    the last one it had (the subscribe reply's offset, then each push),
//!    in the subscription's epoch, with the data the hub sequenced;
//! 2. no silent loss: once no event is in flight, a live subscription has
//!    received everything up to the channel's top offset in its epoch; a
//!    subscription ended by an `unsubscribe` push has been told of its gap;
//! 3. recovery exactness: `recovered: true` comes with exactly the
//!    publications after the asked position up to the reply's offset;
//! 4. leak freedom: a closed client leaves nothing in the node; once
//!    quiescent, the node's channels, subscriber counts, requests, timers
//!    and queued bytes, and the hub's node subscriptions and presence, are
//!    exactly what the live clients' subscriptions account for.
//!
//! With `--features mutations`, planted bugs in the node must make the
//! property fail (the `mutation_*` tests); each prints its minimized case.
//!
//! Long because the model is one piece: the operations, the reference
//! world that executes them against a real node and hub, and the
//! invariants it checks after each step must be read together.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, Config, TestError, TestRunner};
use wavecast_core::backbone::{
    BackboneCommand, BackboneEvent, BackboneReply, HistoryPolicy, NodeId,
};
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::frame::{self, FrameDecoder, OpCode};
use wavecast_core::hub::Hub;
use wavecast_core::namespace::{NamespaceOptions, Namespaces};
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{
    self, decode_server_message, unsubscribe_code, Command, Encoding, Payload, Publication, Push,
    Recovery, Reply, Request, ServerMessage, StreamPosition,
};
use wavecast_core::Timestamp;

/// Channels the clients use: one in the default namespace (small, short
/// history), one in namespace `nohist` (no history at all, so that the hub
/// drops the channel, and its epoch, whenever nobody holds it). Presence is
/// on in both.
const CHANNELS: [&str; 2] = ["a", "nohist:b"];
const NODES: usize = 2;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Small history, short-lived, so that operations reach both recovery
/// outcomes and both gap-filling outcomes.
const HISTORY_SIZE: usize = 4;
const HISTORY_TTL: Duration = Duration::from_secs(30);
/// Bound on deliveries in one `DeliverAll`: a system that never quiesces
/// is a failure, not a hang.
const MAX_DELIVERIES: usize = 100_000;

// ---------------------------------------------------------------------------
// Operations

/// One step of a test case. Client and lane indices are taken modulo the
/// candidates that exist at that step, so every generated step is valid.
#[derive(Debug, Clone)]
enum Op {
    /// A new client connects to a node.
    Connect { node: usize },
    /// A client subscribes; with `recover`, from one of the positions the
    /// model knows for the channel (its own last position first).
    Subscribe {
        client: usize,
        channel: usize,
        recover: Option<usize>,
    },
    /// A client unsubscribes (from a live or a pending subscription).
    Unsubscribe { client: usize, channel: usize },
    /// A client publishes.
    Publish { client: usize, channel: usize },
    /// The HTTP API publishes (straight into the hub).
    ApiPublish { channel: usize },
    /// A client sends a close frame.
    Close { client: usize },
    /// A client's transport ends without a close handshake.
    Eof { client: usize },
    /// Deliver up to `n` events from one lane of one node.
    Deliver { node: usize, lane: usize, n: usize },
    /// Deliver everything, oldest first, until nothing is in flight.
    DeliverAll,
    /// The backbone loses one publication to a node (one that a later
    /// publication in the same lane will reveal as a gap).
    Lose { node: usize, lane: usize },
    /// A node's backbone link is lost and back.
    Reset { node: usize },
    /// Time passes (history expires; heartbeats are far longer).
    Advance { secs: u64 },
}

/// How often each operation comes, and over how many nodes and clients.
#[derive(Debug, Clone, Copy)]
struct Profile {
    nodes: usize,
    clients: usize,
    connect: u32,
    subscribe: u32,
    unsubscribe: u32,
    publish: u32,
    api_publish: u32,
    close: u32,
    eof: u32,
    deliver: u32,
    deliver_all: u32,
    lose: u32,
    reset: u32,
    advance: u32,
}

/// Two nodes, everything in proportion.
const BALANCED: Profile = Profile {
    nodes: 2,
    clients: 6,
    connect: 3,
    subscribe: 5,
    unsubscribe: 2,
    publish: 4,
    api_publish: 3,
    close: 1,
    eof: 1,
    deliver: 6,
    deliver_all: 3,
    lose: 1,
    reset: 2,
    advance: 2,
};

/// One node, few clients, many resets and reorderings, rare full
/// deliveries: long windows in which subscribes, publications, resets and
/// gap fills interleave.
const RESETS: Profile = Profile {
    nodes: 1,
    clients: 3,
    connect: 2,
    subscribe: 5,
    unsubscribe: 1,
    publish: 2,
    api_publish: 3,
    close: 1,
    eof: 1,
    deliver: 6,
    deliver_all: 1,
    lose: 1,
    reset: 3,
    advance: 1,
};

fn op(p: Profile) -> impl Strategy<Value = Op> {
    let client = 0..p.clients;
    let channel = 0..CHANNELS.len();
    let node = 0..p.nodes;
    prop_oneof![
        p.connect => node.clone().prop_map(|node| Op::Connect { node }),
        p.subscribe => (client.clone(), channel.clone(), prop::option::weighted(0.4, 0..8usize))
            .prop_map(|(client, channel, recover)| Op::Subscribe { client, channel, recover }),
        p.unsubscribe => (client.clone(), channel.clone())
            .prop_map(|(client, channel)| Op::Unsubscribe { client, channel }),
        p.publish => (client.clone(), channel.clone())
            .prop_map(|(client, channel)| Op::Publish { client, channel }),
        p.api_publish => channel.prop_map(|channel| Op::ApiPublish { channel }),
        p.close => client.clone().prop_map(|client| Op::Close { client }),
        p.eof => client.prop_map(|client| Op::Eof { client }),
        p.deliver => (node.clone(), 0..8usize, 1..4usize)
            .prop_map(|(node, lane, n)| Op::Deliver { node, lane, n }),
        p.deliver_all => Just(Op::DeliverAll),
        p.lose => (node.clone(), 0..8usize).prop_map(|(node, lane)| Op::Lose { node, lane }),
        p.reset => node.prop_map(|node| Op::Reset { node }),
        p.advance => (1..40u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn ops(p: Profile) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(p), 1..60)
}

// ---------------------------------------------------------------------------
// The in-memory clients

/// A command a client sent and awaits the reply to.
#[derive(Debug, Clone)]
enum Req {
    Subscribe {
        channel: String,
        recover: Option<StreamPosition>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish,
}

/// A client's view of one of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    /// Subscribe sent (request id), no reply yet.
    Pending(u64),
    /// Subscribed in `epoch`; `last` is the last offset it has.
    Live { epoch: String, last: u64 },
}

#[derive(Debug)]
struct Client {
    node: usize,
    conn: ConnId,
    /// The client id the server gives it (presence entries).
    name: String,
    /// Connected as far as the client knows (no close sent or seen, no EOF).
    open: bool,
    /// The node has reported the connection finished.
    gone: bool,
    sent_close: bool,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
    requests: BTreeMap<u64, Req>,
    subs: BTreeMap<String, Sub>,
    /// Last position seen per channel (for recover), kept across
    /// subscriptions.
    last: BTreeMap<String, StreamPosition>,
}

// ---------------------------------------------------------------------------
// The world

/// Where a held event waits: per channel (kept in order), or its own lane
/// per reply (replies may come in any order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Channel(String),
    Reply(u64),
}

type Lanes = BTreeMap<Lane, VecDeque<(u64, BackboneEvent)>>;

struct World {
    now: Timestamp,
    hub: Hub,
    nodes: Vec<Node>,
    /// Events in flight to each node, with a global sequence number.
    lanes: Vec<Lanes>,
    seq: u64,
    clients: Vec<Client>,
    /// Per channel, every sequenced publication: (epoch, offset) -> data.
    model: BTreeMap<String, BTreeMap<(String, u64), Payload>>,
    /// Publish commands routed to the hub whose reply is not seen yet:
    /// (node, request) -> (channel, data).
    publishing: BTreeMap<(usize, u64), (String, Payload)>,
    data_counter: u64,
}

/// The history policy of a channel, as the nodes resolve it.
fn policy(channel: &str) -> HistoryPolicy {
    namespaces()
        .resolve(channel)
        .expect("configured namespace")
        .history()
}

fn namespaces() -> Namespaces {
    let default = NamespaceOptions {
        history_size: HISTORY_SIZE,
        history_ttl: HISTORY_TTL,
        ..NamespaceOptions::default()
    };
    let nohist = NamespaceOptions {
        history_size: 0,
        ..default
    };
    Namespaces {
        default,
        named: BTreeMap::from([("nohist".to_owned(), nohist)]),
    }
}

fn node_config(i: usize) -> NodeConfig {
    let day = Duration::from_secs(86_400);
    NodeConfig {
        connection: ConnectionConfig {
            // Heartbeats never fire within a test case (at most 60 * 40 s).
            heartbeat_interval: day,
            heartbeat_timeout: day,
            ..ConnectionConfig::default()
        },
        namespaces: namespaces(),
        client_prefix: format!("n{i}-"),
        ..NodeConfig::default()
    }
}

impl World {
    fn new(setup: &dyn Fn(&mut Node)) -> World {
        let nodes = (0..NODES)
            .map(|i| {
                let mut n = Node::new(node_config(i));
                setup(&mut n);
                n
            })
            .collect();
        World {
            now: Timestamp::from_millis(1_000),
            hub: Hub::new(7),
            nodes,
            lanes: vec![Lanes::new(); NODES],
            seq: 0,
            clients: Vec::new(),
            model: BTreeMap::new(),
            publishing: BTreeMap::new(),
            data_counter: 0,
        }
    }

    fn next_data(&mut self) -> Payload {
        self.data_counter += 1;
        Payload::from_json(format!("{{\"n\":{}}}", self.data_counter).as_bytes())
            .expect("valid JSON")
    }

    fn open_clients(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&c| self.clients[c].open)
            .collect()
    }

    fn pick_open(&self, i: usize) -> Option<usize> {
        let open = self.open_clients();
        (!open.is_empty()).then(|| open[i % open.len()])
    }

    fn record(&mut self, channel: &str, pos: &StreamPosition, data: Payload) -> Result<(), String> {
        let seq = self.model.entry(channel.to_owned()).or_default();
        let key = (pos.epoch.clone(), pos.offset);
        if seq.insert(key, data).is_some() {
            return Err(format!(
                "hub gave position {pos:?} of {channel:?} to two publications"
            ));
        }
        Ok(())
    }

    // --- steps -------------------------------------------------------------

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Connect { node } => {
                let conn = self.nodes[node].handle_connect(
                    self.now,
                    Endpoint::PubSub(Encoding::Json),
                    &[],
                );
                let name = self.nodes[node].client_id(conn);
                self.clients.push(Client {
                    node,
                    conn,
                    name,
                    open: true,
                    gone: false,
                    sent_close: false,
                    buf: BytesMut::new(),
                    decoder: FrameDecoder::client(1 << 20),
                    next_id: 1,
                    requests: BTreeMap::new(),
                    subs: BTreeMap::new(),
                    last: BTreeMap::new(),
                });
            }
            Op::Subscribe {
                client,
                channel,
                recover,
            } => {
                let Some(c) = self.pick_open(client) else {
                    return Ok(());
                };
                let channel = CHANNELS[channel].to_owned();
                if self.clients[c].subs.contains_key(&channel) {
                    return Ok(());
                }
                let recover = recover.and_then(|k| {
                    let mut candidates: Vec<StreamPosition> = self.clients[c]
                        .last
                        .get(&channel)
                        .cloned()
                        .into_iter()
                        .collect();
                    if let Some(seq) = self.model.get(&channel) {
                        candidates.extend(seq.keys().map(|(epoch, offset)| StreamPosition {
                            epoch: epoch.clone(),
                            offset: *offset,
                        }));
                    }
                    (!candidates.is_empty()).then(|| candidates[k % candidates.len()].clone())
                });
                let id = self.send_command(
                    c,
                    Command::Subscribe {
                        channel: channel.clone(),
                        recover: recover.clone(),
                        token: None,
                    },
                    Req::Subscribe {
                        channel: channel.clone(),
                        recover,
                    },
                );
                self.clients[c].subs.insert(channel, Sub::Pending(id));
            }
            Op::Unsubscribe { client, channel } => {
                let Some(c) = self.pick_open(client) else {
                    return Ok(());
                };
                let channel = CHANNELS[channel].to_owned();
                if !self.clients[c].subs.contains_key(&channel) {
                    return Ok(());
                }
                self.send_command(
                    c,
                    Command::Unsubscribe {
                        channel: channel.clone(),
                    },
                    Req::Unsubscribe { channel },
                );
            }
            Op::Publish { client, channel } => {
                let Some(c) = self.pick_open(client) else {
                    return Ok(());
                };
                let data = self.next_data();
                let channel = CHANNELS[channel].to_owned();
                self.send_command(c, Command::Publish { channel, data }, Req::Publish);
            }
            Op::ApiPublish { channel } => {
                let data = self.next_data();
                let channel = CHANNELS[channel];
                let pos = self
                    .hub
                    .publish(self.now, channel, data.clone(), None, policy(channel));
                self.record(channel, &pos, data)?;
            }
            Op::Close { client } => {
                let Some(c) = self.pick_open(client) else {
                    return Ok(());
                };
                let payload = 1000u16.to_be_bytes();
                self.client_write(c, OpCode::Close, &payload);
                self.client_ended(c);
            }
            Op::Eof { client } => {
                let Some(c) = self.pick_open(client) else {
                    return Ok(());
                };
                let (node, conn) = (self.clients[c].node, self.clients[c].conn);
                self.client_ended(c);
                self.nodes[node].handle_eof(self.now, conn);
            }
            Op::Deliver { node, lane, n } => {
                for _ in 0..n {
                    let keys: Vec<Lane> = self.lanes[node].keys().cloned().collect();
                    if keys.is_empty() {
                        break;
                    }
                    let key = keys[lane % keys.len()].clone();
                    self.deliver_from(node, &key)?;
                }
            }
            Op::DeliverAll => self.deliver_all()?,
            Op::Lose { node, lane } => {
                // Lanes holding two publications or more: losing the first
                // leaves a later one to reveal the gap.
                let eligible: Vec<Lane> = self.lanes[node]
                    .iter()
                    .filter(|(_, q)| {
                        q.iter()
                            .filter(|(_, e)| matches!(e, BackboneEvent::Publication { .. }))
                            .count()
                            >= 2
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if !eligible.is_empty() {
                    let key = &eligible[lane % eligible.len()];
                    let q = self.lanes[node].get_mut(key).expect("listed");
                    if let Some(i) = q
                        .iter()
                        .position(|(_, e)| matches!(e, BackboneEvent::Publication { .. }))
                    {
                        q.remove(i);
                    }
                }
            }
            Op::Reset { node } => {
                self.lanes[node].clear();
                self.hub.remove_node(self.now, NodeId(node as u32));
                self.collect_hub_events()?;
                self.nodes[node].handle_backbone(self.now, BackboneEvent::Reset);
            }
            Op::Advance { secs } => {
                self.now = self.now + Duration::from_secs(secs);
                self.hub.handle_timeout(self.now);
                for n in &mut self.nodes {
                    n.handle_timeout(self.now);
                }
            }
        }
        self.flush()
    }

    /// The client stops caring about its connection: no more replies or
    /// publications are expected.
    fn client_ended(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.open = false;
        client.requests.clear();
        client.subs.clear();
    }

    fn client_write(&mut self, c: usize, op: OpCode, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame::encode_masked(true, op, payload, MASK, &mut out);
        if op == OpCode::Close {
            self.clients[c].sent_close = true;
        }
        let (node, conn) = (self.clients[c].node, self.clients[c].conn);
        self.nodes[node].handle_read(self.now, conn, &out);
    }

    fn send_command(&mut self, c: usize, command: Command, req: Req) -> u64 {
        let id = self.clients[c].next_id;
        self.clients[c].next_id += 1;
        self.clients[c].requests.insert(id, req);
        let payload = protocol::encode_request(Encoding::Json, &Request { id, command });
        self.client_write(c, OpCode::Text, &payload);
        id
    }

    // --- plumbing ----------------------------------------------------------

    /// Moves the hub's events into the lanes, recording the positions the
    /// hub gave to node publishes.
    fn collect_hub_events(&mut self) -> Result<bool, String> {
        let mut any = false;
        while let Some((to, event)) = self.hub.poll_event() {
            any = true;
            let node = to.0 as usize;
            let lane = match &event {
                BackboneEvent::Publication { channel, .. }
                | BackboneEvent::Join { channel, .. }
                | BackboneEvent::Leave { channel, .. } => Lane::Channel(channel.clone()),
                BackboneEvent::Reply { request, reply } => {
                    if let BackboneReply::Published(Ok(pos)) = reply {
                        if let Some((channel, data)) = self.publishing.remove(&(node, request.0)) {
                            self.record(&channel, pos, data)?;
                        }
                    }
                    Lane::Reply(request.0)
                }
                BackboneEvent::Reset => return Err("the hub sent a Reset".into()),
            };
            self.seq += 1;
            self.lanes
                .get_mut(node)
                .ok_or_else(|| format!("hub sent an event to unknown node {node}"))?
                .entry(lane)
                .or_default()
                .push_back((self.seq, event));
        }
        Ok(any)
    }

    /// Runs everything that needs no decision: node commands to the hub,
    /// hub events into lanes, node output to the clients (and their
    /// answers back), finished connections dropped.
    fn flush(&mut self) -> Result<(), String> {
        loop {
            let mut progress = false;
            for n in 0..NODES {
                while let Some(cmd) = self.nodes[n].poll_backbone() {
                    progress = true;
                    if let BackboneCommand::Publish {
                        request,
                        channel,
                        data,
                        ..
                    } = &cmd
                    {
                        self.publishing
                            .insert((n, request.0), (channel.clone(), data.clone()));
                    }
                    self.hub.handle_command(self.now, NodeId(n as u32), cmd);
                    self.collect_hub_events()?;
                }
            }
            progress |= self.collect_hub_events()?;
            for n in 0..NODES {
                while let Some(id) = self.nodes[n].poll_transmit() {
                    progress = true;
                    let bytes: Vec<u8> = match self.nodes[n].queue(id) {
                        Some(q) => q.slices().flat_map(|s| s.iter().copied()).collect(),
                        None => continue,
                    };
                    self.nodes[n].handle_written(self.now, id, bytes.len());
                    let c = self
                        .client_of(n, id)
                        .ok_or_else(|| format!("node {n} wrote to unknown connection {id:?}"))?;
                    self.client_read(c, &bytes)?;
                }
                while let Some(id) = self.nodes[n].poll_finished() {
                    progress = true;
                    let c = self
                        .client_of(n, id)
                        .ok_or_else(|| format!("node {n} finished unknown connection {id:?}"))?;
                    self.clients[c].gone = true;
                    if self.clients[c].open {
                        return Err(format!(
                            "node {n} ended client {c}'s connection without a close"
                        ));
                    }
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    fn client_of(&self, node: usize, id: ConnId) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.node == node && c.conn == id && !c.gone)
    }

    fn deliver_from(&mut self, node: usize, key: &Lane) -> Result<(), String> {
        let Some(q) = self.lanes[node].get_mut(key) else {
            return Ok(());
        };
        let event = q.pop_front();
        if q.is_empty() {
            self.lanes[node].remove(key);
        }
        if let Some((_, event)) = event {
            self.nodes[node].handle_backbone(self.now, event);
            self.flush()?;
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.lanes
            .iter()
            .flat_map(|l| l.values())
            .map(VecDeque::len)
            .sum()
    }

    fn deliver_all(&mut self) -> Result<(), String> {
        for _ in 0..MAX_DELIVERIES {
            let oldest = (0..NODES)
                .flat_map(|n| {
                    self.lanes[n]
                        .iter()
                        .filter_map(move |(k, q)| q.front().map(|(s, _)| (*s, n, k.clone())))
                })
                .min();
            let Some((_, node, key)) = oldest else {
                return Ok(());
            };
            self.deliver_from(node, &key)?;
        }
        Err(format!("no quiescence after {MAX_DELIVERIES} deliveries"))
    }

    // --- what a client reads -------------------------------------------------

    fn client_read(&mut self, c: usize, bytes: &[u8]) -> Result<(), String> {
        self.clients[c].buf.extend_from_slice(bytes);
        loop {
            let client = &mut self.clients[c];
            let frame = match client.decoder.decode(&mut client.buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("client {c} got a bad frame: {e}")),
            };
            if !frame.fin {
                return Err(format!("client {c} got a fragmented message"));
            }
            match frame.opcode {
                OpCode::Text => {
                    if self.clients[c].open {
                        let message = decode_server_message(Encoding::Json, &frame.payload)
                            .map_err(|e| format!("client {c}: {e}"))?;
                        self.on_message(c, message)?;
                    }
                }
                OpCode::Ping => {
                    if self.clients[c].open {
                        self.client_write(c, OpCode::Pong, &frame.payload);
                    }
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    if !self.clients[c].sent_close {
                        // The server closed first: not expected in these runs
                        // (no heartbeats, no slow consumers, valid commands).
                        return Err(format!("the server closed client {c}: {:?}", frame.payload));
                    }
                }
                other => return Err(format!("client {c} got an unexpected {other:?} frame")),
            }
        }
    }

    fn on_message(&mut self, c: usize, message: ServerMessage) -> Result<(), String> {
        let (id, reply) = match message {
            ServerMessage::Push(Push::Pub {
                channel,
                publication,
            }) => return self.on_pub(c, &channel, &publication),
            ServerMessage::Push(Push::Unsubscribe {
                channel,
                code,
                reason,
            }) => {
                return match self.clients[c].subs.remove(&channel) {
                    Some(Sub::Live { .. }) if code == unsubscribe_code::INSUFFICIENT_STATE => {
                        Ok(())
                    }
                    other => Err(format!(
                        "client {c}: unsubscribe push ({code}, {reason:?}) on {channel} on \
                         subscription {other:?}"
                    )),
                };
            }
            // join/leave: off in the default namespace.
            ServerMessage::Push(push) => {
                return Err(format!("client {c}: unexpected push {push:?}"))
            }
            ServerMessage::Reply { id, reply } => (id, reply),
        };
        let req = self.clients[c]
            .requests
            .remove(&id)
            .ok_or_else(|| format!("client {c}: reply {id} to no request in flight: {reply:?}"))?;
        match req {
            Req::Publish => {
                if !matches!(reply, Reply::Publish { .. } | Reply::Error(_)) {
                    return Err(format!("client {c}: bad publish reply {reply:?}"));
                }
            }
            Req::Unsubscribe { channel } => {
                if reply != Reply::Unsubscribe {
                    return Err(format!(
                        "client {c}: unsubscribe of {channel} answered {reply:?}"
                    ));
                }
                // A pending subscribe is cancelled with it: no reply to it.
                if let Some(Sub::Pending(sid)) = self.clients[c].subs.remove(&channel) {
                    self.clients[c].requests.remove(&sid);
                }
            }
            Req::Subscribe { channel, recover } => {
                if self.clients[c].subs.get(&channel) != Some(&Sub::Pending(id)) {
                    return Err(format!(
                        "client {c}: subscribe reply {reply:?} for a subscription not pending"
                    ));
                }
                match reply {
                    Reply::Subscribe {
                        epoch,
                        offset,
                        recovery,
                    } => self.on_subscribed(c, &channel, recover, epoch, offset, recovery)?,
                    Reply::Error(_) => {
                        // e.g. backbone unavailable (reset) or busy: not subscribed.
                        self.clients[c].subs.remove(&channel);
                    }
                    other => {
                        return Err(format!(
                            "client {c}: subscribe to {channel} answered {other:?}"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariant 3 (recovery exactness) and the start of invariant 1.
    fn on_subscribed(
        &mut self,
        c: usize,
        channel: &str,
        recover: Option<StreamPosition>,
        epoch: String,
        offset: u64,
        recovery: Option<Recovery>,
    ) -> Result<(), String> {
        if let Some(pos) = recover {
            let Some(Recovery {
                recovered,
                publications,
            }) = recovery
            else {
                return Err(format!(
                    "client {c}: recover from {pos:?} on {channel} without `recovered`"
                ));
            };
            if recovered {
                if pos.epoch != epoch {
                    return Err(format!(
                        "invariant 3: {channel}: recovered from {pos:?} into epoch {epoch}"
                    ));
                }
                let want: Vec<(u64, Option<Payload>)> = (pos.offset + 1..=offset)
                    .map(|o| (o, self.data_of(channel, &epoch, o)))
                    .collect();
                let got: Vec<(u64, Option<Payload>)> = publications
                    .into_iter()
                    .map(|p| (p.offset, Some(p.data)))
                    .collect();
                if got != want {
                    return Err(format!(
                        "invariant 3: {channel}: recovery from {pos:?} to {offset} gave {got:?}, \
                         the channel has {want:?}"
                    ));
                }
            } else if !publications.is_empty() {
                return Err(format!(
                    "invariant 3: recovered:false with publications on {channel}: \
                     {publications:?}"
                ));
            }
        }
        let client = &mut self.clients[c];
        client.subs.insert(
            channel.to_owned(),
            Sub::Live {
                epoch: epoch.clone(),
                last: offset,
            },
        );
        client
            .last
            .insert(channel.to_owned(), StreamPosition { epoch, offset });
        Ok(())
    }

    /// The data the hub sequenced at a position (`None` if it never did).
    fn data_of(&self, channel: &str, epoch: &str, offset: u64) -> Option<Payload> {
        self.model
            .get(channel)
            .and_then(|s| s.get(&(epoch.to_owned(), offset)))
            .cloned()
    }

    /// Invariant 1: exactly the next offset, in the epoch, with its data.
    fn on_pub(&mut self, c: usize, channel: &str, publication: &Publication) -> Result<(), String> {
        let offset = publication.offset;
        let Some(Sub::Live { epoch, last }) = self.clients[c].subs.get(channel).cloned() else {
            return Err(format!(
                "invariant 1: client {c} got offset {offset} of {channel} without a live \
                 subscription ({:?})",
                self.clients[c].subs.get(channel)
            ));
        };
        if offset != last + 1 {
            return Err(format!(
                "invariant 1: client {c} on {channel}: offset {offset} after {last} (epoch {epoch})"
            ));
        }
        let want = self.data_of(channel, &epoch, offset);
        if want.as_ref() != Some(&publication.data) {
            return Err(format!(
                "invariant 1: client {c} on {channel}: offset {offset} carried {:?}, the hub \
                 sequenced {want:?} there (epoch {epoch})",
                publication.data
            ));
        }
        let client = &mut self.clients[c];
        client.subs.insert(
            channel.to_owned(),
            Sub::Live {
                epoch: epoch.clone(),
                last: offset,
            },
        );
        client
            .last
            .insert(channel.to_owned(), StreamPosition { epoch, offset });
        Ok(())
    }

    // --- invariants after each step ----------------------------------------

    fn check(&mut self) -> Result<(), String> {
        // Always: connections are exactly the open clients, nothing is left
        // queued (the clients read everything), a timer at most each.
        for n in 0..NODES {
            let node = &self.nodes[n];
            let ids: BTreeSet<ConnId> = node.ids().collect();
            let open: BTreeSet<ConnId> = self
                .clients
                .iter()
                .filter(|c| c.node == n && c.open)
                .map(|c| c.conn)
                .collect();
            if ids != open || node.connections() != open.len() {
                return Err(format!(
                    "invariant 4: node {n} holds connections {ids:?} ({}), open clients are {open:?}",
                    node.connections()
                ));
            }
            if node.queued_bytes() != 0 {
                return Err(format!(
                    "node {n}: {} bytes left queued",
                    node.queued_bytes()
                ));
            }
            if node.timers() > node.connections() {
                return Err(format!(
                    "invariant 4: node {n}: {} timers for {} connections",
                    node.timers(),
                    node.connections()
                ));
            }
        }
        if self.in_flight() == 0 {
            self.check_quiescent()?;
        }
        Ok(())
    }

    fn check_quiescent(&mut self) -> Result<(), String> {
        let hub_channels: BTreeMap<String, _> = self
            .hub
            .channels()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        // Every command answered; every live subscription has everything
        // (invariant 2).
        for (i, c) in self.clients.iter().enumerate().filter(|(_, c)| c.open) {
            if !c.requests.is_empty() {
                return Err(format!(
                    "client {i}: no reply at quiescence to {:?}",
                    c.requests
                ));
            }
            for (channel, sub) in &c.subs {
                let Sub::Live { epoch, last } = sub else {
                    return Err(format!("client {i}: {channel} still pending at quiescence"));
                };
                let hub = hub_channels.get(channel);
                if hub.map(|h| (&h.epoch, h.top)) != Some((epoch, *last)) {
                    return Err(format!(
                        "invariant 2: client {i} (node {}) live on {channel} at ({epoch}, {last}) \
                         but the channel is at {:?}: silent loss",
                        c.node,
                        hub.map(|h| (&h.epoch, h.top))
                    ));
                }
            }
        }
        // Invariant 4: nodes hold exactly the live clients' subscriptions.
        let mut node_channels: Vec<BTreeMap<String, usize>> = Vec::new();
        for n in 0..NODES {
            let node = &self.nodes[n];
            let have: BTreeMap<String, usize> =
                node.channels().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut want: BTreeMap<String, usize> = BTreeMap::new();
            for c in self.clients.iter().filter(|c| c.node == n && c.open) {
                for channel in c.subs.keys() {
                    *want.entry(channel.clone()).or_default() += 1;
                }
                let subs: BTreeSet<String> = node.subscriptions(c.conn).into_iter().collect();
                let mine: BTreeSet<String> = c.subs.keys().cloned().collect();
                if subs != mine {
                    return Err(format!(
                        "invariant 4: node {n} has {subs:?} for {}, the client has {mine:?}",
                        c.name
                    ));
                }
            }
            if have != want {
                return Err(format!(
                    "invariant 4: node {n} channels {have:?}, live subscribers {want:?}"
                ));
            }
            if node.requests_in_flight() != 0 {
                return Err(format!(
                    "invariant 4: node {n}: {} backbone requests in flight at quiescence",
                    node.requests_in_flight()
                ));
            }
            node_channels.push(have);
        }
        // The hub: a node subscription exactly for each node's channels, and
        // presence exactly the live subscribers.
        let mut names: BTreeSet<String> = hub_channels.keys().cloned().collect();
        names.extend(node_channels.iter().flat_map(|m| m.keys().cloned()));
        for name in names {
            let want: Vec<NodeId> = (0..NODES)
                .filter(|&n| node_channels[n].contains_key(&name))
                .map(|n| NodeId(n as u32))
                .collect();
            let have = hub_channels
                .get(&name)
                .map(|h| h.nodes.clone())
                .unwrap_or_default();
            if have != want {
                return Err(format!(
                    "invariant 4: hub subscriptions of {name:?} are {have:?}, nodes with \
                     subscribers are {want:?}"
                ));
            }
            let present: BTreeSet<String> = self
                .hub
                .presence(&name)
                .into_iter()
                .map(|i| i.client)
                .collect();
            let subscribed: BTreeSet<String> = self
                .clients
                .iter()
                .filter(|c| c.open && c.subs.contains_key(&name))
                .map(|c| c.name.clone())
                .collect();
            if present != subscribed {
                return Err(format!(
                    "invariant 4: presence in {name:?} is {present:?}, live subscribers are \
                     {subscribed:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Runs one case; the error says at which step which invariant broke.
fn run(ops: &[Op], setup: &dyn Fn(&mut Node)) -> Result<(), String> {
    let mut world = World::new(setup);
    for (i, op) in ops.iter().enumerate() {
        world
            .apply(op)
            .and_then(|()| world.check())
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    let end = ops.len();
    world
        .deliver_all()
        .and_then(|()| world.check())
        .map_err(|e| format!("step {end} (final DeliverAll): {e}"))
}

fn config(cases: u32) -> Config {
    contextualize_config(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn property(
    runner: &mut TestRunner,
    profile: Profile,
    setup: &'static dyn Fn(&mut Node),
) -> Result<(), TestError<Vec<Op>>> {
    runner.run(&ops(profile), move |ops| {
        run(&ops, setup).map_err(TestCaseError::fail)
    })
}

#[test]
fn node_keeps_the_delivery_contract() {
    let mut runner = TestRunner::new(config(1000));
    if let Err(e) = property(&mut runner, BALANCED, &|_| {}) {
        panic!("{e}");
    }
}

#[test]
fn node_keeps_the_delivery_contract_across_resets() {
    let mut runner = TestRunner::new(config(1000));
    if let Err(e) = property(&mut runner, RESETS, &|_| {}) {
        panic!("{e}");
    }
}

/// Hand-written cases that the random ones must cover too, kept as
/// regressions and as examples of the operations.
#[test]
fn scripted_cases_hold() {
    use Op::*;
    let cases: Vec<Vec<Op>> = vec![
        // Two nodes, subscribe, publish from a client and the API.
        vec![
            Connect { node: 0 },
            Connect { node: 1 },
            Subscribe {
                client: 0,
                channel: 0,
                recover: None,
            },
            Subscribe {
                client: 1,
                channel: 0,
                recover: None,
            },
            DeliverAll,
            Publish {
                client: 0,
                channel: 0,
            },
            ApiPublish { channel: 0 },
            DeliverAll,
            Close { client: 0 },
            Eof { client: 0 },
            DeliverAll,
        ],
        // A gap (lost publication) is filled from history.
        vec![
            Connect { node: 0 },
            Subscribe {
                client: 0,
                channel: 0,
                recover: None,
            },
            DeliverAll,
            ApiPublish { channel: 0 },
            ApiPublish { channel: 0 },
            Lose { node: 0, lane: 0 },
            DeliverAll,
        ],
        // A reset while publications are in flight; recovery afterwards.
        vec![
            Connect { node: 0 },
            Subscribe {
                client: 0,
                channel: 0,
                recover: None,
            },
            DeliverAll,
            ApiPublish { channel: 0 },
            Reset { node: 0 },
            ApiPublish { channel: 0 },
            DeliverAll,
            Unsubscribe {
                client: 0,
                channel: 0,
            },
            ApiPublish { channel: 0 },
            Subscribe {
                client: 0,
                channel: 0,
                recover: Some(0),
            },
            DeliverAll,
            Advance { secs: 24 },
            Advance { secs: 24 },
            DeliverAll,
        ],
    ];
    for ops in cases {
        if let Err(e) = run(&ops, &|_| {}) {
            panic!("{e}\ncase: {ops:?}");
        }
    }
}

#[cfg(feature = "mutations")]
mod mutations {
    use super::*;
    use proptest::test_runner::TestRng;
    use wavecast_core::node::Mutation;

    /// The property must fail with `m` planted; prints the minimized case.
    fn must_fail(m: Mutation, setup: &'static dyn Fn(&mut Node)) {
        let config = config(1024);
        let rng = TestRng::deterministic_rng(config.rng_algorithm);
        let mut runner = TestRunner::new_with_rng(config, rng);
        match property(&mut runner, BALANCED, setup) {
            Err(TestError::Fail(reason, ops)) => {
                eprintln!(
                    "{m:?}: minimal failing case ({} ops): {ops:?}\n  {reason}",
                    ops.len()
                );
            }
            Err(e) => panic!("{m:?}: the property did not fail as expected: {e}"),
            Ok(()) => panic!("{m:?}: the property holds with the bug planted"),
        }
    }

    #[test]
    fn mutation_skip_unsubscribe_on_close_is_caught() {
        must_fail(Mutation::SkipUnsubscribeOnClose, &|n| {
            n.set_mutation(Mutation::SkipUnsubscribeOnClose)
        });
    }

    #[test]
    fn mutation_ignore_gap_is_caught() {
        must_fail(Mutation::IgnoreGap, &|n| {
            n.set_mutation(Mutation::IgnoreGap)
        });
    }

    #[test]
    fn mutation_keep_backbone_subscription_is_caught() {
        must_fail(Mutation::KeepBackboneSubscription, &|n| {
            n.set_mutation(Mutation::KeepBackboneSubscription)
        });
    }
}

/// Regression (found by the property): after a reset in which the hub
/// dropped a channel (new epoch), a subscribe pending on the node, and a
/// publication of the new epoch that reached the node before the replies:
/// the gap-fill failure (or the subscribe reply's epoch change) threw the
/// held publication away, and the new subscriber silently missed it.
/// `reply_lane` picks which reply comes first: 0 the gap fill's, 1 the
/// subscribe's.
fn reset_epoch_change_case(reply_lane: usize) -> Vec<Op> {
    use Op::*;
    vec![
        Connect { node: 0 },
        Subscribe {
            client: 0,
            channel: 1,
            recover: None,
        },
        DeliverAll,
        // The hub forgets node 0: "nohist:b" is left empty and dropped; the
        // node resubscribes (new epoch) and asks history to fill.
        Reset { node: 0 },
        Connect { node: 0 },
        Subscribe {
            client: 1,
            channel: 1,
            recover: None,
        },
        ApiPublish { channel: 1 },
        // Lanes: the channel's, then the fill reply, then the subscribe
        // reply. The publication first, then one reply, then the rest.
        Deliver {
            node: 0,
            lane: 0,
            n: 1,
        },
        Deliver {
            node: 0,
            lane: reply_lane,
            n: 1,
        },
        DeliverAll,
    ]
}

#[test]
fn regression_reset_epoch_change_fill_reply_first() {
    let ops = reset_epoch_change_case(0);
    if let Err(e) = run(&ops, &|_| {}) {
        panic!("{e}\ncase: {ops:?}");
    }
}

#[test]
fn regression_reset_epoch_change_subscribe_reply_first() {
    let ops = reset_epoch_change_case(1);
    if let Err(e) = run(&ops, &|_| {}) {
        panic!("{e}\ncase: {ops:?}");
    }
}
