//! wavecast-model: a stateright model of multi-server wavecast topologies,
//! built from the same `wavecast_core` code the runtime runs.
//!
//! Actors (see docs/MODEL.md for what is and is not modelled):
//!
//! - **servers** ([`Actor::Server`]): each owns a real
//!   [`wavecast_core::node::Node`] and hosts its clients' WebSocket
//!   connections. A client's abstract command becomes a masked JSON frame
//!   fed to `Node::handle_read`; the node's outbound bytes are decoded
//!   (client-side frame decoder + the core's
//!   [`decode_server_message`](wavecast_core::protocol::decode_server_message))
//!   back into abstract messages. The node's backbone commands go to the
//!   backbone actor as they are.
//! - **the backbone** ([`Actor::Backbone`]): a real
//!   [`wavecast_core::hub::Hub`], the sequencer of every channel, with
//!   Redis's semantics for a lost link: a server whose link is cut
//!   ([`Timer::Cut`]) loses every backbone message in flight to it, and on
//!   reconnecting the backbone forgets its subscriptions and presence (as
//!   Redis forgets a closed connection's) and sends it `Event::Reset`.
//!   History survives.
//! - **clients** ([`Actor::Client`]): connect to a server, subscribe,
//!   publish, disconnect and reconnect to any server, resubscribing with
//!   `recover` from the last position they saw, or go silent. They check
//!   what they receive as they receive it (order, gaps, recovery) and keep
//!   the verdicts in their state, where the properties read them.
//!
//! Network: stateright's ordered network, FIFO per directed pair of actors
//! (every real link here is one TCP connection); messages on different
//! links interleave freely.
//!
//! Time: the backbone's clock stays at zero (history never expires); a
//! server's clock moves (`Timer::Tick`, to the node's next deadline) only
//! while it holds the connection of a client that has gone silent, so that
//! the heartbeat can expire it; the transports of other clients answer the
//! node's pings at once.

#![warn(missing_docs)]

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;
use stateright::actor::{model_timeout, ActorModel, Id, Network, Out};
use stateright::{Checker, Expectation, Model};
use wavecast_core::backbone::{BackboneCommand, BackboneEvent, NodeId};
use wavecast_core::frame::{self, FrameDecoder, OpCode};
use wavecast_core::hub::Hub;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{
    self, close, unsubscribe_code, Command, Encoding, Payload, Push, Reply, Request, ServerMessage,
    StreamPosition,
};
use wavecast_core::Timestamp;

/// Channel names, by index.
pub const CHANNELS: [&str; 2] = ["a", "b"];
/// The backbone's only instant (see the crate docs).
const NOW: Timestamp = Timestamp::ZERO;
/// How long after going silent a peer's connection may still be held:
/// heartbeat interval + heartbeat timeout (when it is closed) + close
/// timeout (when the transport is dropped), with the default settings.
const HEARTBEAT_BOUND: std::time::Duration = std::time::Duration::from_secs(25 + 10 + 5);
/// Clients mask their frames; any key does.
const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
/// Request ids a client uses: subscribe to channel `c` is `SUB_RID + c`,
/// publish is `PUB_RID + c` (one request of each kind per channel is in
/// flight at a time, so ids need not be unique over time).
const SUB_RID: u64 = 1;
const PUB_RID: u64 = 11;

/// What one client does, in order where order matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientScript {
    /// The server it first connects to.
    pub home: usize,
    /// Channels (indexes into [`CHANNELS`]) it subscribes to.
    pub subscribe: Vec<u8>,
    /// Channels it publishes to, one publication each, in this order.
    pub publish: Vec<u8>,
    /// How often it disconnects (and then reconnects to any server).
    pub reconnects: u8,
    /// Whether it goes silent (stops reading and answering) once
    /// subscribed, so that only the heartbeat can drop its connection.
    pub silent: bool,
}

/// A topology to check.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of servers.
    pub servers: usize,
    /// One script per client.
    pub clients: Vec<ClientScript>,
    /// Per server: how often its backbone link may be cut.
    pub cuts: Vec<u8>,
    /// Applied to every node after it is created (tests plant core's
    /// mutations with it).
    pub setup_node: Option<fn(&mut Node)>,
    /// Lose the first publication event the backbone sends to this server
    /// (index); the loss is revealed by the next publication of the same
    /// channel to that server, as a lost pub/sub message would be.
    pub lose_first_pub_to: Option<usize>,
}

impl Config {
    /// The default topology for `servers` servers and `clients` clients.
    /// Client `i` starts on server `i % servers`. Clients `3k` and `3k+1`
    /// subscribe to channel a and publish to it once (on two servers, so
    /// publishes race and a publication reaches two servers); client `3k+2`
    /// subscribes to channel b, publishes to it once, and disconnects once
    /// and reconnects to any server (recovery). Server 0's backbone link
    /// may be cut once (gap filling; with channel b unpublished, a gap
    /// history cannot fill).
    pub fn standard(servers: usize, clients: usize) -> Config {
        let servers = servers.max(1);
        let scripts = (0..clients)
            .map(|i| {
                let b = i % 3 == 2;
                ClientScript {
                    home: i % servers,
                    subscribe: vec![u8::from(b)],
                    publish: vec![u8::from(b)],
                    reconnects: u8::from(b),
                    silent: false,
                }
            })
            .collect();
        let mut cuts = vec![0; servers];
        cuts[0] = 1;
        Config {
            servers,
            clients: scripts,
            cuts,
            setup_node: None,
            lose_first_pub_to: None,
        }
    }

    fn backbone(&self) -> Id {
        Id::from(self.servers)
    }

    /// The stateright model of this topology.
    pub fn into_model(self) -> ActorModel<Actor, Config, ()> {
        let mut model = ActorModel::new(self.clone(), ()).init_network(Network::new_ordered([]));
        for i in 0..self.servers {
            model = model.actor(Actor::Server {
                index: i,
                backbone: self.backbone(),
                cuts: self.cuts.get(i).copied().unwrap_or(0),
                setup: self.setup_node,
            });
        }
        model = model.actor(Actor::Backbone {
            lose_to: self.lose_first_pub_to.map(Id::from),
        });
        for (i, script) in self.clients.iter().enumerate() {
            model = model.actor(Actor::Client {
                servers: (0..self.servers).map(Id::from).collect(),
                script: script.clone(),
                index: i,
            });
        }
        add_properties(model)
    }
}

/// A value compared by its `Debug` text: stateright wants messages to be
/// `Ord`, and the core's backbone messages are only `Eq + Hash`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Opaque<T>(pub T);

