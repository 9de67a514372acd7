//! Accepting a connection: read its request head within `http_timeout`,
//! then either upgrade it ([`admit`], [`adopt`]: a WebSocket owned by the
//! node and the shard's epoll set) or hand it to the HTTP side
//! ([`super::http`]), which holds a slot of `max_http_connections` (503
//! beyond it) until hyper lets the socket go.
//!
//! An upgrade holds a [`Reservation`] from [`admit`] on: a slot of
//! `max_connections` and one of `max_connections_per_ip` for the client's
//! address (503 beyond either). Dropped before [`adopt`] (the 101 cannot be
//! written, hyper's upgrade fails), it gives both back; once adopted, the
//! shard gives them back when the node has finished the connection.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wavecast_core::handshake::{self, RequestHead};
use wavecast_core::node::Endpoint;
use wavecast_core::protocol::Encoding;

use super::tls::Stream;
use super::{ConnIo, Shard};
use crate::outbound::ForwardedHeaders;
use crate::shared::{ConnectionRefused, Shared};
use crate::sys::poller::Interest;

/// A new TCP connection: read its request head, then either upgrade it to
/// a WebSocket owned by the node or hand it to the HTTP side.
/// `peer`: the client's address.
pub(super) async fn handle_socket(shard: Rc<Shard>, stream: TcpStream, peer: IpAddr) {
    let _ = stream.set_nodelay(true);
    // Over TLS, the handshake first (its own deadline and bound).
    let Some(mut stream) = super::tls::handshake(&shard, stream).await else {
        return;
    };
    let max = shard.handshake().max_head_size;
    let mut buf = Vec::with_capacity(1024);
    let head_timeout = shard.shared.config.get().http_timeout;
    let head = tokio::time::timeout(head_timeout, read_head(&mut stream, &mut buf, max)).await;
    let head = match head {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return, // closed before a whole head
        Ok(Err(HeadError::Io)) => return,
        Ok(Err(HeadError::Handshake(e))) => {
            stream.send_last(&shard.refuse(e.response())).await;
            return;
        }
        Err(_) => {
            let body = "request head not received in time\n";
            let response = handshake::reject_response(408, "Request Timeout", body);
            stream.send_last(&shard.refuse(response)).await;
            return;
        }
    };
    if head.path == wavecast_core::sse::PATH && head.method == "GET" && !head.wants_websocket() {
        // An event stream: the shard's like an upgraded socket.
        let leftover = buf.split_off(head.head_len);
        return super::sse::serve_fresh(&shard, stream, &head, peer, &leftover).await;
    }
    if !head.wants_websocket() {
        // Plain HTTP holds a slot of `max_http_connections` for as long as
        // hyper has the socket (an upgrade later on it takes a WebSocket
        // slot in `admit` and gives this one back when hyper lets go).
        let Some(_slot) = HttpSlot::reserve(&shard) else {
            let body = "at max HTTP connections\n";
            stream
                .send_last(&handshake::reject_response(
                    503,
                    "Service Unavailable",
                    body,
                ))
                .await;
            return;
        };
        super::http::serve(shard.clone(), buf, stream, peer).await;
        return;
    }
    let (endpoint, slot, compression) = match admit(&shard, &head, peer) {
        Ok((accepted, endpoint, slot)) => {
            if stream.send(&accepted.response).await.is_err() {
                return; // `slot` is given back as it drops
            }
            (endpoint, slot, accepted.compression)
        }
        Err(response) => {
            stream.send_last(&response).await;
            return;
        }
    };
    let leftover = buf.split_off(head.head_len);
    drop(buf);
    drop(head);
    adopt(&shard, stream, (endpoint, compression), slot, &leftover);
}

/// A reserved slot of `max_http_connections`, given back exactly once when
/// dropped (the connection's task ends, however it ends).
struct HttpSlot(Arc<Shared>);

impl HttpSlot {
    fn reserve(shard: &Shard) -> Option<HttpSlot> {
        shard
            .shared
            .try_reserve_http()
            .then(|| HttpSlot(shard.shared.clone()))
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.0.release_http();
    }
}

/// A reserved WebSocket connection slot ([`admit`]): one of
/// `max_connections`, and one of `max_connections_per_ip` for the client's
/// address. Given back exactly once: when dropped, unless [`adopt`] kept
/// it (then by the shard, when the node has finished the connection).
/// It also carries what the connection keeps of its handshake request
/// into the shard's table: the headers the proxies forward.
pub(crate) struct Reservation {
    /// `None` once kept.
    shared: Option<Arc<Shared>>,
    peer: IpAddr,
    /// The request's headers named in `proxy_headers`, if any.
    forwarded: Option<ForwardedHeaders>,
}

impl Reservation {
    /// The slot now belongs to a connection in the shard's table, which
    /// gives it back: the client's address, for that.
    fn keep(mut self) -> IpAddr {
        self.shared = None;
        self.peer
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release_connection(self.peer);
        }
    }
}

/// Decides an upgrade request from a client at `peer`: the endpoint its
/// path names, the handshake, shutdown and the connection limits. `Ok`: a
/// connection slot is reserved and the 101 response is to be sent. `Err`:
/// the complete refusal to send. Shared by upgrades on a fresh connection
/// and those that arrive on an HTTP keep-alive connection
/// ([`super::http`]).
pub(crate) fn admit(
    shard: &Shard,
    head: &RequestHead,
    peer: IpAddr,
) -> Result<(handshake::Accepted, Endpoint, Reservation), Vec<u8>> {
    decide(shard, head, peer).map_err(|refusal| shard.refuse(refusal))
}

