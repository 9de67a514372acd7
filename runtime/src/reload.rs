//! Applying a reload (SIGHUP) to the running server.
//!
//! [`apply`] loads the configuration again with the arguments the server
//! started with ([`crate::config::Config::reload`]: flags and environment
//! still override the file), and, only if all of it is valid, puts it in
//! force at once: the connection limits, the configuration the HTTP side
//! reads (API key, timeouts, namespaces of API publishes), and every
//! shard's node settings (a [`ShardMsg::Reconfigure`] each, handled in
//! order with the shard's other input). The binary (`main.rs`) logs the
//! outcome and acts on what is its own (the log level).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::{ConfigError, Reload, ServeArgs};
use crate::mailbox::ShardMsg;
use crate::shared::Shared;

/// A request to reload, sent to the running server ([`crate::server::run`]).
#[derive(Debug)]
pub struct ReloadAsk {
    /// The arguments the server started with.
    pub args: ServeArgs,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Reload, ConfigError>>,
}

/// Reloads `shared`'s configuration with `args`; on an error nothing
/// changes. The returned [`Reload`] names what changed and what needs a
/// restart.
pub fn apply(shared: &Shared, args: &ServeArgs) -> Result<Reload, ConfigError> {
    let running = shared.config.get();
    let reload = running.reload(args)?;
    let c = &reload.config;
    shared.connections.set_max(c.max_connections);
    shared.http_connections.set_max(c.max_http_connections);
    if c.max_connections_per_ip != 0 {
        // `Config::reload` kept the running value if this would turn the
        // limit on or off.
        shared.connections_per_ip.set_max(c.max_connections_per_ip);
    }
    let config = Arc::new(reload.config.clone());
    shared.config.set(config.clone());
    for inbox in &shared.shards {
        // A shard that is stopping takes no more input; nothing to apply.
        let _ = inbox.send(ShardMsg::Reconfigure(config.clone()));
    }
    Ok(reload)
}