impl<T: std::fmt::Debug + Eq> PartialOrd for Opaque<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: std::fmt::Debug + Eq> Ord for Opaque<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.0 == other.0 {
            return Ordering::Equal;
        }
        format!("{:?}", self.0).cmp(&format!("{:?}", other.0))
    }
}

/// Messages between actors. Client <-> server messages carry the client's
/// connection number, so a reconnected client ignores its old connection's
/// leftovers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Client: subscribe, recovering from a position if it has one.
    Subscribe {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Last (epoch, offset) seen on the channel.
        recover: Option<(String, u64)>,
    },
    /// Client: publish one publication.
    Publish {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// The data: a number unique to the publication.
        data: u64,
    },
    /// Client: the transport ends (abruptly, as a dropped TCP connection).
    Disconnect {
        /// Connection number.
        conn: u32,
    },
    /// Server: subscribe reply.
    Subscribed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// The channel's epoch.
        epoch: String,
        /// Where the subscription starts.
        offset: u64,
        /// When recover was asked: `recovered` and the recovered
        /// publications (offset, data).
        recovery: Option<(bool, Vec<(u64, u64)>)>,
    },
    /// Server: subscribe failed with this error code.
    SubscribeFailed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Error code.
        code: u64,
    },
    /// Server: a publication push.
    Pub {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Its offset.
        offset: u64,
        /// Its data.
        data: u64,
    },
    /// Server: an unsubscribe push.
    Unsubscribed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Why (`unsubscribe_code`).
        code: u64,
    },
    /// Server: a close frame.
    Closed {
        /// Connection number.
        conn: u32,
        /// Close code.
        code: u16,
    },
    /// Server: a ping (answered by the hosted client transport, never
    /// delivered to the client actor).
    Ping {
        /// Connection number.
        conn: u32,
    },
    /// Client -> server: the client has gone silent: its transport stops
    /// reading and answering (a frozen process, a dead network path).
    Silent {
        /// Connection number.
        conn: u32,
    },
    /// Server: a frame the model does not understand (a violation).
    Garbage {
        /// Connection number.
        conn: u32,
        /// What it was.
        what: String,
    },
    /// Server -> backbone: a command.
    Cmd(Opaque<BackboneCommand>),
    /// Server -> backbone: my link was cut and is back.
    Reconnect,
    /// Backbone -> server: an event.
    Ev(Opaque<BackboneEvent>),
    /// Several messages on one link, sent in one step and handled in one
    /// step (what one drain of a node, or one command of the backbone,
    /// produces for one peer).
    Batch(Vec<Msg>),
}

/// Messages produced in one step, grouped by destination and sent as one
/// message each (see docs/MODEL.md, "Reductions").
#[derive(Default)]
struct Outbox(BTreeMap<Id, Vec<Msg>>);

impl Outbox {
    fn push(&mut self, to: Id, msg: Msg) {
        self.0.entry(to).or_default().push(msg);
    }

    fn send(self, o: &mut Out<Actor>) {
        for (to, mut msgs) in self.0 {
            let msg = if msgs.len() == 1 {
                msgs.pop().expect("one")
            } else {
                Msg::Batch(msgs)
            };
            o.send(to, msg);
        }
    }
}

/// Timers: the nondeterministic choices of servers and clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Server: cut the backbone link.
    Cut,
    /// Server: advance the clock to the node's next deadline.
    Tick,
    /// Client: go silent (stop reading and answering).
    GoSilent,
    /// Client: publish the next publication of its script.
    Publish,
    /// Client: disconnect.
    Disconnect,
    /// Client: connect to this server (index).
    Connect(usize),
}

/// A client's view of one channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sub {
    /// Not subscribed.
    Idle,
    /// Subscribe sent, from this position if recovering.
    Pending(Option<(String, u64)>),
    /// Subscribed: epoch and last offset received.
    Live {
        /// The subscription's epoch.
        epoch: String,
        /// The last offset received.
        last: u64,
    },
}

/// A server actor's state.
///
/// The node itself is not kept here: the core's `Node` shares its
/// connection settings through an `Rc`, so it is neither `Send` nor `Sync`,
/// which stateright's checker threads need. The state keeps instead the
/// inputs the server has handled (`log`, which rebuilds the node exactly,
/// since the node is deterministic) and a digest of the node they produce
/// (`digest`: the derived `Hash` of the whole `Node`). Equality and
/// hashing use the digest, not the log, so two histories that reach the
/// same node are one state. A per-thread cache keyed by digest saves the
/// replay in the common case (see `with_node`).
#[derive(Clone, Debug)]
pub struct ServerState {
    /// Every input handled so far, oldest first.
    log: Log,
    /// Hash of the node the log produces.
    pub digest: u64,
    /// What the properties need to know of the node.
    pub summary: NodeSummary,
    /// Everything of the server but the node.
    pub t: Transport,
}

/// A server's state besides its node: the transports it hosts, its
/// backbone link, its clock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transport {
    /// Connected clients: actor id -> (connection number, node handle).
    pub conns: BTreeMap<Id, (u32, ConnId)>,
    /// The backbone link is cut: backbone messages are lost until `Reset`.
    pub link_down: bool,
    /// Cuts left.
    pub cuts_left: u8,
    /// The server's clock (moved only by `Timer::Tick`).
    pub now: Timestamp,
    /// Clients gone silent (their transport answers nothing), and since
    /// when; removed when the node drops their connection.
    pub silent: BTreeMap<Id, Timestamp>,
    /// Silent connections dropped by the heartbeat so far.
    pub expired: u8,
    /// Silent connections dropped too late (heartbeat liveness).
    pub late: Vec<String>,
}

impl PartialEq for ServerState {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.summary == other.summary && self.t == other.t
    }
}

impl Eq for ServerState {}

impl Hash for ServerState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
        self.t.hash(state);
    }
}

/// A server's inputs, newest first, shared between states.
#[derive(Clone, Debug, Default)]
struct Log(Option<Arc<(Input, Log)>>);

impl Log {
    fn push(&self, input: Input) -> Log {
        Log(Some(Arc::new((input, self.clone()))))
    }

    fn oldest_first(&self) -> Vec<Input> {
        let mut out = Vec::new();
        let mut at = self;
        while let Some(entry) = &at.0 {
            out.push(entry.0.clone());
            at = &entry.1;
        }
        out.reverse();
        out
    }
}

/// One input of a server.
#[derive(Clone, Debug)]
enum Input {
    Msg(Id, Msg),
    Cut,
    Tick,
}

/// What the properties read of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSummary {
    /// Channels with their live subscriber counts.
    pub channels: BTreeMap<String, usize>,
    /// Connections held.
    pub connections: usize,
    /// Backbone requests awaiting a reply.
    pub requests: usize,
    /// Bytes queued on connections.
    pub queued_bytes: usize,
    /// Timers registered.
    pub timers: usize,
}

