//! Replacing a node's settings while it runs (the server's reload).
//!
//! What changes, and for whom:
//! - namespaces and their permissions, the rate limits, the subscription
//!   limit and the token rules apply to every command from now on,
//!   including those of connections already open: a connection keeps its
//!   subscriptions and its authentication, but its next subscribe or
//!   publish is judged by the new rules;
//! - the connection settings (message size, queue budget) apply to
//!   connections opened from now on; an open connection keeps the ones it
//!   was opened with;
//! - the bound on commands in flight applies at once: a connection held at
//!   the old bound that is below the new one is read again;
//! - the token key set fetched from a JWKS URL is kept when the new rules
//!   still use one (it is the fetcher's, which the reload does not
//!   restart); the client id prefix is the node's for its lifetime and is
//!   never replaced.

use std::rc::Rc;

use super::{Node, NodeConfig};
use crate::connection::{ConnectionConfig, Framing};
use crate::protocol::close;
use crate::time::Timestamp;

impl Node {
    /// Replaces the node's settings with `config` at `now` (see the
    /// module's doc for what applies to whom).
    pub fn reconfigure(&mut self, now: Timestamp, mut config: NodeConfig) {
        config.client_prefix = std::mem::take(&mut self.config.client_prefix);
        if let (Some(new), Some(old)) = (
            config.auth.verifier.as_mut(),
            self.config.auth.verifier.as_ref(),
        ) {
            if new.config().jwks {
                new.keep_key_set(old);
            }
        }
        let (echo, pubsub, sse) = connection_configs(&config.connection);
        self.echo_config = echo;
        self.pubsub_config = pubsub;
        self.sse_config = sse;
        if config.compression != self.config.compression {
            // Level or on/off: a new codec (it holds nothing between
            // messages, so nothing is lost).
            self.codec = super::codec_for(&config.compression);
        }
        self.config = config;
        let max = self.config.max_requests_in_flight;
        let below: Vec<_> = self
            .slab
            .ids()
            .filter(|&id| {
                self.slab
                    .get(id)
                    .is_some_and(|c| c.paused && !c.held && usize::from(c.in_flight) < max)
            })
            .collect();
        self.unpaused.extend(below);
        self.resume_unpaused(now);
    }
}

/// The settings of echo, pub/sub and SSE connections, from the node's
/// connection settings: pub/sub clients get wavecast's own close codes,
/// which say whether to reconnect and recover (docs/PROTOCOL.md).
pub(super) fn connection_configs(
    c: &ConnectionConfig,
) -> (
    Rc<ConnectionConfig>,
    Rc<ConnectionConfig>,
    Rc<ConnectionConfig>,
) {
    let pubsub = ConnectionConfig {
        heartbeat_close_code: close::HEARTBEAT_TIMEOUT,
        slow_consumer_close_code: close::SLOW_CONSUMER,
        ping_flood_close_code: close::TOO_MANY_REQUESTS,
        ..c.clone()
    };
    let sse = ConnectionConfig {
        framing: Framing::EventStream,
        ..pubsub.clone()
    };
    (Rc::new(c.clone()), Rc::new(pubsub), Rc::new(sse))
}
