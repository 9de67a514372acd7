//! Who a connection is: tokens ([`token`]) and what a verified identity
//! carries ([`Identity`]).
//!
//! The runtime loads the keys (files, a JWKS URL) and hands them in; the
//! core verifies tokens with the time passed in, so that authentication is
//! as deterministic as the rest of the core. What an identity may do is
//! decided by [`crate::admission`].

pub mod token;

pub use token::{
    ConnectionClaims, KeyError, SubscriptionClaims, TokenConfig, TokenError, Verifier,
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_SIZE, MAX_INFO_SIZE,
};