impl NodeSummary {
    fn of(node: &Node) -> NodeSummary {
        NodeSummary {
            channels: node.channels().map(|(n, c)| (n.to_string(), c)).collect(),
            connections: node.connections(),
            requests: node.requests_in_flight(),
            queued_bytes: node.queued_bytes(),
            timers: node.timers(),
        }
    }
}

/// A server's node and its connection table while it handles an input.
struct Core {
    node: Node,
    t: Transport,
}

/// The server actor's fixed parameters.
#[derive(Clone, Copy)]
struct ServerParams {
    index: usize,
    backbone: Id,
    cuts: u8,
    setup: Option<fn(&mut Node)>,
}

impl ServerParams {
    fn fresh(&self) -> Core {
        let config = NodeConfig {
            client_prefix: format!("s{}-", self.index),
            ..NodeConfig::default()
        };
        let mut node = Node::new(config);
        if let Some(setup) = self.setup {
            setup(&mut node);
        }
        Core {
            node,
            t: Transport {
                conns: BTreeMap::new(),
                link_down: false,
                cuts_left: self.cuts,
                now: Timestamp::ZERO,
                silent: BTreeMap::new(),
                expired: 0,
                late: Vec::new(),
            },
        }
    }

    /// Handles one input; what it sends goes to `o`.
    fn step(&self, core: &mut Core, input: &Input, o: &mut Out<Actor>) {
        match input {
            Input::Msg(src, Msg::Batch(msgs)) => {
                for msg in msgs {
                    server_msg(core, *src, self.backbone, msg.clone());
                }
            }
            Input::Msg(src, msg) => server_msg(core, *src, self.backbone, msg.clone()),
            Input::Cut => {
                if core.t.cuts_left > 0 && !core.t.link_down {
                    core.t.cuts_left -= 1;
                    core.t.link_down = true;
                    o.send(self.backbone, Msg::Reconnect);
                    if core.t.cuts_left > 0 {
                        o.set_timer(Timer::Cut, model_timeout());
                    }
                }
            }
            Input::Tick => {
                if let Some(at) = core.node.poll_timeout() {
                    core.t.now = core.t.now.max(at);
                    core.node.handle_timeout(core.t.now);
                }
            }
        }
        drain(core, self.backbone, o);
        // The link may be cut once the node holds a channel (before, a cut
        // changes nothing).
        if core.t.cuts_left > 0 && !core.t.link_down && core.node.channels().next().is_some() {
            o.set_timer(Timer::Cut, model_timeout());
        }
        // Time moves only while a silent connection is held: that is when
        // it matters (heartbeat expiry); otherwise every peer answers pings
        // at once and a tick changes nothing of interest.
        if !core.t.silent.is_empty() && core.node.poll_timeout().is_some() {
            o.set_timer(Timer::Tick, model_timeout());
        }
    }

    /// The core a state stands for: from this thread's cache, or rebuilt
    /// by replaying the log.
    fn core_of(&self, s: &ServerState) -> Core {
        let cached = NODES.with(|c| c.borrow().get(&s.digest).cloned());
        let node = match cached {
            Some(node) => node,
            None => {
                let mut core = self.fresh();
                for input in s.log.oldest_first() {
                    self.step(&mut core, &input, &mut Out::new());
                }
                core.node
            }
        };
        Core {
            node,
            t: s.t.clone(),
        }
    }

    /// Handles `input` in state `s`.
    fn handle(&self, s: &mut ServerState, input: Input, o: &mut Out<Actor>) {
        let mut core = self.core_of(s);
        self.step(&mut core, &input, o);
        *s = seal(s.log.push(input), core);
    }
}

/// Most nodes cached per thread; past it the cache starts over (a miss
/// only costs a replay).
const CACHE_SIZE: usize = 50_000;

thread_local! {
    static NODES: std::cell::RefCell<std::collections::HashMap<u64, Node>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn digest_of(node: &Node) -> u64 {
    // SipHash with fixed keys: the same node gives the same digest in every
    // run, so state counts are reproducible.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    h.finish()
}

fn seal(log: Log, core: Core) -> ServerState {
    let digest = digest_of(&core.node);
    let summary = NodeSummary::of(&core.node);
    NODES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_SIZE {
            c.clear();
        }
        c.insert(digest, core.node);
    });
    ServerState {
        log,
        digest,
        summary,
        t: core.t,
    }
}

/// A client actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Its index among clients.
    pub me: usize,
    /// Index of the server it is connected to.
    pub server: Option<usize>,
    /// Current connection number.
    pub conn: u32,
    /// Per channel.
    pub subs: Vec<Sub>,
    /// Per channel: last position seen, kept across connections.
    pub pos: Vec<Option<(String, u64)>>,
    /// Publications of its script already sent.
    pub published: usize,
    /// Reconnects left.
    pub reconnects_left: u8,
    /// Has gone silent: it does nothing more and counts as gone.
    pub silent: bool,
    /// Publications received: (server index, channel, epoch, offset,
    /// data).
    pub got: BTreeSet<(usize, u8, String, u64, u64)>,
    /// Was told of a gap (unsubscribe 2500, close 4003, `recovered: false`).
    pub told_gap: bool,
    /// Recovered at least one publication with `recovered: true`.
    pub recovered_some: bool,
    /// Violations seen (order, duplicates, silent gaps, recovery), as text.
    pub violations: Vec<String>,
}

/// Backbone state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackboneState {
    /// The sequencer.
    pub hub: Hub,
    /// The server whose first publication event is to be lost, while
    /// that loss is still to come.
    pub lose_to: Option<Id>,
    /// A publication event lost in transit, not yet revealed: it is
    /// dropped when the next publication of its channel goes to the same
    /// server (the state is not quiescent meanwhile).
    pub withheld: Option<(Id, String)>,
}

/// Every actor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// A server.
    Server(Box<ServerState>),
    /// The backbone.
    Backbone(Box<BackboneState>),
    /// A client.
    Client(Box<ClientState>),
}

/// The actors.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A server.
    Server {
        /// Its index (= its actor id = its backbone `NodeId`).
        index: usize,
        /// The backbone's id.
        backbone: Id,
        /// Link cuts allowed.
        cuts: u8,
        /// Node setup (mutations).
        setup: Option<fn(&mut Node)>,
    },
    /// The backbone.
    Backbone {
        /// The server whose first publication event is lost.
        lose_to: Option<Id>,
    },
    /// A client.
    Client {
        /// Server ids, by index.
        servers: Vec<Id>,
        /// What it does.
        script: ClientScript,
        /// Its index among clients.
        index: usize,
    },
}

