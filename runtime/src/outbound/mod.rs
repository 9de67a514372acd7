//! Requests the server makes to others: the backend proxies
//! (`connect_proxy`, `refresh_proxy`, `subscribe_proxy`,
//! `publish_proxy`) and the token key set (`token_jwks_url`). One module
//! one job:
//! - `client.rs`: the one HTTP client (hyper-util's pooled client, rustls
//!   for https), every request with a deadline and a bounded body;
//! - `proxy.rs`: a node's `Ask::Proxy` as a POST, its outcome as a
//!   `ProxyAnswer`; the handshake headers a connection keeps for it;
//! - `jwks.rs`: the one fetcher of the key set per server (at start,
//!   periodically, on an unknown `kid` at most every 30 s).
//!
//! All of that work runs on the server's runtime (the thread that called
//! `server::run`, which otherwise only waits for the shutdown signal and
//! applies reloads), not
//! on the shards: a backend's TLS handshakes and slow answers then never
//! take time from a shard's data path, one connection pool serves every
//! shard, and the shards stay free of anything that waits. A shard starts
//! a call with [`Outbound::call_proxy`] (from its thread: the task is
//! spawned onto the server's runtime through its handle) and gets the
//! answer in its inbox (`ShardMsg::Proxy`, `ShardMsg::Keys`), like a
//! backbone event.
//!
//! At most `proxy_max_in_flight` proxy calls are in flight server-wide;
//! beyond it a call is answered at once, without a request, with
//! `Unavailable` (the client gets error 100 and retries), so a reconnect
//! storm cannot flatten the backend.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
use tokio::runtime::Handle;
use tokio::sync::watch;
use wavecast_core::handshake::RequestHead;
use wavecast_core::proxy::{AskId, ProxyAnswer, ProxyKind, ProxyRequest};

use crate::config::Config;
use crate::mailbox::{ShardInbox, ShardMsg};
use crate::sys::limit::ConnectionLimit;

pub mod client;
pub mod jwks;
pub mod proxy;

pub use client::HttpClient;
pub use proxy::ForwardedHeaders;

/// What a proxy call needs from the configuration.
#[derive(Debug)]
struct ProxySettings {
    connect: Option<hyper::Uri>,
    refresh: Option<hyper::Uri>,
    subscribe: Option<hyper::Uri>,
    publish: Option<hyper::Uri>,
    timeout: Duration,
    headers: Vec<HeaderName>,
}

/// The outbound side of a server, in `Shared`.
#[derive(Debug)]
pub struct Outbound {
    /// The server's runtime, where every request runs.
    runtime: Handle,
    /// `None` when nothing outbound is configured (no TLS setup then).
    client: Option<HttpClient>,
    proxies: ProxySettings,
    /// Proxy calls in flight, server-wide (`proxy_max_in_flight`).
    in_flight: Arc<ConnectionLimit>,
    /// The key-set fetcher's asks, with `token_jwks_url`.
    keys: Option<Arc<jwks::KeyAsks>>,
}

impl Outbound {
    /// The outbound side for `config`, for `shards` shards, its requests
    /// run on `runtime`.
    pub fn new(config: &Config, shards: usize, runtime: Handle) -> Outbound {
        let p = config.proxies();
        let any = p.connect || p.refresh || p.subscribe || p.publish;
        let jwks = config.token_jwks_url.is_some();
        Outbound {
            runtime,
            client: (any || jwks).then(HttpClient::new),
            proxies: ProxySettings {
                connect: config.connect_proxy.clone(),
                refresh: config.refresh_proxy.clone(),
                subscribe: config.subscribe_proxy.clone(),
                publish: config.publish_proxy.clone(),
                timeout: config.proxy_timeout,
                headers: config
                    .proxy_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect(),
            },
            in_flight: Arc::new(ConnectionLimit::new(config.proxy_max_in_flight)),
            keys: jwks.then(|| Arc::new(jwks::KeyAsks::new(shards))),
        }
    }

    /// Starts the key-set fetcher on the server's runtime, if
    /// `token_jwks_url` is set; it stops when `stop` turns true.
    pub fn start_jwks(&self, config: &Config, shards: &[ShardInbox], stop: watch::Receiver<bool>) {
        let (Some(url), Some(asks), Some(client), Some(verifier)) = (
            &config.token_jwks_url,
            &self.keys,
            &self.client,
            &config.verifier,
        ) else {
            return;
        };
        let fetcher = jwks::Fetcher {
            url: url.clone(),
            refresh: config.token_jwks_refresh,
            client: client.clone(),
            scratch: verifier.clone(),
            shards: shards.to_vec(),
            asks: asks.clone(),
        };
        self.runtime.spawn(fetcher.run(stop));
    }

    /// The handshake headers a new connection keeps for the proxies (none
    /// unless `proxy_headers` names some and the request has them).
    pub fn forwarded(&self, head: &RequestHead) -> Option<ForwardedHeaders> {
        proxy::forwarded(head, &self.proxies.headers)
    }

    /// The proxy calls in flight now, and the bound.
    pub fn proxies_in_flight(&self) -> (usize, usize) {
        (self.in_flight.held(), self.in_flight.max())
    }

    /// Starts the proxy call a node asked for: its answer arrives in
    /// `inbox` as `ShardMsg::Proxy`. `Err` is the answer to give the node
    /// at once, without a request (too many in flight, or the proxy is not
    /// configured).
    pub fn call_proxy(
        &self,
        inbox: &ShardInbox,
        ask: AskId,
        kind: ProxyKind,
        request: &ProxyRequest,
        headers: Option<&ForwardedHeaders>,
    ) -> Result<(), ProxyAnswer> {
        let url = match kind {
            ProxyKind::Connect => &self.proxies.connect,
            ProxyKind::Refresh => &self.proxies.refresh,
            ProxyKind::Subscribe => &self.proxies.subscribe,
            ProxyKind::Publish => &self.proxies.publish,
        };
        let (Some(url), Some(client)) = (url, &self.client) else {
            return Err(ProxyAnswer::Unavailable(format!(
                "{} is not configured",
                kind.setting()
            )));
        };
        let http = proxy::request(url, request.to_json(), headers)
            .map_err(|e| ProxyAnswer::Unavailable(format!("proxy request: {e}")))?;
        if !self.in_flight.try_acquire() {
            return Err(ProxyAnswer::Unavailable(
                "too many proxy requests in flight".into(),
            ));
        }
        let slot = Slot(self.in_flight.clone());
        let client = client.clone();
        let inbox = inbox.clone();
        let timeout = self.proxies.timeout;
        self.runtime.spawn(async move {
            let answer = proxy::call(&client, kind, http, timeout).await;
            // Free before the node hears of it: a call it makes on this
            // answer finds the slot.
            drop(slot);
            // Closed: the shard is gone, and the connection with it.
            let _ = inbox.send(ShardMsg::Proxy { ask, answer });
        });
        Ok(())
    }

    /// Passes shard `shard`'s `Ask::Keys` to the key-set fetcher; false
    /// when there is none (no `token_jwks_url`): answer the node at once.
    pub fn ask_keys(&self, shard: usize) -> bool {
        match &self.keys {
            Some(asks) => {
                asks.ask(shard);
                true
            }
            None => false,
        }
    }
}

/// A slot of `proxy_max_in_flight`, given back when dropped (the call's
/// task ends, or is dropped with the runtime).
struct Slot(Arc<ConnectionLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}
