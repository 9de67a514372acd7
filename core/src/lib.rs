//! wavecast-core: the sans-I/O protocol core of wavecast.
//!
//! Nothing in this crate performs I/O, reads a clock, spawns a thread or takes
//! a lock (clippy's `disallowed-methods`/`disallowed-types` enforce it, see
//! `core/clippy.toml`). Time is an input ([`time::Timestamp`]), bytes are
//! inputs, and everything the core wants done is drained from `poll_*`
//! methods. The same code therefore runs in the tokio server, the stateright
//! model, the property tests and the fuzzers.
//!
//! The modules, bottom up (each builds only on those above it):
//! - [`time`]: [`Timestamp`], microseconds since an origin the driver
//!   chooses; the only notion of time.
//! - [`close`]: [`close::CloseCode`], the WebSocket close status (RFC 6455
//!   section 7.4), and the standard codes. A leaf, shared by the codec and
//!   wavecast's own codes.
//! - [`handshake`]: parses and validates an HTTP/1.1 upgrade request head
//!   (RFC 6455 section 4) and produces the `101` response or a rejection;
//!   its `client` part builds a client's request and checks the answer.
//! - [`frame`]: the RFC 6455 section 5 codec: incremental decode of masked
//!   client frames, encode of unmasked server frames.
//! - [`message`]: assembles frames into messages: fragmentation,
//!   incremental UTF-8 validation, close-frame payloads (section 7.4).
//! - [`deflate`]: permessage-deflate (RFC 7692) without context takeover:
//!   the extension's negotiation, and the codec (compress once per
//!   publication, inflate with the message size bound) that a node holds
//!   once per shard; a connection keeps only a "negotiated" bit.
//! - [`queue`]: a connection's outbound queue of shared frames
//!   ([`bytes::Bytes`]) with a byte budget.
//! - `rate` (crate-private): the token bucket behind every per-connection
//!   rate limit (a connection's pings, a node's commands and
//!   publications), with the grace before a connection over it is closed.
//! - [`connection`]: one WebSocket connection's state machine (open,
//!   closing, closed) with heartbeats; it owns a decoder, an assembler and
//!   a queue.
//! - [`protocol`]: the pub/sub wire protocol: commands in, replies and
//!   pushes out, in JSON or MessagePack, and the same decoded on the
//!   client side; error codes and wavecast's close codes (a folder, one
//!   job per file).
//! - [`backbone`]: the interface between a node and the sequencer of every
//!   channel: `BackboneCommand`s out, `BackboneEvent`s in.
//! - [`namespace`]: per-namespace channel options (history, presence,
//!   join/leave, and who may subscribe, publish, read history and ask
//!   presence).
//! - [`auth`]: tokens: verification of connection and subscription JWTs
//!   with the time passed in, and how a node authenticates.
//! - [`proxy`]: what a node asks of the application's backend (the
//!   connect, refresh, subscribe and publish proxies): request bodies,
//!   answer shapes and results; the node asks, the driver calls.
//! - [`admission`]: the one rule for both front doors (WebSocket commands
//!   and the HTTP API): whether an action on a channel is allowed to whom,
//!   with its namespace options or the error it gets.
//! - [`hub`]: the in-memory sequencer: offsets, epochs, bounded history,
//!   presence, broadcast to nodes.
//! - [`node`]: one shard's whole state: its connections (a generational
//!   slab), timers, client commands, authentication and what it asks
//!   outside, and ordered delivery with gap filling and recovery per
//!   channel (a folder, one job per file).
//! - [`client`]: the client side of the protocol as a state machine
//!   (subscriptions, positions, recovery on reconnect, gap detection,
//!   reconnect with backoff), for Rust clients, the tests and the load tool.
//! - [`sse`]: the request of a Server-Sent Events stream (`GET /sse`):
//!   channels, positions to resume from, token, origin, and the answers
//!   before the stream (the events are [`protocol::sse`]).
//! - [`call`]: a client's calls over plain HTTP (`POST /sse/publish`,
//!   `history`, `presence`), which an SSE client sends instead of
//!   commands: which call, token, origin; the node admits the caller.
//! - [`metrics`]: what a node counts for the operator (counters, and
//!   fixed-bucket latency histograms summed over shards by the driver).
//! - [`standalone`]: one node wired to the in-memory hub with no I/O, for
//!   benches, examples and tests of the core alone.
//! - [`fuzzing`]: the entry points shared by the fuzz targets and the seed
//!   replay test.
//!
//! The driver (the runtime, a test, the model) feeds a connection with
//! `handle_read(now, bytes)` / `handle_timeout(now)` and drains it in this
//! order: `poll_event()` until `None` (messages for the application), then
//! the outbound queue (bytes to write), then `poll_timeout()` (when to call
//! `handle_timeout` next). docs/ARCHITECTURE.md says the same at length.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod backbone;
pub mod call;
pub mod client;
pub mod close;
pub mod connection;
pub mod deflate;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod hub;
pub mod message;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod protocol;
pub mod proxy;
pub mod queue;
pub(crate) mod rate;
pub mod sse;
pub mod standalone;
pub mod time;

pub use time::Timestamp;