impl Actor {
    fn params(&self) -> Option<ServerParams> {
        match self {
            Actor::Server {
                index,
                backbone,
                cuts,
                setup,
            } => Some(ServerParams {
                index: *index,
                backbone: *backbone,
                cuts: *cuts,
                setup: *setup,
            }),
            _ => None,
        }
    }
}

impl stateright::actor::Actor for Actor {
    type Msg = Msg;
    type Timer = Timer;
    type State = State;
    type Storage = ();
    type Random = ();

    fn on_start(&self, _id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> State {
        match self {
            Actor::Server { .. } => {
                let params = self.params().expect("a server");
                State::Server(Box::new(seal(Log::default(), params.fresh())))
            }
            Actor::Backbone { lose_to } => State::Backbone(Box::new(BackboneState {
                hub: Hub::new(7),
                lose_to: *lose_to,
                withheld: None,
            })),
            Actor::Client {
                servers,
                script,
                index,
            } => {
                let mut state = ClientState {
                    me: *index,
                    server: Some(script.home),
                    conn: 0,
                    subs: vec![Sub::Idle; CHANNELS.len()],
                    pos: vec![None; CHANNELS.len()],
                    published: 0,
                    reconnects_left: script.reconnects,
                    silent: false,
                    got: BTreeSet::new(),
                    told_gap: false,
                    recovered_some: false,
                    violations: Vec::new(),
                };
                arm(servers, script, &mut state, o);
                State::Client(Box::new(state))
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<State>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (Actor::Server { .. }, State::Server(s)) => {
                if let Some(params) = self.params() {
                    params.handle(s, Input::Msg(src, msg), o);
                }
            }
            (Actor::Backbone { .. }, State::Backbone(b)) => backbone_msg(b, src, msg, o),
            (
                Actor::Client {
                    servers, script, ..
                },
                State::Client(c),
            ) => client_msg(c, servers, script, src, msg, o),
            _ => {}
        }
        let _ = id;
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<State>, timer: &Timer, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (Actor::Server { .. }, State::Server(s)) => match (self.params(), timer) {
                (Some(params), Timer::Cut) => params.handle(s, Input::Cut, o),
                (Some(params), Timer::Tick) => params.handle(s, Input::Tick, o),
                _ => {}
            },
            (
                Actor::Client {
                    servers, script, ..
                },
                State::Client(c),
            ) => client_timer(c, servers, script, timer, o),
            _ => {}
        }
    }
}

// -------------------------------------------------------------------------
// Servers

/// One masked client frame carrying `request` in JSON.
fn request_frame(id: u64, command: Command) -> BytesMut {
    let payload = protocol::encode_request(Encoding::Json, &Request { id, command });
    let mut out = BytesMut::new();
    frame::encode_masked(true, OpCode::Text, &payload, MASK, &mut out);
    out
}

fn server_msg(s: &mut Core, src: Id, backbone: Id, msg: Msg) {
    let now = s.t.now;
    if src == backbone {
        if let Msg::Ev(Opaque(event)) = msg {
            if event == BackboneEvent::Reset {
                s.t.link_down = false;
            } else if s.t.link_down {
                // In flight on the cut link: lost.
                return;
            }
            s.node.handle_backbone(now, event);
        }
        return;
    }
    // A client's connection is opened (handshake done) by its first
    // command; a command of an older connection is stale.
    let current = |s: &mut Core, conn: u32| match s.t.conns.get(&src) {
        _ if s.t.silent.contains_key(&src) => None,
        Some(&(c, id)) if c == conn => Some(id),
        Some(&(c, _)) if c > conn => None,
        _ => {
            let id = s
                .node
                .handle_connect(now, Endpoint::PubSub(Encoding::Json), &[]);
            s.t.conns.insert(src, (conn, id));
            Some(id)
        }
    };
    match msg {
        Msg::Subscribe { conn, ch, recover } => {
            if let Some(id) = current(s, conn) {
                let command = Command::Subscribe {
                    channel: CHANNELS[usize::from(ch)].to_string(),
                    recover: recover.map(|(epoch, offset)| StreamPosition { epoch, offset }),
                };
                let bytes = request_frame(SUB_RID + u64::from(ch), command);
                s.node.handle_read(now, id, &bytes);
            }
        }
        Msg::Publish { conn, ch, data } => {
            if let Some(id) = current(s, conn) {
                let command = Command::Publish {
                    channel: CHANNELS[usize::from(ch)].to_string(),
                    data: Payload::from_json(data.to_string().as_bytes())
                        .expect("a number is JSON"),
                };
                let bytes = request_frame(PUB_RID + u64::from(ch), command);
                s.node.handle_read(now, id, &bytes);
            }
        }
        Msg::Silent { conn } if s.t.conns.get(&src).is_some_and(|(c, _)| *c == conn) => {
            s.t.silent.insert(src, now);
        }
        Msg::Disconnect { conn } => {
            let id =
                s.t.conns
                    .get(&src)
                    .filter(|(c, _)| *c == conn)
                    .map(|(_, id)| *id);
            if let Some(id) = id {
                s.t.conns.remove(&src);
                s.node.handle_eof(now, id);
            }
        }
        _ => {}
    }
}

/// Drains the node in the documented order until it has nothing left:
/// backbone commands, bytes to write (decoded and sent to their clients),
/// finished connections.
fn drain(s: &mut Core, backbone: Id, o: &mut Out<Actor>) {
    let now = s.t.now;
    let mut out = Outbox::default();
    loop {
        let mut progress = false;
        while let Some(cmd) = s.node.poll_backbone() {
            progress = true;
            out.push(backbone, Msg::Cmd(Opaque(cmd)));
        }
        while let Some(id) = s.node.poll_transmit() {
            progress = true;
            let mut bytes = BytesMut::new();
            if let Some(queue) = s.node.queue(id) {
                for slice in queue.slices() {
                    bytes.extend_from_slice(slice);
                }
            }
            s.node.handle_written(now, id, bytes.len());
            let client = s.t.conns.iter().find(|(_, (_, c))| *c == id);
            let Some((&client, &(conn, _))) = client else {
                continue;
            };
            if s.t.silent.contains_key(&client) {
                continue; // nobody reads it
            }
            let mut pong = false;
            for msg in decode_frames(conn, bytes) {
                if let Msg::Ping { .. } = msg {
                    pong = true;
                } else {
                    out.push(client, msg);
                }
            }
            if pong {
                // The client's WebSocket stack answers pings by itself.
                let mut frame = BytesMut::new();
                frame::encode_masked(true, OpCode::Pong, b"", MASK, &mut frame);
                s.node.handle_read(now, id, &frame);
            }
        }
        while let Some(id) = s.node.poll_finished() {
            progress = true;
            let gone: Vec<Id> =
                s.t.conns
                    .iter()
                    .filter(|(_, (_, c))| *c == id)
                    .map(|(client, _)| *client)
                    .collect();
            for client in gone {
                s.t.conns.remove(&client);
                if let Some(since) = s.t.silent.remove(&client) {
                    s.t.expired = s.t.expired.saturating_add(1);
                    let waited = now.saturating_since(since);
                    if waited > HEARTBEAT_BOUND {
                        s.t.late.push(format!(
                            "silent connection dropped after {waited:?} (bound {HEARTBEAT_BOUND:?})"
                        ));
                    }
                }
            }
        }
        if !progress {
            break;
        }
    }
    out.send(o);
}

/// What a client makes of the server's bytes.
fn decode_frames(conn: u32, mut bytes: BytesMut) -> Vec<Msg> {
    let mut decoder = FrameDecoder::client(1 << 20);
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut bytes) {
            Ok(Some(f)) => match f.opcode {
                OpCode::Text => out.extend(decode_json(conn, &f.payload)),
                OpCode::Ping => out.push(Msg::Ping { conn }),
                OpCode::Close => {
                    let code = match f.payload.get(..2) {
                        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                        _ => 1005,
                    };
                    out.push(Msg::Closed { conn, code });
                }
                other => out.push(Msg::Garbage {
                    conn,
                    what: format!("{other:?} frame"),
                }),
            },
            Ok(None) => {
                if !bytes.is_empty() {
                    out.push(Msg::Garbage {
                        conn,
                        what: "partial frame".into(),
                    });
                }
                return out;
            }
            Err(e) => {
                out.push(Msg::Garbage {
                    conn,
                    what: e.to_string(),
                });
                return out;
            }
        }
    }
}

