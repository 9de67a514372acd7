//! Who a connection is: tokens ([`token`]) and how a node authenticates
//! its connections ([`AuthConfig`]).
//!
//! The runtime loads the keys (files, a JWKS URL) and hands them in; the
//! core verifies tokens with the time passed in, so that authentication is
//! as deterministic as the rest of the core. What an identity may do is
//! decided by [`crate::admission`].

use std::time::Duration;

pub mod token;

pub use token::{
    ConnectionClaims, KeyError, SubscriptionClaims, TokenConfig, TokenError, Verifier,
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_SIZE, MAX_INFO_SIZE,
};

/// Default of [`AuthConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`AuthConfig::refresh_grace`].
pub const DEFAULT_REFRESH_GRACE: Duration = Duration::from_secs(30);

/// How a node authenticates its pub/sub connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthConfig {
    /// The token keys and rules; `None`: no token can be verified.
    pub verifier: Option<Verifier>,
    /// Connections without credentials are allowed. With no verifier as
    /// well, every connection is anonymous from its first byte and no
    /// `connect` is needed (today's open server, on loopback).
    pub allow_anonymous: bool,
    /// How long a connection may take to send `connect` where one is
    /// needed; then it is closed with `CONNECT_TIMEOUT` (4502).
    pub connect_timeout: Duration,
    /// How long after its token's `exp` a connection that did not refresh
    /// is closed with `TOKEN_EXPIRED` (4005).
    pub refresh_grace: Duration,
    /// The wall-clock time of the node's `Timestamp::ZERO`, in microseconds
    /// since the Unix epoch (tokens speak Unix time; the node's clock starts
    /// wherever its driver chose).
    pub unix_origin_micros: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            verifier: None,
            allow_anonymous: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            refresh_grace: DEFAULT_REFRESH_GRACE,
            unix_origin_micros: 0,
        }
    }
}

impl AuthConfig {
    /// Whether a connection starts authenticated as anonymous (no
    /// `connect` needed, no timeout).
    pub fn open(&self) -> bool {
        self.verifier.is_none() && self.allow_anonymous
    }
}
