//! The HTTP side of the port: every request that is not a WebSocket upgrade.
//!
//! The shard has already read the request head (to route it); hyper gets
//! the stream with those bytes put back in front ([`crate::io::Rewind`]).

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::io::Rewind;
use crate::shard::Shard;

/// Serves HTTP/1.1 on `stream` until the client is done.
pub async fn serve(shard: Rc<Shard>, prefix: Vec<u8>, stream: TcpStream) {
    let io = TokioIo::new(Rewind::new(prefix, stream));
    let service = hyper::service::service_fn(move |req| {
        let shard = shard.clone();
        async move { Ok::<_, Infallible>(route(&shard, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // A client may send its last requests and half-close: answer them.
        .half_close(true)
        .serve_connection(io, service)
        .await
    {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

async fn route(shard: &Shard, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/api/") {
        return crate::api::handle(shard, req).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let body = crate::metrics::render(shard).await;
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
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
        (_, "/ws" | "/echo") => text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint takes WebSocket upgrades\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
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