fn channel_index(name: &str) -> Option<u8> {
    CHANNELS
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The model's publication data: the number it published.
fn data_number(data: &Payload) -> Option<u64> {
    serde_json::from_slice(data.as_json()).ok()
}

/// What a client makes of one text message: the core's client-side decoder
/// ([`protocol::decode_server_message`]), then the abstract [`Msg`].
fn decode_json(conn: u32, payload: &[u8]) -> Option<Msg> {
    let garbage = |what: &str| {
        Some(Msg::Garbage {
            conn,
            what: format!("{what}: {}", String::from_utf8_lossy(payload)),
        })
    };
    let message = match protocol::decode_server_message(Encoding::Json, payload) {
        Ok(message) => message,
        Err(e) => return garbage(&e.to_string()),
    };
    let (rid, reply) = match message {
        ServerMessage::Push(push) => {
            let Some(ch) = channel_index(push.channel()) else {
                return garbage("push on an unknown channel");
            };
            return match push {
                Push::Pub { publication, .. } => match data_number(&publication.data) {
                    Some(data) => Some(Msg::Pub {
                        conn,
                        ch,
                        offset: publication.offset,
                        data,
                    }),
                    None => garbage("publication data not a model number"),
                },
                Push::Unsubscribe { code, .. } => Some(Msg::Unsubscribed {
                    conn,
                    ch,
                    code: code.into(),
                }),
                // join/leave are off in the default namespace.
                Push::Join { .. } | Push::Leave { .. } => garbage("unexpected push"),
            };
        }
        ServerMessage::Reply { id, reply } => (id, reply),
    };
    if (PUB_RID..PUB_RID + CHANNELS.len() as u64).contains(&rid) {
        // Publish replies (offset or error) carry nothing the properties
        // need; clients do not wait for them.
        return None;
    }
    let ch = rid
        .checked_sub(SUB_RID)
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| usize::from(*c) < CHANNELS.len());
    let Some(ch) = ch else {
        return garbage("reply to an unknown request");
    };
    match reply {
        Reply::Error(e) => Some(Msg::SubscribeFailed {
            conn,
            ch,
            code: e.code.code().into(),
        }),
        Reply::Subscribe {
            epoch,
            offset,
            recovery,
        } => {
            let recovery = match recovery {
                None => None,
                Some(r) => {
                    let pubs: Option<Vec<(u64, u64)>> = r
                        .publications
                        .iter()
                        .map(|p| data_number(&p.data).map(|d| (p.offset, d)))
                        .collect();
                    let Some(pubs) = pubs else {
                        return garbage("recovered data not a model number");
                    };
                    Some((r.recovered, pubs))
                }
            };
            Some(Msg::Subscribed {
                conn,
                ch,
                epoch,
                offset,
                recovery,
            })
        }
        _ => garbage("unexpected reply"),
    }
}

// -------------------------------------------------------------------------
// Backbone

fn backbone_msg(b: &mut BackboneState, src: Id, msg: Msg, o: &mut Out<Actor>) {
    let mut out = Outbox::default();
    backbone_one(b, src, msg, &mut out);
    out.send(o);
}

fn backbone_one(b: &mut BackboneState, src: Id, msg: Msg, out: &mut Outbox) {
    let node = NodeId(u32::try_from(usize::from(src)).unwrap_or(u32::MAX));
    match msg {
        Msg::Cmd(Opaque(cmd)) => b.hub.handle_command(NOW, node, cmd),
        Msg::Reconnect => {
            // Redis forgets a closed connection's subscriptions (and the
            // presence it refreshed); the stream (history) survives.
            b.hub.remove_node(NOW, node);
            // Whatever was in flight to it is lost with the link.
            if b.withheld.as_ref().is_some_and(|(to, _)| *to == src) {
                b.withheld = None;
            }
            flush_hub(b, out);
            out.push(src, Msg::Ev(Opaque(BackboneEvent::Reset)));
        }
        Msg::Batch(msgs) => {
            for msg in msgs {
                backbone_one(b, src, msg, out);
            }
        }
        _ => {}
    }
    flush_hub(b, out);
}

fn flush_hub(b: &mut BackboneState, out: &mut Outbox) {
    while let Some((to, event)) = b.hub.poll_event() {
        let to = Id::from(to.0 as usize);
        if let BackboneEvent::Publication { channel, .. } = &event {
            if b.lose_to == Some(to) {
                b.lose_to = None;
                b.withheld = Some((to, channel.clone()));
                continue;
            }
            if b.withheld.as_ref() == Some(&(to, channel.clone())) {
                b.withheld = None;
            }
        }
        out.push(to, Msg::Ev(Opaque(event)));
    }
}

// -------------------------------------------------------------------------
// Clients

