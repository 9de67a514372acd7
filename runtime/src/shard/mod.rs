//! One worker: a single-threaded runtime that owns a core `Node` and the
//! sockets of its connections.
//!
//! A new TCP connection gets a short-lived task (`accept.rs`) that reads
//! its request head (`http_timeout`, 8 KiB) and either upgrades it or hands
//! it to the HTTP side (`http.rs`, with the bytes already read put back in
//! front by `io.rs`), which holds a slot of `max_http_connections` (503
//! beyond it) until hyper lets the socket go. Once upgraded, the socket
//! leaves tokio: it joins the shard's one epoll set ([`Poller`]) and costs
//! a 32-byte slot here (a TLS one also its rustls session, `tls/`),
//! with no task and no tokio registration of its own
//! (4 more, its client's IPv4 address, while `max_connections_per_ip` is
//! on: the address's slot is given back with the connection's).
//! One task waits for the epoll set to be ready, reads each ready socket
//! once into the shard's one scratch buffer and straight into the node
//! (which keeps only a partial-frame remainder), then drives the node's
//! outputs: it writes each listed connection's queue with one vectored
//! write, drops finished transports, and re-arms the one timer of the shard
//! at the node's earliest deadline. All of it runs on one thread, so the
//! `RefCell`s here are never contended and nothing takes a lock.
//!
//! What the node asks outside (`Node::poll_ask`: backend proxy calls, a
//! fresh token key set) is drained after every input with the rest of its
//! outputs and handed to [`crate::outbound`], whose tasks run on the
//! server's runtime, not here; the answers come back through the inbox
//! like backbone events. A connection keeps its handshake headers named in
//! `proxy_headers` (only those, and only when the list is not empty) for
//! the proxy requests made for it.
//!
//! The HTTP side also serves what needs the shard's node but no
//! connection of its own: an SSE stream request becomes a node connection
//! (`sse.rs`), and a client's call over HTTP (`call.rs`) is admitted by
//! the node (its key set and rules) before it goes to the backbone.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::LocalSet;

