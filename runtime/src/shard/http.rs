//! The HTTP side of the port: every connection whose first request is not
//! a WebSocket upgrade.
//!
//! The shard has already read the request head (to route it); hyper gets
//! the stream with those bytes put back in front ([`super::io::Rewind`]).
//! A later request on the same keep-alive connection may still be an
//! upgrade (a proxy that keeps upstream connections open sends them so):
//! it is decided like one on a fresh connection ([`super::admit`]),
//! answered 101 by hyper, and the socket is then taken back from hyper and
//! handed to the shard ([`super::adopt`]) with any bytes hyper had
//! already read past the request.
//!
//! Later heads get the first head's bounds: hyper runs with a timer, a
//! header read timeout of `http_timeout`, and the handshake's head size
//! and header count (over them: 431 and the connection closed; the read
//! buffer never grows past the head limit). hyper 1's http1 has no idle
//! keep-alive timeout of its own, but its header read timer starts as soon
//! as it waits for the next head, right after a response has gone out, not
//! at the head's first byte (hyper's `Conn::poll_read_head`, re-armed by
//! `State::idle`): so one deadline closes both a connection idle between
//! requests and one sending a later head too slowly (no response: hyper
//! just closes). `tests/http_bounds.rs` checks both against the binary, so
//! a hyper that changed this would be caught. A request in progress is
//! not under that deadline; the API bounds reading its body by the same
//! `http_timeout` ([`crate::api`]). The connection holds a slot of
//! `max_http_connections` while it is here ([`super`]).
//!
//! A `GET /sse` on a keep-alive connection must be answered by the node
//! (the stream is the node's connection), but hyper answers every request
//! it reads. So the service does not answer it: it leaves the admitted
//! stream in a cell and stays pending, and [`serve`], polling the
//! connection beside a wake-up for that cell, takes the socket back from
//! hyper at that point (`into_parts`, with what hyper read past the
//! request) and hands it to the shard ([`super::sse::adopt`]). Nothing of
//! that request has been written then; an earlier response on the
//! connection has been (a client sends its next request after reading the
//! previous response; hyper does not read a pipelined one before it has
//! written the response before it).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;
use wavecast_core::handshake::{self, RequestHead, MAX_HEADERS};

use super::io::Rewind;
use super::tls::Stream;
use super::Shard;

/// The connection hyper serves (what an upgrade is downcast back to).
type Conn = TokioIo<Rewind<Stream>>;

/// hyper's smallest allowed read buffer (`max_buf_size` panics below it).
const HYPER_MIN_BUF: usize = 8192;

/// A stream request the service left for [`serve`] to take over, and the
/// wake-up that tells it.
#[derive(Default)]
struct Takeover {
    stream: RefCell<Option<super::sse::Admitted>>,
    ready: Notify,
}

/// The service's future: boxed, so the connection is `Unpin` and can be
/// taken apart while a request is pending.
type Answer = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>>>>;