/// What a connected client does next: (re)subscribe at once to every
/// channel of its script it is not subscribed to (with recover when it has
/// a position), and, once all are live, arm the timers of its other
/// actions (publish, disconnect).
fn arm(servers: &[Id], script: &ClientScript, c: &mut ClientState, o: &mut Out<Actor>) {
    let Some(server) = c.server.and_then(|s| servers.get(s).copied()) else {
        return;
    };
    for &ch in &script.subscribe {
        let i = usize::from(ch);
        if c.subs.get(i) == Some(&Sub::Idle) {
            let recover = c.pos.get(i).cloned().flatten();
            c.subs[i] = Sub::Pending(recover.clone());
            o.send(
                server,
                Msg::Subscribe {
                    conn: c.conn,
                    ch,
                    recover,
                },
            );
        }
    }
    let all_live = script
        .subscribe
        .iter()
        .all(|&ch| matches!(c.subs.get(usize::from(ch)), Some(Sub::Live { .. })));
    if !all_live {
        return;
    }
    if c.published < script.publish.len() {
        o.set_timer(Timer::Publish, model_timeout());
    }
    if c.reconnects_left > 0 {
        o.set_timer(Timer::Disconnect, model_timeout());
    }
    if script.silent && !c.silent {
        o.set_timer(Timer::GoSilent, model_timeout());
    }
}

/// The connection ended: every subscription with it (positions are kept).
fn disconnected(c: &mut ClientState) {
    c.server = None;
    for sub in &mut c.subs {
        *sub = Sub::Idle;
    }
}

fn client_timer(
    c: &mut ClientState,
    servers: &[Id],
    script: &ClientScript,
    timer: &Timer,
    o: &mut Out<Actor>,
) {
    let Some(server) = c.server.and_then(|s| servers.get(s).copied()) else {
        if let Timer::Connect(j) = *timer {
            let Some(&to) = servers.get(j) else { return };
            for k in 0..servers.len() {
                o.cancel_timer(Timer::Connect(k));
            }
            c.conn += 1;
            c.server = Some(j);
            let _ = to;
            arm(servers, script, c, o);
        }
        return;
    };
    if c.silent {
        return;
    }
    let conn = c.conn;
    match *timer {
        Timer::GoSilent => {
            c.silent = true;
            o.send(server, Msg::Silent { conn });
            for t in [Timer::Publish, Timer::Disconnect] {
                o.cancel_timer(t);
            }
        }
        Timer::Publish => {
            if let Some(&ch) = script.publish.get(c.published) {
                c.published += 1;
                // Unique data: client index and publication number.
                let data = c.me as u64 * 100 + c.published as u64;
                o.send(server, Msg::Publish { conn, ch, data });
                if c.published < script.publish.len() {
                    o.set_timer(Timer::Publish, model_timeout());
                }
            }
        }
        Timer::Disconnect => {
            if c.reconnects_left > 0 {
                c.reconnects_left -= 1;
                o.send(server, Msg::Disconnect { conn });
                disconnected(c);
                for sub in [Timer::Publish, Timer::Disconnect] {
                    o.cancel_timer(sub);
                }
                for k in 0..servers.len() {
                    o.set_timer(Timer::Connect(k), model_timeout());
                }
            }
        }
        Timer::Connect(_) | Timer::Cut | Timer::Tick => {}
    }
}

fn client_msg(
    c: &mut ClientState,
    servers: &[Id],
    script: &ClientScript,
    src: Id,
    msg: Msg,
    o: &mut Out<Actor>,
) {
    if let Msg::Batch(msgs) = msg {
        for msg in msgs {
            client_msg(c, servers, script, src, msg, o);
        }
        return;
    }
    if c.silent {
        return; // reads nothing any more
    }
    client_one(c, servers, src, msg, o);
    arm(servers, script, c, o);
}

fn client_one(c: &mut ClientState, servers: &[Id], src: Id, msg: Msg, o: &mut Out<Actor>) {
    let Some(server) = c.server else { return };
    if servers.get(server) != Some(&src) {
        return; // from a connection it has left
    }
    let conn = c.conn;
    match msg {
        Msg::Subscribed {
            conn: k,
            ch,
            epoch,
            offset,
            recovery,
        } if k == conn => {
            let i = usize::from(ch);
            let Some(Sub::Pending(from)) = c.subs.get(i).cloned() else {
                c.violations
                    .push(format!("unexpected subscribe reply on {ch}"));
                return;
            };
            if let (Some((from_epoch, from_off)), Some((recovered, pubs))) = (&from, &recovery) {
                if *recovered {
                    let want: Vec<u64> = (from_off + 1..=offset).collect();
                    let got: Vec<u64> = pubs.iter().map(|p| p.0).collect();
                    if *from_epoch != epoch || got != want {
                        c.violations.push(format!(
                            "recovered:true from ({from_epoch}, {from_off}) gave {pubs:?} \
                             up to ({epoch}, {offset}), want {want:?}"
                        ));
                    }
                    if !pubs.is_empty() {
                        c.recovered_some = true;
                    }
                    for &(p, data) in pubs {
                        c.got.insert((server, ch, epoch.clone(), p, data));
                    }
                } else {
                    c.told_gap = true;
                }
            }
            c.subs[i] = Sub::Live {
                epoch: epoch.clone(),
                last: offset,
            };
            c.pos[i] = Some((epoch, offset));
        }
        Msg::SubscribeFailed { conn: k, ch, .. } if k == conn => {
            if let Some(sub) = c.subs.get_mut(usize::from(ch)) {
                *sub = Sub::Idle;
            }
        }
        Msg::Pub {
            conn: k,
            ch,
            offset,
            data,
        } if k == conn => {
            let i = usize::from(ch);
            match c.subs.get(i).cloned() {
                Some(Sub::Live { epoch, last }) => {
                    if offset <= last {
                        c.violations.push(format!(
                            "order/duplicate: offset {offset} after {last} on {}",
                            CHANNELS[i]
                        ));
                    } else if offset > last + 1 {
                        c.violations.push(format!(
                            "silent gap: offset {offset} after {last} on {}",
                            CHANNELS[i]
                        ));
                    }
                    c.got.insert((server, ch, epoch.clone(), offset, data));
                    let last = last.max(offset);
                    c.subs[i] = Sub::Live {
                        epoch: epoch.clone(),
                        last,
                    };
                    c.pos[i] = Some((epoch, last));
                }
                _ => c
                    .violations
                    .push(format!("publication {offset} on unsubscribed {ch}")),
            }
        }
        Msg::Unsubscribed { conn: k, ch, code } if k == conn => {
            if code == u64::from(unsubscribe_code::INSUFFICIENT_STATE) {
                c.told_gap = true;
            }
            if let Some(sub) = c.subs.get_mut(usize::from(ch)) {
                *sub = Sub::Idle;
            }
        }
        Msg::Closed { conn: k, code } if k == conn => {
            if code == close::INSUFFICIENT_STATE.0 {
                c.told_gap = true;
            }
            // Answer as a client that goes away: end the transport.
            o.send(src, Msg::Disconnect { conn });
            disconnected(c);
        }
        Msg::Garbage { conn: k, what } if k == conn => {
            c.violations.push(format!("garbage from server: {what}"));
        }
        _ => {}
    }
}

