//! The server actor: its state ([`ServerState`]: a replay log and digest
//! of its `wavecast_core` node, the transports it hosts), the per-thread
//! node cache, and how the node handles a client's or the backbone's
//! message and is drained of what it sends.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;
use stateright::actor::{model_timeout, Id, Out};
use wavecast_core::backbone::BackboneEvent;
use wavecast_core::frame::{self, OpCode};
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{close, Command, Encoding, Payload, StreamPosition};
use wavecast_core::Timestamp;

use crate::msg::Outbox;
use crate::wire::{decode_frames, request_frame, CONNECT_RID, MASK, PUB_RID, SUB_RID};
use crate::{auth, Actor, Msg, Opaque, Timer, CHANNELS, EXPIRY_CLOSE};

/// How long after going silent a peer's connection may still be held:
/// heartbeat interval + heartbeat timeout (when it is closed) + close
/// timeout (when the transport is dropped), with the default settings.
const HEARTBEAT_BOUND: std::time::Duration = std::time::Duration::from_secs(25 + 10 + 5);

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
/// replay in the common case (see `core_of`).
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
    /// Connections authenticated with an expiring token, not yet closed:
    /// client -> when the node must close them (`exp` + refresh grace).
    pub expiring: BTreeMap<Id, Timestamp>,
    /// Connections closed (4005) at their token's expiry so far.
    pub token_closes: u8,
    /// Token expiry closes too early, or missing once due.
    pub token_errors: Vec<String>,
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
pub(crate) struct Log(Option<Arc<(Input, Log)>>);

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
pub(crate) enum Input {
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
pub(crate) struct Core {
    node: Node,
    t: Transport,
}

/// The server actor's fixed parameters.
#[derive(Clone, Copy)]
pub(crate) struct ServerParams {
    pub(crate) index: usize,
    pub(crate) backbone: Id,
    pub(crate) cuts: u8,
    pub(crate) setup: Option<fn(&mut Node)>,
    /// The node authenticates (`Config::auth`).
    pub(crate) auth: bool,
}

impl ServerParams {
    pub(crate) fn fresh(&self) -> Core {
        let client_prefix = format!("s{}-", self.index);
        let config = if self.auth {
            auth::node_config(client_prefix)
        } else {
            NodeConfig {
                client_prefix,
                ..NodeConfig::default()
            }
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
                expiring: BTreeMap::new(),
                token_closes: 0,
                token_errors: Vec::new(),
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
                    // With authentication, time stops one microsecond
                    // before each deadline first: nothing may fire early.
                    let before = at - std::time::Duration::from_micros(1);
                    let at = if self.auth && core.t.now < before {
                        before
                    } else {
                        at
                    };
                    core.t.now = core.t.now.max(at);
                    core.node.handle_timeout(core.t.now);
                }
            }
        }
        drain(core, self.backbone, o);
        overdue(&mut core.t, self.backbone);
        // The link may be cut once the node holds a channel (before, a cut
        // changes nothing).
        if core.t.cuts_left > 0 && !core.t.link_down && core.node.channels().next().is_some() {
            o.set_timer(Timer::Cut, model_timeout());
        }
        // Time moves only while a silent connection, or one whose token
        // expires, is held: that is when it matters (heartbeat expiry,
        // token expiry); otherwise every peer answers pings at once and a
        // tick changes nothing of interest.
        let timed = !core.t.silent.is_empty() || !core.t.expiring.is_empty();
        if timed && core.node.poll_timeout().is_some() {
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
    pub(crate) fn handle(&self, s: &mut ServerState, input: Input, o: &mut Out<Actor>) {
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

pub(crate) fn seal(log: Log, core: Core) -> ServerState {
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
        Msg::Connect { conn, token } => {
            if let Some(id) = current(s, conn) {
                let command = Command::Connect {
                    token: auth::token(token),
                    data: None,
                    ping: false,
                };
                let bytes = request_frame(CONNECT_RID, command);
                s.node.handle_read(now, id, &bytes);
            }
        }
        Msg::Subscribe { conn, ch, recover } => {
            if let Some(id) = current(s, conn) {
                let command = Command::Subscribe {
                    channel: CHANNELS[usize::from(ch)].to_string(),
                    recover: recover.map(|(epoch, offset)| StreamPosition { epoch, offset }),
                    token: None,
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

/// A close frame to `client` at `now`: a token expiry close (4005) must
/// come at or after its token's deadline; any close ends the wait for it.
fn closed(t: &mut Transport, client: Id, backbone: Id, code: u16, now: Timestamp) {
    let due = t.expiring.remove(&client);
    if code != close::TOKEN_EXPIRED.0 {
        return;
    }
    let client = client_name(client, backbone);
    match due {
        Some(at) if now >= at => t.token_closes = t.token_closes.saturating_add(1),
        Some(at) => t.token_errors.push(format!(
            "{client} closed 4005 at {now:?}, before its token's exp + grace {at:?}"
        )),
        None => t.token_errors.push(format!(
            "{client} closed 4005 at {now:?} without an expiring token"
        )),
    }
}

/// Clients' actor ids follow the backbone's.
fn client_name(client: Id, backbone: Id) -> String {
    let index = usize::from(client).saturating_sub(usize::from(backbone) + 1);
    format!("client {index}")
}

/// After a step: a connection whose token's deadline has passed and that
/// was not closed is a violation; connections gone otherwise are
/// forgotten.
fn overdue(t: &mut Transport, backbone: Id) {
    let Transport {
        conns,
        expiring,
        now,
        token_errors,
        ..
    } = t;
    expiring.retain(|client, at| {
        if !conns.contains_key(client) {
            return false;
        }
        if *now >= *at {
            token_errors.push(format!(
                "{} still open at {now:?}, its token's exp + grace was {at:?}",
                client_name(*client, backbone)
            ));
            return false;
        }
        true
    });
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
                match &msg {
                    Msg::Ping { .. } => {
                        pong = true;
                        continue;
                    }
                    // Only the valid token names a user, and it expires.
                    Msg::Connected {
                        user, ttl: Some(_), ..
                    } if !user.is_empty() => {
                        s.t.expiring.insert(client, EXPIRY_CLOSE);
                    }
                    Msg::Closed { code, .. } => closed(&mut s.t, client, backbone, *code, now),
                    _ => {}
                }
                out.push(client, msg);
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
