//! The Server-Sent Events endpoint, `GET /sse`: the request is read
//! ([`wavecast_core::sse::parse_request`]; a bad one is answered here with
//! its status), a connection slot is reserved as for an upgrade (503
//! beyond the limits), and the socket is then the node's and the epoll
//! set's like an upgraded WebSocket ([`super::adopt_with`]): the node
//! writes the answer itself (a refusal after checking the token and the
//! channels, or the stream), so an open stream costs what a WebSocket
//! costs.
//!
//! A stream asked for on a fresh connection comes from `accept.rs`; one
//! asked for on an HTTP keep-alive connection (a browser's pooled
//! connection, a proxy's upstream pool) is taken back from hyper before
//! hyper answers it (`http.rs`), with the bytes hyper read past the
//! request.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use wavecast_core::handshake::RequestHead;
use wavecast_core::sse::{parse_request, SseRequest};

use super::accept::{adopt_with, reserve, Reservation};
use super::tls::Stream;
use super::Shard;

/// A stream request read and admitted to a connection slot, ready to be
/// adopted.
pub(crate) struct Admitted {
    request: SseRequest,
    slot: Reservation,
}

/// Reads a stream request and reserves its connection slot; `Err` is the
/// complete response to send instead (400/403/405 for the request, 503
/// for the limits).
pub(crate) fn admit(shard: &Shard, head: &RequestHead, peer: IpAddr) -> Result<Admitted, Vec<u8>> {
    let request =
        parse_request(head, &shard.sse.borrow()).map_err(|e| shard.refuse(e.response()))?;
    let slot = reserve(shard, peer).map_err(|r| shard.refuse(r))?;
    Ok(Admitted { request, slot })
}

/// A stream request on a fresh connection (its head read by `accept.rs`).
pub(super) async fn serve_fresh(
    shard: &Rc<Shard>,
    mut stream: Stream,
    head: &RequestHead,
    peer: IpAddr,
    leftover: &[u8],
) {
    match admit(shard, head, peer) {
        Ok(admitted) => adopt(shard, stream, admitted, leftover),
        Err(response) => stream.send_last(&response).await,
    }
}

/// Hands an admitted stream's socket to the node and the epoll set.
/// `leftover`: bytes the client sent after its request (the node ignores
/// what a stream's client sends; they are not kept).
pub(crate) fn adopt(shard: &Shard, stream: Stream, admitted: Admitted, leftover: &[u8]) {
    let _ = leftover;
    // A peer that vanished without closing leaves the heartbeat comments
    // unacknowledged: the kernel drops the connection after heartbeat
    // interval + timeout, as a silent WebSocket is dropped (a stream's
    // client sends nothing, so the node cannot tell on its own).
    let config = shard.shared.config.get();
    let patience = config.heartbeat_interval + config.heartbeat_timeout;
    let _ = socket2::SockRef::from(stream.tcp()).set_tcp_user_timeout(Some(patience));
    let retry = retry(shard);
    let Admitted { request, slot } = admitted;
    adopt_with(shard, stream, slot, "sse", move |node, now| {
        node.handle_sse(now, request, retry)
    });
}

/// The `retry:` of a new stream: `sse_retry` randomised between half and
/// one and a half times it, so that browsers cut off together (a restart)
/// do not come back together.
fn retry(shard: &Shard) -> Duration {
    let middle = shard.shared.config.get().sse_retry;
    let spread = middle.as_millis().max(2) as u64;
    let r = shard.random() % spread;
    Duration::from_millis(spread / 2 + r)
}