// -------------------------------------------------------------------------
// Properties

type ModelState = stateright::actor::ActorModelState<Actor, ()>;

fn servers(state: &ModelState) -> impl Iterator<Item = (usize, &ServerState)> {
    state
        .actor_states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &**s {
            State::Server(s) => Some((i, &**s)),
            _ => None,
        })
}

/// Every client's state with its index among clients.
fn clients(state: &ModelState) -> impl Iterator<Item = (usize, &ClientState)> {
    state.actor_states.iter().filter_map(|s| match &**s {
        State::Client(c) => Some((c.me, &**c)),
        _ => None,
    })
}

fn hub(state: &ModelState) -> Option<&Hub> {
    state.actor_states.iter().find_map(|s| match &**s {
        State::Backbone(b) => Some(&b.hub),
        _ => None,
    })
}

/// Nothing is in flight (no message, no publication awaiting its loss, no
/// silent connection awaiting its heartbeat expiry).
pub fn quiescent(state: &ModelState) -> bool {
    state.network.len() == 0
        && hub_state(state).is_none_or(|b| b.withheld.is_none())
        && servers(state).all(|(_, s)| s.t.silent.is_empty())
}

/// Clients still taking part (not silent).
fn active(state: &ModelState) -> impl Iterator<Item = (usize, &ClientState)> {
    clients(state).filter(|(_, c)| !c.silent)
}

fn hub_state(state: &ModelState) -> Option<&BackboneState> {
    state.actor_states.iter().find_map(|s| match &**s {
        State::Backbone(b) => Some(&**b),
        _ => None,
    })
}

/// Violations a client recorded (order, duplicates, silent gaps within a
/// subscription, wrong recovery, garbage frames).
pub fn client_violations(state: &ModelState) -> Vec<String> {
    clients(state)
        .flat_map(|(i, c)| c.violations.iter().map(move |v| format!("client {i}: {v}")))
        .collect()
}

/// Publications that two clients saw with different data at the same
/// (channel, epoch, offset): the channel's order is not one order.
pub fn order_conflicts(state: &ModelState) -> Vec<String> {
    let mut seen: BTreeMap<(u8, &str, u64), (usize, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, c) in clients(state) {
        for (_, ch, epoch, off, data) in &c.got {
            match seen.get(&(*ch, epoch.as_str(), *off)) {
                Some(&(j, d)) if d != *data => out.push(format!(
                    "{} offset {off}: client {j} got data {d}, client {i} got {data}",
                    CHANNELS[usize::from(*ch)]
                )),
                Some(_) => {}
                None => {
                    seen.insert((*ch, epoch, *off), (i, *data));
                }
            }
        }
    }
    out
}

/// At quiescence, every live subscription has received everything the
/// backbone sequenced in its epoch.
pub fn missing_deliveries(state: &ModelState) -> Vec<String> {
    let mut out = Vec::new();
    if !quiescent(state) {
        return out;
    }
    let Some(hub) = hub(state) else { return out };
    let stats = hub.channels();
    for (i, c) in active(state) {
        for (ch, sub) in c.subs.iter().enumerate() {
            if let Sub::Live { epoch, last } = sub {
                let top = stats.iter().find(|s| s.name == CHANNELS[ch]);
                match top {
                    Some(s) if s.epoch == *epoch && s.top == *last => {}
                    Some(s) => out.push(format!(
                        "client {i} on {} has ({epoch}, {last}), backbone has ({}, {})",
                        CHANNELS[ch], s.epoch, s.top
                    )),
                    None => out.push(format!(
                        "client {i} live on {} which the backbone dropped",
                        CHANNELS[ch]
                    )),
                }
            }
        }
    }
    out
}

/// At quiescence: each server's backbone subscriptions are exactly its
/// channels with local subscribers, and nothing remains of closed
/// connections (connections, subscriptions, requests, queued bytes,
/// timers, presence).
pub fn leaks(cfg: &Config, state: &ModelState) -> Vec<String> {
    let mut out = Vec::new();
    if !quiescent(state) {
        return out;
    }
    let Some(hub) = hub(state) else { return out };
    let stats = hub.channels();
    let clients: Vec<(usize, &ClientState)> = active(state).collect();
    for (i, s) in servers(state) {
        let node = &s.summary;
        let local: BTreeSet<&str> = node.channels.keys().map(String::as_str).collect();
        let subscribed: BTreeSet<&str> = stats
            .iter()
            .filter(|c| c.nodes.contains(&NodeId(i as u32)))
            .map(|c| c.name.as_str())
            .collect();
        if local != subscribed {
            out.push(format!(
                "server {i}: local channels {local:?}, backbone subscriptions {subscribed:?}"
            ));
        }
        let here: Vec<&(usize, &ClientState)> = clients
            .iter()
            .filter(|(_, c)| c.server == Some(i))
            .collect();
        if node.connections != here.len() || s.t.conns.len() != here.len() {
            out.push(format!(
                "server {i}: {} connections in the node, {} hosted, {} clients connected",
                node.connections,
                s.t.conns.len(),
                here.len()
            ));
        }
        if node.requests != 0 {
            out.push(format!(
                "server {i}: {} requests in flight at quiescence",
                node.requests
            ));
        }
        if node.queued_bytes != 0 {
            out.push(format!("server {i}: {} bytes queued", node.queued_bytes));
        }
        if node.timers != node.connections {
            out.push(format!(
                "server {i}: {} timers for {} connections",
                node.timers, node.connections
            ));
        }
        for (ch, name) in CHANNELS.iter().enumerate() {
            let live = here
                .iter()
                .filter(|(_, c)| matches!(c.subs.get(ch), Some(Sub::Live { .. })))
                .count();
            if node.channels.get(*name).copied().unwrap_or(0) != live {
                out.push(format!(
                    "server {i}: {} subscribers of {name}, {live} clients subscribed",
                    node.channels.get(*name).copied().unwrap_or(0)
                ));
            }
        }
    }
    for (ch, name) in CHANNELS.iter().enumerate() {
        let live = clients
            .iter()
            .filter(|(_, c)| matches!(c.subs.get(ch), Some(Sub::Live { .. })))
            .count();
        let present = hub.presence(name).len();
        if present != live {
            out.push(format!("{present} present in {name}, {live} subscribed"));
        }
    }
    let _ = cfg;
    out
}

