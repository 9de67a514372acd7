//! permessage-deflate (RFC 7692): the extension's negotiation and the
//! message codec, both without per-connection state.
//!
//! wavecast always negotiates `server_no_context_takeover` and
//! `client_no_context_takeover` (section 7.1.1 lets the server add both to
//! any offer it accepts), so every message is a deflate stream of its own.
//! A connection therefore holds no compression state at all, only the one
//! bit "negotiated" (kept in its frame decoder); the deflater and the
//! inflater are the shard's ([`Codec`], one per [`crate::node::Node`]) and
//! are reset after every message.
//!
//! - [`negotiate`]: parses `Sec-WebSocket-Extensions` (RFC 6455 section
//!   9.1 grammar) and accepts the first acceptable `permessage-deflate`
//!   offer (section 5 and 7.1), with the response header value.
//! - [`codec`]: compression of a message into the payload of a frame with
//!   RSV1 set (section 7.2.1: sync flush, the `00 00 ff ff` tail removed)
//!   and bounded, incremental decompression (section 7.2.2: the tail
//!   appended, the output counted against the message size limit as it
//!   grows, so a decompression bomb stops at the first chunk past it).
//!
//! The flate2 crate (with zlib-rs, a pure-Rust zlib) does the deflate
//! itself; the tail handling, the bounds and the negotiation are ours.

pub mod codec;
pub mod negotiate;

pub use codec::{Codec, InflateError};
pub use negotiate::{
    check_client_answer, negotiate, ClientAnswerError, Negotiated, CLIENT_OFFER, RESPONSE,
};

/// Settings of permessage-deflate on a node's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompressionConfig {
    /// zlib compression level, 0 (store) to 9 (best); default 1.
    pub level: u32,
    /// Publications whose encoded payload is shorter than this many bytes
    /// go uncompressed (deflate's framing would cost more than it saves);
    /// default 1024.
    pub threshold: usize,
}

/// Default of [`CompressionConfig::level`].
pub const DEFAULT_LEVEL: u32 = 1;
/// Default of [`CompressionConfig::threshold`].
pub const DEFAULT_THRESHOLD: usize = 1024;

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            level: DEFAULT_LEVEL,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}