use wavecast_core::backbone::NodeId;
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::handshake::HandshakeConfig;
use wavecast_core::message::CloseCode;
use wavecast_core::node::{Ask, ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{self, SUBPROTOCOLS};
use wavecast_core::queue::MAX_SLICES;
use wavecast_core::Timestamp;

use crate::config::Config;
use crate::instance;
use crate::mailbox::{Control, ShardInbox, ShardInfo, ShardMetrics, ShardMsg};
use crate::outbound::ForwardedHeaders;
use crate::shared::Shared;
use crate::status::data::{unix_ms, Closed, RecentCloses, ShardStatus, TOP_QUEUED};
use crate::sys::per_ip::PeerTable;
use crate::sys::poller::{Events, Interest, Poller};

mod accept;
mod call;
mod http;
mod io;
mod sse;
mod tls;

pub(crate) use accept::{admit, adopt};

/// How long shutdown waits for connections to finish their close handshake.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Bytes read from a socket at once, into the shard's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// Readiness reports taken from the epoll set at once.
const EVENTS: usize = 256;
/// Inbox messages handled between two writes of what they queued: a large
/// batch (the sequencer catching up) goes out while it is handled, so a
/// reader that keeps up is never taken for a slow one because one batch
/// was larger than its budget.
const INBOX_SLICE: usize = 64;

/// The socket side of one upgraded connection.
struct ConnIo {
    /// Non-blocking, in the shard's epoll set while `watched`.
    stream: std::net::TcpStream,
    /// Over TLS: the session, driven by the shard (`tls.rs`).
    tls: Option<Box<tls::Session>>,
    /// The connection this socket belongs to (the slot's current tenant).
    id: ConnId,
    /// The kernel refused bytes: wait for writability before writing again.
    want_write: bool,
    /// Still in the epoll set. Taken out at end of stream or on an error,
    /// so a dead socket is not reported again while the node finishes it.
    watched: bool,
    /// Not read: the node holds input of this connection until replies
    /// to its earlier commands drain (`Node::poll_reading`).
    paused: bool,
    /// When it was upgraded, in [`OPEN_TICK`]s of the shared clock,
    /// wrapping (`u32` of 10 ms: 497 days; durations are taken with a
    /// wrapping subtraction, so only a connection open longer than that
    /// is misreported). What the status page's last closes show as a
    /// duration; 4 bytes per connection (with the TLS pointer the slot is 32).
    opened: u32,
}

/// The unit of [`ConnIo::opened`].
const OPEN_TICK: Duration = Duration::from_millis(10);

/// The shared clock's `now` in [`OPEN_TICK`]s, wrapping.
fn open_ticks(now: Timestamp) -> u32 {
    (now.as_micros() / OPEN_TICK.as_micros() as u64) as u32
}

impl ConnIo {
    /// What the epoll set should report for this socket.
    fn interest(&self) -> Interest {
        match (self.paused, self.want_write) {
            (false, false) => Interest::Read,
            (false, true) => Interest::ReadWrite,
            (true, false) => Interest::Nothing,
            (true, true) => Interest::Write,
        }
    }
}

/// One worker's state.
pub struct Shard {
    index: usize,
    shared: Arc<Shared>,
    node: RefCell<Node>,
    /// Upgraded sockets by the node's slot index (the epoll key).
    ios: RefCell<Vec<Option<ConnIo>>>,
    /// The last closed connections, for the status page (filled while
    /// `status` is on; at most `RECENT_CLOSES`).
    recent: RefCell<RecentCloses>,
    /// Whether the status page is on (`status`), kept here as the
    /// handshake and SSE rules are (replaced on a reload): the close path
    /// asks it for every close, and the shared config is behind a lock.
    status: Cell<bool>,
    /// The client address of each upgraded socket, by the same index
    /// (4 bytes for IPv4); kept (and allocated) only while
    /// `max_connections_per_ip` is on, the one thing that needs it: to
    /// give the address's slot back.
    peers: RefCell<PeerTable>,
    /// The handshake headers the proxies forward, by slot index, of the
    /// connections that sent any (empty unless `proxy_headers` is set).
    forwarded: RefCell<HashMap<usize, (ConnId, ForwardedHeaders)>>,
    poller: AsyncFd<Poller>,
    scratch: RefCell<Box<[u8]>>,
    /// The handshake's rules (allowed origins; a reload replaces them).
    handshake: RefCell<HandshakeConfig>,
    /// The rules of SSE stream requests (`sse.rs`; a reload replaces them).
    sse: RefCell<wavecast_core::sse::SseConfig>,
    /// State of the shard's random numbers (SSE `retry:` jitter).
    rng: Cell<u64>,
    /// The deadline the timer task sleeps until.
    armed: Cell<Option<Timestamp>>,
    rearm: Notify,
    /// What the shard counts beside its node (refused handshakes, fan-out
    /// latency); read by `/metrics` through the inbox.
    metrics: RefCell<ShardMetrics>,
    /// TLS handshakes in progress (at most `tls_max_handshakes`).
    tls_handshakes: Cell<usize>,
    /// TLS records encrypted for one socket write (`tls/socket.rs`).
    tls_out: RefCell<Vec<u8>>,
    /// Plaintext gathered into one TLS record (`tls/socket.rs`).
    tls_plain: RefCell<Vec<u8>>,
}

impl Shard {
    /// Must be called inside the shard's tokio runtime (the epoll set is
    /// registered with it).
    fn new(index: usize, shared: Arc<Shared>) -> std::io::Result<Self> {
        let c = shared.config.get();
        // SAFETY: `Poller` owns its epoll fd and returns that same fd from
        // `as_raw_fd` until it is dropped, which is what tokio requires.
        let poller = unsafe {
            AsyncFd::register_with_interest(Poller::new()?, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Shard {
            index,
            node: RefCell::new(Node::new(node_config(&c, &shared, index))),
            ios: RefCell::new(Vec::new()),
            recent: RefCell::new(RecentCloses::default()),
            status: Cell::new(c.status),
            peers: RefCell::new(PeerTable::default()),
            forwarded: RefCell::new(HashMap::new()),
            poller,
            scratch: RefCell::new(vec![0; SCRATCH].into_boxed_slice()),
            handshake: RefCell::new(handshake_config(&c)),
            sse: RefCell::new(c.sse()),
            rng: Cell::new(seed(index)),
            armed: Cell::new(None),
            rearm: Notify::new(),
            metrics: RefCell::new(ShardMetrics::default()),
            tls_handshakes: Cell::new(0),
            tls_out: RefCell::new(Vec::new()),
            tls_plain: RefCell::new(Vec::new()),
            shared,
        })
    }

    /// The core's notion of now.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// State shared by every shard.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The handshake's limits (head size), which later heads on an HTTP
    /// keep-alive connection get too.
    pub(crate) fn handshake(&self) -> std::cell::Ref<'_, HandshakeConfig> {
        self.handshake.borrow()
    }

    /// True once shutdown has started.
    pub fn shutting_down(&self) -> bool {
        self.shared.shutting_down()
    }

    /// Counts a handshake refused before a connection was made (its
    /// status read from the response the core built) and gives the
    /// response back, to be sent.
    pub(crate) fn refuse(&self, response: Vec<u8>) -> Vec<u8> {
        let status = status_of(&response);
        *self.metrics.borrow_mut().refused.entry(status).or_default() += 1;
        response
    }

    /// A pseudo-random number (xorshift64*: jitter, not secrets).
    fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Remembers the client address of the upgraded socket at `index`,
    /// while the per-address limit is on (it is read back only to give the
    /// address's slot back).
    fn set_peer(&self, index: usize, peer: IpAddr) {
        if !self.shared.connections_per_ip.is_on() {
            return;
        }
        self.peers.borrow_mut().insert(index, peer);
    }

    /// The client address of the upgraded socket at `index`, as
    /// [`Shard::set_peer`] kept it, forgotten; with the limit off (nothing
    /// kept, and nothing counted per address) the unspecified address.
    fn take_peer(&self, index: usize) -> IpAddr {
        let peer = self.peers.borrow_mut().take(index);
        debug_assert!(
            peer.is_some() || !self.shared.connections_per_ip.is_on(),
            "no address kept for connection slot {index}"
        );
        peer.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    }

    /// Writes what the node queued, drops finished transports, re-arms the
    /// timer. Called after every input to the node (after each batch of
    /// socket reads, inbox messages or timer firings).
    fn drive(&self) {
        let now = self.now();
        // Asks first: one answered at once (too many proxy calls in
        // flight) is more input, whose outputs the steps below take.
        loop {
            let ask = self.node.borrow_mut().poll_ask();
            let Some(ask) = ask else { break };
            self.ask(now, ask);
        }
        loop {
            let cmd = self.node.borrow_mut().poll_backbone();
            let Some(cmd) = cmd else { break };
            if let Err(cmd) = self.shared.backbone.command(NodeId(self.index as u32), cmd) {
                // The backbone's channel is at its hard bound: the node
                // keeps the rest, sent once the backlog has room (the poll
                // task drives the node again then).
                self.node.borrow_mut().unpoll_backbone(cmd);
                break;
            }
        }
        loop {
            let change = self.node.borrow_mut().poll_reading();
            let Some((id, reading)) = change else { break };
            self.set_reading(id, reading);
        }
        loop {
            let id = self.node.borrow_mut().poll_transmit();
            let Some(id) = id else { break };
            self.write(now, id);
        }
        self.observe_fanouts();
        loop {
            let ended = self.node.borrow_mut().poll_ended();
            let Some((id, ended)) = ended else { break };
            self.shared.closes[self.index].count(ended.code);
            let closed_at = now;
            if tracing::enabled!(tracing::Level::DEBUG) {
                let reason = crate::logging::close_reason(ended.code);
                tracing::debug!(
                    shard = self.index,
                    client = %self.node.borrow().client_id(id),
                    code = ended.code.0,
                    reason,
                    cause = ended.cause,
                    "connection closed: {}{}{} ({})",
                    ended.code.0,
                    if reason.is_empty() { "" } else { " " },
                    reason,
                    ended.cause
                );
            }
            let io = self
                .ios
                .borrow_mut()
                .get_mut(id.index())
                .and_then(|slot| slot.take_if(|io| io.id == id));
            {
                let mut forwarded = self.forwarded.borrow_mut();
                if forwarded.get(&id.index()).is_some_and(|(c, _)| *c == id) {
                    forwarded.remove(&id.index());
                }
            }
            if self.status.get() {
                let ticks = io
                    .as_ref()
                    .map_or(0, |io| open_ticks(closed_at).wrapping_sub(io.opened));
                self.recent.borrow_mut().push(Closed {
                    at_ms: unix_ms(),
                    client: self.node.borrow().client_id(id),
                    user: ended.user.clone(),
                    endpoint: match ended.endpoint {
                        Endpoint::Echo => "echo",
                        Endpoint::PubSub(_) => "ws",
                        Endpoint::Sse => "sse",
                    },
                    code: ended.code.0,
                    reason: crate::logging::close_reason(ended.code),
                    cause: ended.cause,
                    duration_ms: u64::from(ticks) * OPEN_TICK.as_millis() as u64,
                });
            }
            if let Some(mut io) = io {
                tls::close(&mut io);
                self.unwatch(&mut io);
                // Once per connection: its socket left the table above.
                self.shared.release_connection(self.take_peer(id.index()));
            }
        }
        let next = self.node.borrow().poll_timeout();
        if let Some(next) = next {
            if self.armed.get().is_none_or(|a| next < a) {
                self.armed.set(Some(next));
                self.rearm.notify_one();
            }
        }
    }

    /// Observes the fan-out latency of the publications the node delivered
    /// since the last write pass, which has just handed their frames to
    /// the kernel: each one's time from arrival (the `now` of the inbox
    /// batch that brought it) to now, in the bucket of its subscriber
    /// count. One pass writes every connection listed, so its end is when
    /// the last subscriber's frame went to the kernel; a subscriber whose
    /// socket was full is not waited for (its bytes go when it drains, and
    /// counting that would measure the slow reader, not the server). The
    /// clock is read once per pass, and only if something was delivered.
    fn observe_fanouts(&self) {
        let mut node = self.node.borrow_mut();
        if !node.has_fanouts() {
            return;
        }
        let done = self.now();
        let mut metrics = self.metrics.borrow_mut();
        for f in node.take_fanouts() {
            let micros = u64::try_from(done.saturating_since(f.arrival).as_micros());
            metrics.fanout[usize::from(f.bucket)]
                .observe_n(micros.unwrap_or(u64::MAX), u64::from(f.publications));
        }
    }

    /// Hands what the node asked to the outbound side; what must be
    /// answered at once is answered here.
    fn ask(&self, now: Timestamp, ask: Ask) {
        let outbound = &self.shared.outbound;
        match ask {
            Ask::Proxy {
                ask,
                conn,
                kind,
                request,
            } => {
                let started = {
                    let forwarded = self.forwarded.borrow();
                    let headers = forwarded
                        .get(&conn.index())
                        .filter(|(c, _)| *c == conn)
                        .map(|(_, h)| h);
                    let inbox = &self.shared.shards[self.index];
                    outbound.call_proxy(inbox, ask, kind, &request, headers)
                };
                if let Err(answer) = started {
                    self.node.borrow_mut().handle_proxy(now, ask, answer);
                }
            }
            Ask::Keys => {
                if !outbound.ask_keys(self.index) {
                    self.node.borrow_mut().handle_keys(now, None);
                }
            }
        }
    }

    /// Keeps the headers the proxies forward for a new connection.
    fn set_forwarded(&self, id: ConnId, headers: Option<ForwardedHeaders>) {
        let mut forwarded = self.forwarded.borrow_mut();
        match headers {
            Some(h) => {
                forwarded.insert(id.index(), (id, h));
            }
            None => {
                forwarded.remove(&id.index());
            }
        }
    }

    /// Writes a connection's queue until it is empty or the kernel refuses.
    fn write(&self, now: Timestamp, id: ConnId) {
        let mut ios = self.ios.borrow_mut();
        let Some(io) = ios.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        if io.id != id || !io.watched {
            return; // dead
        }
        if io.want_write {
            // Writable again later (the epoll set says when). Over TLS,
            // the queue was encrypted (a batch at a time) before the socket
            // refused its records, so the node was told of the refusal
            // with nothing queued: what is queued now waits for the
            // reader, and the budget applies to it.
            if io.tls.is_some() {
                self.node.borrow_mut().handle_write_blocked(id);
            }
            return;
        }
        let mut node = self.node.borrow_mut();
        if io.tls.is_some() {
            return tls::write(self, now, id, io, &mut node);
        }
        loop {
            let Some(queue) = node.queue(id) else { return };
            if queue.is_empty() {
                return;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for s in queue.slices() {
                slices[n] = IoSlice::new(s);
                n += 1;
            }
            match (&io.stream).write_vectored(&slices[..n]) {
                Ok(written) => node.handle_written(now, id, written),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.write_blocked(now, id, io, &mut node);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.unwatch(io);
                    node.handle_eof(now, id);
                    return;
                }
            }
        }
    }

    /// The kernel refused a connection's bytes: the reader is not keeping
    /// up (its budget applies); wait for writability.
    fn write_blocked(&self, now: Timestamp, id: ConnId, io: &mut ConnIo, node: &mut Node) {
        node.handle_write_blocked(id);
        let fd = io.stream.as_raw_fd();
        let key = id.index() as u64;
        io.want_write = true;
        if let Err(e) = self.poller.get_ref().modify(fd, key, io.interest()) {
            tracing::warn!(error = %e, "cannot watch a socket for writability");
            io.want_write = false;
            self.unwatch(io);
            node.handle_eof(now, id);
        }
    }

    /// Stops or resumes reading a socket (the node holds its input while
    /// it has too many commands in flight): its kernel buffer fills and the
    /// peer's writes block, which is the backpressure.
    fn set_reading(&self, id: ConnId, reading: bool) {
        let mut ios = self.ios.borrow_mut();
        let Some(io) = ios.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        if io.id != id || !io.watched || io.paused != reading {
            return;
        }
        io.paused = !reading;
        let fd = io.stream.as_raw_fd();
        if let Err(e) = self
            .poller
            .get_ref()
            .modify(fd, id.index() as u64, io.interest())
        {
            tracing::warn!(error = %e, "cannot change a socket's read interest");
        }
    }

    /// Takes a socket out of the epoll set (end of stream, error, or the
    /// node is done with it).
    fn unwatch(&self, io: &mut ConnIo) {
        if std::mem::take(&mut io.watched) {
            // Fails only if it was never added; nothing to undo then.
            let _ = self.poller.get_ref().delete(io.stream.as_raw_fd());
        }
    }

    fn handle_msg(&self, now: Timestamp, msg: ShardMsg) {
        match msg {
            ShardMsg::Backbone(event) => self.node.borrow_mut().handle_backbone(now, event),
            ShardMsg::Proxy { ask, answer } => {
                self.node.borrow_mut().handle_proxy(now, ask, answer)
            }
            ShardMsg::Keys(jwks) => self.node.borrow_mut().handle_keys(now, jwks.as_deref()),
            ShardMsg::Reconfigure(config) => {
                let node_config = node_config(&config, &self.shared, self.index);
                self.node.borrow_mut().reconfigure(now, node_config);
                *self.handshake.borrow_mut() = handshake_config(&config);
                *self.sse.borrow_mut() = config.sse();
                self.status.set(config.status);
            }
            ShardMsg::Control(Control::Channels(reply)) => {
                let node = self.node.borrow();
                let _ = reply.send(node.channels().map(|(c, n)| (c.to_string(), n)).collect());
            }
            ShardMsg::Control(Control::Disconnect {
                client,
                code,
                reply,
            }) => {
                let mut node = self.node.borrow_mut();
                let found = node.conn_of(&client);
                if let Some(id) = found {
                    let code = CloseCode(code);
                    node.close(now, id, code, protocol::close::reason(code));
                }
                let _ = reply.send(found.is_some());
            }
            ShardMsg::Control(Control::Status(reply)) => {
                let node = self.node.borrow();
                let queued = node
                    .most_queued(TOP_QUEUED)
                    .into_iter()
                    .map(|(id, bytes)| (node.client_id(id), bytes))
                    .collect();
                let _ = reply.send(ShardStatus {
                    closed: self.recent.borrow().newest_first(),
                    queued,
                });
            }
            ShardMsg::Control(Control::ServerStatus(reply)) => {
                // A task: the summary asks this shard too, whose loop must
                // keep running to answer.
                let shared = self.shared.clone();
                tokio::task::spawn_local(async move {
                    let status = crate::status::data::server_status(&shared).await;
                    let _ = reply.send(serde_json::to_value(status).unwrap_or_default());
                });
            }
            ShardMsg::Control(Control::Info(reply)) => {
                let node = self.node.borrow();
                let _ = reply.send(ShardInfo {
                    connections: node.connections(),
                    channels: node.channels().count(),
                    queued_bytes: node.queued_bytes(),
                    counters: node.counters().clone(),
                    metrics: self.metrics.borrow().clone(),
                });
            }
        }
    }

    /// Handles what the epoll set reported: for each socket, a write if it
    /// was waiting for room, then one read into the scratch buffer, fed to
    /// the node. The caller drives the node once for the whole batch, so
    /// replies to a burst of commands leave in fewer writes.
    fn handle_ready(&self, events: &Events) {
        let now = self.now();
        let mut scratch = self.scratch.borrow_mut();
        for ready in events.iter() {
            let index = ready.key as usize;
            let mut ios = self.ios.borrow_mut();
            let Some(io) = ios.get_mut(index).and_then(Option::as_mut) else {
                continue; // finished earlier in this batch
            };
            let id = io.id;
            if ready.writable && io.want_write {
                io.want_write = false;
                let fd = io.stream.as_raw_fd();
                if let Err(e) = self.poller.get_ref().modify(fd, ready.key, io.interest()) {
                    tracing::warn!(error = %e, "cannot stop watching a socket for writability");
                }
                drop(ios);
                self.write(now, id);
                ios = self.ios.borrow_mut();
            }
            if !ready.readable {
                continue;
            }
            let Some(io) = ios.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            // A paused socket is reported readable only for an error or a
            // hang-up; reading it then finds the end.
            if !io.watched {
                continue;
            }
            if io.tls.is_some() {
                let mut node = self.node.borrow_mut();
                let outcome = tls::read(io, &mut scratch, |plain| node.handle_read(now, id, plain));
                match outcome {
                    tls::ReadOutcome::Nothing => {}
                    tls::ReadOutcome::Some => {
                        // Something rustls must answer on its own (a key
                        // update), or replies queued: they go with the
                        // batch's writes; an answer with nothing queued
                        // goes now.
                        if io.tls.as_ref().is_some_and(|c| c.wants_write()) && !io.want_write {
                            tls::write(self, now, id, io, &mut node);
                        }
                    }
                    tls::ReadOutcome::End => {
                        self.unwatch(io);
                        node.handle_eof(now, id);
                    }
                }
                continue;
            }
            let outcome = (&io.stream).read(&mut scratch);
            let eof = match outcome {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => true,
            };
            if eof {
                self.unwatch(io);
            }
            drop(ios);
            let mut node = self.node.borrow_mut();
            match outcome {
                Ok(n) if n > 0 => node.handle_read(now, id, &scratch[..n]),
                _ => node.handle_eof(now, id),
            }
        }
    }
}

/// The settings of shard `index`'s node under `c`.
fn node_config(c: &Config, shared: &Shared, index: usize) -> NodeConfig {
    NodeConfig {
        connection: ConnectionConfig {
            heartbeat_interval: c.heartbeat_interval,
            heartbeat_timeout: c.heartbeat_timeout,
            max_message_size: c.max_message_size,
            max_queued_bytes: c.max_queued_bytes,
            ping_rate: c.client_ping_rate,
            ..ConnectionConfig::default()
        },
        namespaces: c.namespaces.clone(),
        client_prefix: instance::client_prefix(&shared.instance, index),
        max_requests_in_flight: c.max_requests_in_flight,
        auth: c.auth(shared.clock.unix_origin_micros()),
        client_command_rate: c.client_command_rate,
        client_publish_rate: c.client_publish_rate,
        max_subscriptions: c.max_subscriptions,
        proxies: c.proxies(),
        compression: c
            .compression
            .then_some(wavecast_core::deflate::CompressionConfig {
                level: c.compression_level,
                threshold: c.compression_threshold,
            }),
    }
}

/// The handshake's rules under `c`.
fn handshake_config(c: &Config) -> HandshakeConfig {
    HandshakeConfig {
        allowed_origins: c.allowed_origins.clone(),
        subprotocols: SUBPROTOCOLS.iter().map(|s| s.to_string()).collect(),
        compression: c.compression,
        ..HandshakeConfig::default()
    }
}

/// The status of a response the core built (`HTTP/1.1 NNN ...`); 0 if
/// it has none (never, for the core's responses).
fn status_of(response: &[u8]) -> u16 {
    response
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// A non-zero seed for a shard's random numbers, different per process
/// and shard.
fn seed(index: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(index);
    h.finish() | 1
}

/// Runs shard `index` on the calling thread until shutdown.
pub fn run(
    index: usize,
    listener: std::net::TcpListener,
    inbox: ShardInbox,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let shard = Rc::new(Shard::new(index, shared.clone())?);
        tokio::task::spawn_local(poll_task(shard.clone()));
        tokio::task::spawn_local(timer_task(shard.clone()));
        tokio::task::spawn_local(inbox_task(shard.clone(), inbox.clone()));
        let mut stop = shared.shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::task::spawn_local(
                            accept::handle_socket(shard.clone(), stream, peer.ip()),
                        );
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.changed() => break,
            }
        }
        drop(listener);
        shutdown(&shard).await;
        // Nothing will read this inbox any more: refuse new messages and
        // drop queued ones, so an API call waiting on a reply gets an error.
        inbox.close();
        drop(inbox.take());
        Ok(())
    })
}