/// Serves HTTP/1.1 on `stream`, from a client at `peer`, until the client
/// is done (or asks for an SSE stream, which the shard then takes).
pub(super) async fn serve(shard: Rc<Shard>, prefix: Vec<u8>, stream: Stream, peer: IpAddr) {
    let max_head = shard.handshake().max_head_size;
    let timeout = shard.shared().config.get().http_timeout;
    let io: Conn = TokioIo::new(Rewind::new(prefix, stream));
    let takeover = Rc::new(Takeover::default());
    let service = {
        let (shard, takeover) = (shard.clone(), takeover.clone());
        hyper::service::service_fn(move |req| -> Answer {
            let (shard, takeover) = (shard.clone(), takeover.clone());
            Box::pin(async move { Ok(route(shard, req, peer, &takeover).await) })
        })
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Also the idle keep-alive limit (see the module comment).
        .header_read_timeout(timeout)
        // A head over the limit is 431, as on a fresh connection; the
        // read buffer is what holds a head, so it stays that small too.
        .max_header_size(max_head)
        .max_buf_size(max_head.max(HYPER_MIN_BUF))
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        // A client may send its last requests and half-close: answer them.
        .half_close(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        result = &mut conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        () = takeover.ready.notified() => {
            let admitted = takeover.stream.borrow_mut().take();
            if let (Some(admitted), Some(parts)) = (admitted, conn.into_parts()) {
                let (mut leftover, stream) = parts.io.into_inner().into_parts();
                leftover.extend_from_slice(&parts.read_buf);
                super::sse::adopt(&shard, stream, admitted, &leftover);
            }
        }
    }
}

async fn route(
    shard: Rc<Shard>,
    req: Request<Incoming>,
    peer: IpAddr,
    takeover: &Takeover,
) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/api/") {
        return crate::api::handle(shard.shared(), req).await;
    }
    if req
        .uri()
        .path()
        .starts_with(wavecast_core::call::PATH_PREFIX)
    {
        // A client's calls over HTTP (an SSE client's commands).
        return super::call::serve(&shard, req).await;
    }
    if crate::status::is_status_path(req.uri().path()) {
        return crate::status::handle(shard.shared(), req, peer).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, wavecast_core::sse::PATH) if !head_of(&req).wants_websocket() => {
            let head = head_of(&req);
            match super::sse::admit(&shard, &head, peer) {
                Ok(admitted) => {
                    // `serve` takes the connection from here; this request
                    // is never answered by hyper.
                    *takeover.stream.borrow_mut() = Some(admitted);
                    takeover.ready.notify_one();
                    std::future::pending().await
                }
                Err(refusal) => raw_response(&refusal),
            }
        }
        (&Method::OPTIONS, wavecast_core::sse::PATH) => raw_response(
            &wavecast_core::sse::preflight(&head_of(&req), &shard.sse.borrow()),
        ),
        (_, wavecast_core::sse::PATH) if !head_of(&req).wants_websocket() => {
            raw_response(&wavecast_core::sse::SseError::Method.response())
        }
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = crate::api::metrics::Format::from_accept(accept);
            let body = crate::api::metrics::render(shard.shared(), format).await;
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(format.content_type()),
            );
            r
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if shard.shutting_down() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else if !shard.shared().backbone.is_ready() {
                // Redis is unreachable: local connections are still served,
                // but a load balancer should send new ones elsewhere.
                text(StatusCode::SERVICE_UNAVAILABLE, "backbone unavailable\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (_, "/healthz" | "/readyz") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        (_, "/ws" | "/echo") => {
            let head = head_of(&req);
            if head.wants_websocket() {
                upgrade(shard, req, &head, peer)
            } else {
                text(
                    StatusCode::UPGRADE_REQUIRED,
                    "this endpoint takes WebSocket upgrades\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The request's head as the core's handshake reads it. `head_len` is the
/// head's size as sent (request line, headers, blank line), give or take
/// optional whitespace, which hyper does not keep.
pub(super) fn head_of(req: &Request<Incoming>) -> RequestHead {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let size = req.method().as_str().len()
        + 1
        + target
        + " HTTP/1.1\r\n".len()
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2;
    RequestHead {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        version: u8::from(req.version() != hyper::Version::HTTP_10),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        // hyper has consumed the head; what it read beyond comes back with
        // the upgraded connection. The length is only for the size check.
        head_len: size,
    }
}

/// An upgrade on a keep-alive connection: the same decision as on a fresh
/// one; on success hyper sends the 101 and the socket goes to the shard.
fn upgrade(
    shard: Rc<Shard>,
    mut req: Request<Incoming>,
    head: &RequestHead,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    // hyper's `max_header_size` already refuses a longer head; this keeps
    // the upgrade's own bound explicit, as `parse_request` does on a fresh
    // connection.
    let max = shard.handshake().max_head_size;
    if head.head_len > max || head.headers.len() > MAX_HEADERS {
        let body = format!("request head over {max} bytes or {MAX_HEADERS} headers\n");
        return raw_response(&shard.refuse(handshake::reject_response(
            431,
            "Request Header Fields Too Large",
            &body,
        )));
    }
    let (accepted, endpoint, slot) = match super::admit(&shard, head, peer) {
        Ok(ok) => ok,
        Err(refusal) => return raw_response(&refusal),
    };
    let compression = accepted.compression;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::task::spawn_local(async move {
        let parts = match on_upgrade.await.map(|u| u.downcast::<Conn>()) {
            Ok(Ok(parts)) => parts,
            // The 101 never went out, or the connection is not ours:
            // `slot` is given back as it drops (as it is if this task
            // never gets here, at shutdown).
            _ => return,
        };
        let (mut leftover, stream) = parts.io.into_inner().into_parts();
        leftover.extend_from_slice(&parts.read_buf);
        super::adopt(&shard, stream, (endpoint, compression), slot, &leftover);
    });
    raw_response(&accepted.response)
}

/// A response the core built as bytes (a 101, or a refusal), as hyper's.
pub(super) fn raw_response(bytes: &[u8]) -> Response<Full<Bytes>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let (status, body_at) = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => (parsed.code.unwrap_or(500), n),
        // Our own responses always parse; never send a half-made one.
        _ => return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    };
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(&bytes[body_at..])));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for h in parsed.headers.iter() {
        // hyper sets the length of the body it sends itself.
        if h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(h.name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(h.value),
        ) {
            r.headers_mut().append(name, value);
        }
    }
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