/// [`admit`]'s decision, before its refusal is counted.
fn decide(
    shard: &Shard,
    head: &RequestHead,
    peer: IpAddr,
) -> Result<(handshake::Accepted, Endpoint, Reservation), Vec<u8>> {
    let pubsub = head.path == "/ws";
    match head.path.as_str() {
        "/ws" => {}
        "/echo" if shard.shared.config.get().echo => {}
        _ => {
            return Err(handshake::reject_response(
                404,
                "Not Found",
                "no WebSocket endpoint here\n",
            ))
        }
    }
    let accepted = handshake::accept(head, &shard.handshake()).map_err(|e| e.response())?;
    let endpoint = if pubsub {
        // The handshake only picks subprotocols we speak; none means JSON.
        let encoding =
            Encoding::from_subprotocol(accepted.subprotocol.as_deref()).unwrap_or(Encoding::Json);
        Endpoint::PubSub(encoding)
    } else {
        Endpoint::Echo
    };
    let mut slot = reserve(shard, peer)?;
    slot.forwarded = shard.shared.outbound.forwarded(head);
    Ok((accepted, endpoint, slot))
}

/// Reserves a connection slot for a client at `peer` (a WebSocket or an
/// SSE stream): `Err` is the complete 503 to send while shutting down or
/// at `max_connections` or `max_connections_per_ip`.
pub(crate) fn reserve(shard: &Shard, peer: IpAddr) -> Result<Reservation, Vec<u8>> {
    if shard.shutting_down() {
        return Err(handshake::reject_response(
            503,
            "Service Unavailable",
            "shutting down\n",
        ));
    }
    if let Err(refused) = shard.shared.try_reserve_connection(peer) {
        let body = match refused {
            ConnectionRefused::Server => "at max connections\n",
            ConnectionRefused::PerIp => "at max connections for this address\n",
        };
        return Err(handshake::reject_response(503, "Service Unavailable", body));
    }
    Ok(Reservation {
        shared: Some(shard.shared.clone()),
        peer,
        forwarded: None,
    })
}

/// Takes an upgraded socket (101 sent, `slot` reserved by [`admit`]) out
/// of tokio and into the node and the shard's epoll set. `leftover`: bytes
/// the client sent after its request head; `upgrade`: the endpoint, and
/// whether the handshake negotiated permessage-deflate.
pub(crate) fn adopt(
    shard: &Shard,
    stream: Stream,
    upgrade: (Endpoint, bool),
    slot: Reservation,
    leftover: &[u8],
) {
    let (endpoint, compression) = upgrade;
    let what = match endpoint {
        Endpoint::PubSub(Encoding::Json) => "websocket (json)",
        Endpoint::PubSub(Encoding::MsgPack) => "websocket (msgpack)",
        Endpoint::Echo => "echo",
        Endpoint::Sse => "sse",
    };
    adopt_with(shard, stream, slot, what, |node, now| {
        node.handle_connect_with(now, endpoint, leftover, compression)
    });
}

/// Takes a socket whose connection slot is reserved out of tokio and into
/// the node (`open` makes the node's connection) and the shard's epoll
/// set: an upgraded WebSocket, or an SSE stream (`what`, for the log).
pub(crate) fn adopt_with(
    shard: &Shard,
    stream: Stream,
    mut slot: Reservation,
    what: &'static str,
    open: impl FnOnce(
        &mut wavecast_core::node::Node,
        wavecast_core::Timestamp,
    ) -> wavecast_core::node::ConnId,
) {
    // Plaintext rustls decrypted past what the accept task read: the
    // client's first frames, which the socket will not report again.
    let mut early = Vec::new();
    let (stream, tls) = super::tls::into_parts(stream, &mut early);
    // Still non-blocking once out of tokio. On failure `slot` is given
    // back as it drops.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let now = shard.now();
    let id = open(&mut shard.node.borrow_mut(), now);
    if !early.is_empty() {
        shard.node.borrow_mut().handle_read(now, id, &early);
    }
    let tls_pending = tls.as_ref().is_some_and(|c| c.wants_write());
    tracing::debug!(
        shard = shard.index,
        client = %shard.node.borrow().client_id(id),
        peer = %slot.peer,
        endpoint = what,
        "connection opened: {what} from {}",
        slot.peer
    );
    let key = id.index() as u64;
    let watched = match shard
        .poller
        .get_ref()
        .add(stream.as_raw_fd(), key, Interest::Read)
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch a new connection");
            shard.node.borrow_mut().handle_eof(now, id);
            false
        }
    };
    {
        let mut ios = shard.ios.borrow_mut();
        if ios.len() <= id.index() {
            ios.resize_with(id.index() + 1, || None);
        }
        ios[id.index()] = Some(ConnIo {
            stream,
            tls,
            id,
            want_write: false,
            watched,
            paused: false,
            opened: super::open_ticks(now),
        });
    }
    shard.set_forwarded(id, slot.forwarded.take());
    // The connection's slot is the shard's to give back now, when the node
    // has finished it (even if it could not be watched: it finishes then).
    shard.set_peer(id.index(), slot.keep());
    if tls_pending {
        // Records the socket has not taken yet (the tail of the 101, session
        // tickets): out now, queue or not.
        shard.write(now, id);
    }
    shard.drive();
}

enum HeadError {
    Io,
    Handshake(handshake::HandshakeError),
}

/// Reads until a whole request head is in `buf`. `Ok(None)`: the peer
/// closed first.
async fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<RequestHead>, HeadError> {
    loop {
        match handshake::parse_request(buf, max) {
            Ok(Some(head)) => return Ok(Some(head)),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Handshake(e)),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Io),
        }
    }
}
