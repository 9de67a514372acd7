//! One worker: a single-threaded runtime that owns a core `Node` and the
//! sockets of its connections.
//!
//! Every connection has a small task that waits for its socket to be
//! readable (or writable, while the kernel's send buffer is full). Reads go
//! into the shard's one scratch buffer and straight into the node; the node
//! keeps only a partial-frame remainder. After every input the shard drives
//! the node's outputs: it writes each listed connection's queue with one
//! vectored write, drops finished transports, and re-arms the one timer of
//! the shard at the node's earliest deadline. All of it runs on one thread,
//! so the `RefCell`s here are never contended and nothing takes a lock.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::LocalSet;

use wavecast_core::backbone::NodeId;
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::handshake::{self, HandshakeConfig, RequestHead};
use wavecast_core::message::CloseCode;
use wavecast_core::node::{ConnId, Endpoint, Node, NodeConfig};
use wavecast_core::protocol::{self, Encoding, SUBPROTOCOLS};

use crate::backbone::{Control, ShardInbox, ShardInfo, ShardMsg};
use wavecast_core::queue::MAX_SLICES;
use wavecast_core::Timestamp;

use crate::server::{Shared, SHUTDOWN_GRACE};

/// Bytes read from a socket at once, into the shard's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket side of one connection.
struct ConnIo {
    stream: TcpStream,
    /// The kernel refused bytes: wait for writability before writing again.
    want_write: Cell<bool>,
    /// The node is done with this connection: the task ends and the socket
    /// is dropped.
    finished: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl ConnIo {
    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// One worker's state.
pub struct Shard {
    index: usize,
    shared: Arc<Shared>,
    node: RefCell<Node>,
    ios: RefCell<Vec<Option<Rc<ConnIo>>>>,
    scratch: RefCell<Box<[u8]>>,
    handshake: HandshakeConfig,
    /// The deadline the timer task sleeps until.
    armed: Cell<Option<Timestamp>>,
    rearm: Notify,
}

impl Shard {
    fn new(index: usize, shared: Arc<Shared>) -> Self {
        let c = &shared.config;
        let connection = ConnectionConfig {
            heartbeat_interval: c.heartbeat_interval,
            heartbeat_timeout: c.heartbeat_timeout,
            max_message_size: c.max_message_size,
            max_queued_bytes: c.max_queued_bytes,
            ..ConnectionConfig::default()
        };
        let handshake = HandshakeConfig {
            allowed_origins: c.allowed_origins.clone(),
            subprotocols: SUBPROTOCOLS.iter().map(|s| s.to_string()).collect(),
            ..HandshakeConfig::default()
        };
        Shard {
            index,
            node: RefCell::new(Node::new(NodeConfig {
                connection,
                namespaces: c.namespaces.clone(),
                client_prefix: format!("{}-{index}-", shared.instance),
            })),
            ios: RefCell::new(Vec::new()),
            scratch: RefCell::new(vec![0; SCRATCH].into_boxed_slice()),
            handshake,
            armed: Cell::new(None),
            rearm: Notify::new(),
            shared,
        }
    }

    /// The core's notion of now.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.shared.origin.elapsed().as_micros() as u64)
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        self.shared.origin + Duration::from_micros(t.as_micros())
    }

    /// State shared by every shard.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// True once shutdown has started.
    pub fn shutting_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Writes what the node queued, drops finished transports, re-arms the
    /// timer. Called after every input to the node.
    fn drive(&self) {
        let now = self.now();
        loop {
            let cmd = self.node.borrow_mut().poll_backbone();
            let Some(cmd) = cmd else { break };
            self.shared.backbone.command(NodeId(self.index as u32), cmd);
        }
        loop {
            let id = self.node.borrow_mut().poll_transmit();
            let Some(id) = id else { break };
            self.write(now, id);
        }
        loop {
            let id = self.node.borrow_mut().poll_finished();
            let Some(id) = id else { break };
            let io = self
                .ios
                .borrow_mut()
                .get_mut(id.index())
                .and_then(Option::take);
            if let Some(io) = io {
                io.finished.set(true);
                io.wake();
                self.shared.release_connection();
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

    /// Writes a connection's queue until it is empty or the kernel refuses.
    fn write(&self, now: Timestamp, id: ConnId) {
        let io = self.ios.borrow().get(id.index()).and_then(|s| s.clone());
        let Some(io) = io else { return };
        if io.want_write.get() {
            return; // its task writes once the socket is writable
        }
        let mut node = self.node.borrow_mut();
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
            match io.stream.try_write_vectored(&slices[..n]) {
                Ok(written) => node.handle_written(now, id, written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    io.want_write.set(true);
                    io.wake();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    node.handle_eof(now, id);
                    return;
                }
            }
        }
    }

    fn handle_msg(&self, now: Timestamp, msg: ShardMsg) {
        match msg {
            ShardMsg::Backbone(event) => self.node.borrow_mut().handle_backbone(now, event),
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
                    node.close(now, id, CloseCode(code), protocol::close::reason(code));
                }
                let _ = reply.send(found.is_some());
            }
            ShardMsg::Control(Control::Info(reply)) => {
                let node = self.node.borrow();
                let _ = reply.send(ShardInfo {
                    connections: node.connections(),
                    channels: node.channels().count(),
                    queued_bytes: node.queued_bytes(),
                });
            }
        }
    }

    /// Reads once from a connection's socket into the scratch buffer and
    /// feeds the node.
    fn read(&self, id: ConnId, io: &ConnIo) {
        let now = self.now();
        let mut scratch = self.scratch.borrow_mut();
        match io.stream.try_read(&mut scratch) {
            Ok(0) => self.node.borrow_mut().handle_eof(now, id),
            Ok(n) => self.node.borrow_mut().handle_read(now, id, &scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => self.node.borrow_mut().handle_eof(now, id),
        }
        drop(scratch);
        self.drive();
    }
}

/// Runs shard `index` on the calling thread until shutdown.
pub fn run(
    index: usize,
    listener: std::net::TcpListener,
    inbox: ShardInbox,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let shard = Rc::new(Shard::new(index, shared.clone()));
        tokio::task::spawn_local(timer_task(shard.clone()));
        tokio::task::spawn_local(inbox_task(shard.clone(), inbox.clone()));
        let mut stop = shared.shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::task::spawn_local(handle_socket(shard.clone(), stream));
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
        let now = shard.now();
        for msg in batch.drain(..) {
            shard.handle_msg(now, msg);
        }
        shard.drive();
    }
}

async fn timer_task(shard: Rc<Shard>) {
    loop {
        match shard.armed.get() {
            Some(at) => {
                let sleep = tokio::time::sleep_until(shard.instant_of(at).into());
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

/// A new TCP connection: read its request head, then either upgrade it to
/// a WebSocket owned by the node or hand it to the HTTP side.
async fn handle_socket(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let max = shard.handshake.max_head_size;
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&stream, &mut buf, max)).await;
    let mut stream = stream;
    let head = match head {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return, // closed before a whole head
        Ok(Err(HeadError::Io)) => return,
        Ok(Err(HeadError::Handshake(e))) => {
            let _ = stream.write_all(&e.response()).await;
            return;
        }
        Err(_) => {
            let body = "request head not received in time\n";
            let _ = stream
                .write_all(&handshake::reject_response(408, "Request Timeout", body))
                .await;
            return;
        }
    };
    if !head.wants_websocket() {
        crate::http::serve(shard, buf, stream).await;
        return;
    }
    let pubsub = head.path == "/ws";
    match head.path.as_str() {
        "/ws" => {}
        "/echo" if shard.shared.config.echo => {}
        _ => {
            let resp = handshake::reject_response(404, "Not Found", "no WebSocket endpoint here\n");
            let _ = stream.write_all(&resp).await;
            return;
        }
    }
    let accepted = match handshake::accept(&head, &shard.handshake) {
        Ok(a) => a,
        Err(e) => {
            let _ = stream.write_all(&e.response()).await;
            return;
        }
    };
    let endpoint = if pubsub {
        // The handshake only picks subprotocols we speak; none means JSON.
        let encoding =
            Encoding::from_subprotocol(accepted.subprotocol.as_deref()).unwrap_or(Encoding::Json);
        Endpoint::PubSub(encoding)
    } else {
        Endpoint::Echo
    };
    if shard.shutting_down() {
        let resp = handshake::reject_response(503, "Service Unavailable", "shutting down\n");
        let _ = stream.write_all(&resp).await;
        return;
    }
    if !shard.shared.try_reserve_connection() {
        let resp = handshake::reject_response(503, "Service Unavailable", "at max connections\n");
        let _ = stream.write_all(&resp).await;
        return;
    }
    if stream.write_all(&accepted.response).await.is_err() {
        shard.shared.release_connection();
        return;
    }
    let leftover = buf.split_off(head.head_len);
    drop(buf);
    drop(head);
    let io = Rc::new(ConnIo {
        stream,
        want_write: Cell::new(false),
        finished: Cell::new(false),
        waker: Cell::new(None),
    });
    let id = shard
        .node
        .borrow_mut()
        .handle_connect(shard.now(), endpoint, &leftover);
    drop(leftover);
    {
        let mut ios = shard.ios.borrow_mut();
        if ios.len() <= id.index() {
            ios.resize(id.index() + 1, None);
        }
        ios[id.index()] = Some(io.clone());
    }
    shard.drive();
    // A task of its own: the handshake's future (head buffer, timeout) is
    // freed now, and an idle connection costs only this small task.
    tokio::task::spawn_local(connection_task(shard, id, io));
}

enum Ready {
    Read,
    Write,
    Done,
}

async fn connection_task(shard: Rc<Shard>, id: ConnId, io: Rc<ConnIo>) {
    loop {
        let ready = poll_fn(|cx| {
            if io.finished.get() {
                return Poll::Ready(Ready::Done);
            }
            io.waker.set(Some(cx.waker().clone()));
            if io.want_write.get() && io.stream.poll_write_ready(cx).is_ready() {
                return Poll::Ready(Ready::Write);
            }
            match io.stream.poll_read_ready(cx) {
                Poll::Ready(_) => Poll::Ready(Ready::Read),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match ready {
            Ready::Done => break,
            Ready::Write => {
                io.want_write.set(false);
                let now = shard.now();
                shard.write(now, id);
                shard.drive();
            }
            Ready::Read => shard.read(id, &io),
        }
    }
}

enum HeadError {
    Io,
    Handshake(handshake::HandshakeError),
}

/// Reads until a whole request head is in `buf`. `Ok(None)`: the peer
/// closed first.
async fn read_head(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<RequestHead>, HeadError> {
    loop {
        match handshake::parse_request(buf, max) {
            Ok(Some(head)) => return Ok(Some(head)),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Handshake(e)),
        }
        stream.readable().await.map_err(|_| HeadError::Io)?;
        let mut chunk = [0u8; 4096];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(HeadError::Io),
        }
    }
}