async fn shutdown(shard: &Rc<Shard>) {
    let now = shard.now();
    shard.node.borrow_mut().shutdown(now);
    shard.drive();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while shard.node.borrow().connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::debug!(
        shard = shard.index,
        left = shard.node.borrow().connections(),
        "shard stopped"
    );
}

/// Backbone events and API requests for this shard, a batch at a time: a
/// burst (fan-out of many publications) is handled before the sockets are
/// written, so they get fewer, larger vectored writes.
async fn inbox_task(shard: Rc<Shard>, inbox: ShardInbox) {
    let mut batch = Vec::new();
    while inbox.drain(&mut batch).await {
        let mut now = shard.now();
        for (i, msg) in batch.drain(..).enumerate() {
            if i > 0 && i % INBOX_SLICE == 0 {
                shard.drive();
                now = shard.now();
            }
            shard.handle_msg(now, msg);
        }
        shard.drive();
    }
}

/// The upgraded sockets: waits until the epoll set has something ready,
/// handles a batch, drives the node, and yields so the inbox and timer get
/// their turn between batches.
async fn poll_task(shard: Rc<Shard>) {
    let mut events = Events::with_capacity(EVENTS);
    loop {
        // The sequencer is behind: read no client until it catches up (the
        // inbox and the timer still run, so deliveries keep going out).
        if shard.shared.backbone.backlog().is_full() {
            shard.shared.backbone.backlog().wait_for_room().await;
            // Commands the node kept while the channel was full go now.
            shard.drive();
        }
        let mut guard = match shard.poller.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, shard = shard.index, "epoll set failed");
                return;
            }
        };
        match guard.get_inner().wait(&mut events) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, shard = shard.index, "epoll_wait failed");
                return;
            }
        }
        if events.iter().next().is_none() {
            // Nothing ready: wait for tokio to see the set become readable
            // again. Readiness that arrived since `wait` is kept by tokio
            // (it only clears the readiness this guard saw).
            guard.clear_ready();
            continue;
        }
        drop(guard);
        shard.handle_ready(&events);
        shard.drive();
        tokio::task::yield_now().await;
    }
}

async fn timer_task(shard: Rc<Shard>) {
    loop {
        match shard.armed.get() {
            Some(at) => {
                let sleep = tokio::time::sleep_until(shard.shared.clock.instant_of(at).into());
                tokio::select! {
                    _ = sleep => {
                        shard.armed.set(None);
                        let now = shard.now();
                        shard.node.borrow_mut().handle_timeout(now);
                        shard.drive();
                    }
                    _ = shard.rearm.notified() => {}
                }
            }
            None => shard.rearm.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The socket slot is paid per connection: 16 bytes before TLS and the
    /// status page's open time; now 32 (a fd, the TLS session's pointer, a
    /// `ConnId`, three flags, the `u32` open time, padded to 8; `Option`
    /// fits in the flags' niche). Taking the open time (or the flags) out
    /// would bring it to 24.
    #[test]
    fn the_socket_slot_stays_small() {
        assert_eq!(std::mem::size_of::<Option<super::ConnIo>>(), 32);
    }
}
