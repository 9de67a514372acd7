//! Test support shared by the integration tests in `tests/` and the benches
//! in `benches/`: starting the real `wavecast` binary on a free port,
//! waiting for it, and stopping it by the PID it was started with; a raw
//! HTTP/WebSocket client over a plain [`TcpStream`](std::net::TcpStream)
//! for the cases a standard client refuses to produce (fragmentation under
//! the test's control, broken frames, never answering pings, reading the
//! exact close code); and small helpers around tokio-tungstenite, the
//! standard client. [`pubsub`] holds the pub/sub side: a server with the
//! test namespaces and an API key, a protocol client in JSON or
//! MessagePack, and an HTTP client for the API.
//!
//! The binary is not built by these helpers: run `cargo build -p wavecast`
//! first (the test script does). [`Server::start`] finds it next to the test
//! executable, `target/<profile>/wavecast`.
//!
//! The modules, by job (everything is re-exported at the crate root):
//!
//! - `server`: [`binary_path`], [`Server`] (start, stop, signals, resident
//!   memory) and [`TempFile`];
//! - `http`: the raw HTTP client: [`Request`], [`HttpResponse`],
//!   [`read_response`], [`read_some`], [`http_exchange`];
//! - `raw`: the raw WebSocket client [`RawClient`], [`Recv`] and
//!   [`close_code`];
//! - `ws`: tokio-tungstenite helpers [`ws_connect`], [`next_message`],
//!   [`expect_close`];
//! - [`pubsub`]: the pub/sub protocol and API clients;
//! - [`backend`]: a small HTTP backend (proxies, a JWKS URL) that records
//!   what it is asked;
//! - [`sse`]: a Server-Sent Events reader over a raw socket;
//! - [`redis`]: a throwaway `redis-server`;
//! - [`nginx`]: nginx running the shipped deploy/nginx.conf.

#![warn(missing_docs)]

pub mod backend;
mod http;
pub mod nginx;
pub mod pubsub;
mod raw;
pub mod redis;
mod server;
pub mod sse;
mod ws;

pub(crate) use http::parse_response;
pub use http::{
    http_exchange, parse_response_bytes, read_response, read_some, HttpResponse, Request,
    SAMPLE_ACCEPT, SAMPLE_KEY,
};
pub use raw::{close_code, RawClient, Recv};
pub use server::{binary_path, refuses_to_start, Server, TempFile, LISTENING_PREFIX};
pub use ws::{expect_close, next_message, ws_connect, Ws};