fn add_properties(model: ActorModel<Actor, Config, ()>) -> ActorModel<Actor, Config, ()> {
    model
        .property(
            Expectation::Always,
            "one order, no duplicates, no silent gap, exact recovery",
            |_, s| client_violations(s).is_empty() && order_conflicts(s).is_empty(),
        )
        .property(
            Expectation::Always,
            "quiescent: every publication delivered",
            |_, s| missing_deliveries(s).is_empty(),
        )
        .property(Expectation::Always, "quiescent: no leaks", |m, s| {
            leaks(&m.cfg, s).is_empty()
        })
        .property(
            Expectation::Always,
            "heartbeat: a silent peer is dropped in time",
            |_, s| servers(s).all(|(_, s)| s.t.late.is_empty()),
        )
        .property(
            Expectation::Sometimes,
            "a silent peer dropped by the heartbeat",
            |_, s| servers(s).any(|(_, s)| s.t.expired > 0),
        )
        .property(
            Expectation::Sometimes,
            "a publication delivered on two servers",
            |_, s| {
                let mut seen: BTreeMap<(u8, &str, u64), BTreeSet<usize>> = BTreeMap::new();
                for (_, c) in clients(s) {
                    for (server, ch, epoch, off, _) in &c.got {
                        seen.entry((*ch, epoch, *off)).or_default().insert(*server);
                    }
                }
                seen.values().any(|servers| servers.len() >= 2)
            },
        )
        .property(
            Expectation::Sometimes,
            "a recovery with recovered:true",
            |_, s| clients(s).any(|(_, c)| c.recovered_some),
        )
        .property(Expectation::Sometimes, "a gap signalled", |_, s| {
            clients(s).any(|(_, c)| c.told_gap)
        })
        .property(
            Expectation::Sometimes,
            "publishes from two servers in flight at once",
            |_, s| {
                // (`Network::iter_all` loops forever on an ordered network in
                // stateright 0.31: read the links directly.)
                let Network::Ordered(links) = &s.network else {
                    return false;
                };
                let from: BTreeSet<Id> = links
                    .iter()
                    .filter(|(_, msgs)| {
                        msgs.iter()
                            .any(|m| matches!(m, Msg::Cmd(Opaque(BackboneCommand::Publish { .. }))))
                    })
                    .map(|((src, _), _)| *src)
                    .collect();
                from.len() >= 2
            },
        )
}

/// Result of a check.
#[derive(Debug)]
pub struct Outcome {
    /// Unique states explored.
    pub unique_states: usize,
    /// States generated (with repeats).
    pub states: usize,
    /// Deepest path explored.
    pub max_depth: usize,
    /// Each property: name, and the path that discovered it (a
    /// counterexample for `Always`, a witness for `Sometimes`).
    pub discoveries: BTreeMap<&'static str, String>,
    /// Names of the `Always` properties.
    pub always: Vec<&'static str>,
    /// Names of the `Sometimes` properties.
    pub sometimes: Vec<&'static str>,
}

/// Explores `cfg` breadth first to `depth` steps (0: all of it) with
/// `threads` threads.
pub fn check(cfg: Config, depth: usize, threads: usize) -> Outcome {
    run(cfg, depth, threads, false)
}

/// Like [`check`], but stops at the first violated `Always` property (for
/// hunting counterexamples; state counts then vary between runs).
pub fn find_violation(cfg: Config, depth: usize, threads: usize) -> Outcome {
    run(cfg, depth, threads, true)
}

fn run(cfg: Config, depth: usize, threads: usize, stop_at_failure: bool) -> Outcome {
    let model = cfg.into_model();
    let props = model.properties();
    let always = props
        .iter()
        .filter(|p| p.expectation == Expectation::Always)
        .map(|p| p.name)
        .collect();
    let sometimes = props
        .iter()
        .filter(|p| p.expectation == Expectation::Sometimes)
        .map(|p| p.name)
        .collect();
    let mut checker = model.checker().threads(threads);
    if depth > 0 {
        checker = checker.target_max_depth(depth);
    }
    if stop_at_failure {
        checker = checker.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    let checker = checker.spawn_bfs().join();
    let discoveries = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| (name, format_path(checker.model(), path)))
        .collect();
    Outcome {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
        discoveries,
        always,
        sometimes,
    }
}

/// A path as readable steps: each action, then what the last state
/// violates.
fn format_path(
    model: &ActorModel<Actor, Config, ()>,
    path: stateright::Path<ModelState, <ActorModel<Actor, Config, ()> as Model>::Action>,
) -> String {
    let mut out = String::new();
    let last = Arc::new(path.last_state().clone());
    for (n, action) in path.into_actions().into_iter().enumerate() {
        out.push_str(&format!("{:3}. {}\n", n + 1, describe(model, &action)));
    }
    let late =
        servers(&last).flat_map(|(i, s)| s.t.late.iter().map(move |l| format!("server {i}: {l}")));
    for v in client_violations(&last)
        .into_iter()
        .chain(order_conflicts(&last))
        .chain(late.collect::<Vec<_>>())
        .chain(missing_deliveries(&last))
        .chain(leaks(&model.cfg, &last))
    {
        out.push_str(&format!("  => {v}\n"));
    }
    out
}

fn actor_name(cfg: &Config, id: Id) -> String {
    let i = usize::from(id);
    if i < cfg.servers {
        format!("server{i}")
    } else if i == cfg.servers {
        "backbone".into()
    } else {
        format!("client{}", i - cfg.servers - 1)
    }
}

fn describe(
    model: &ActorModel<Actor, Config, ()>,
    action: &<ActorModel<Actor, Config, ()> as Model>::Action,
) -> String {
    use stateright::actor::ActorModelAction as A;
    let cfg = &model.cfg;
    match action {
        A::Deliver { src, dst, msg } => {
            let msg = match msg {
                Msg::Cmd(Opaque(c)) => format!("{c:?}"),
                Msg::Ev(Opaque(e)) => format!("{e:?}"),
                m => format!("{m:?}"),
            };
            format!(
                "{} -> {}: {msg}",
                actor_name(cfg, *src),
                actor_name(cfg, *dst)
            )
        }
        A::Timeout(id, t) => format!("{} does {t:?}", actor_name(cfg, *id)),
        other => format!("{other:?}"),
    }
}
