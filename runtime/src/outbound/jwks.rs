//! The token key set of `token_jwks_url`: one fetcher per server (not per
//! shard), a task of the server's runtime.
//!
//! It fetches the set at start, every `token_jwks_refresh`, and when a
//! shard's node met a token whose `kid` it does not know (`Ask::Keys`,
//! passed on with [`KeyAsks::ask`]), at most once per
//! [`ON_DEMAND_INTERVAL`] for those: a stream of tokens with made-up key
//! ids must not become a stream of requests to the identity provider. (The
//! start and periodic fetches do not count against it: a key rotated in
//! just after one is still found at once.)
//!
//! A fetched document is checked first (it must parse as a JWKS with at
//! least one usable key, on a scratch copy of the verifier); then, if it
//! differs from the one the nodes have, it goes to every shard's node
//! (`ShardMsg::Keys(Some)`), which also answers every ask taken so far.
//! Asks that no new document answers (rate-limited, the fetch failed, the
//! set is unchanged) get `ShardMsg::Keys(None)`: the node holds the
//! connection until then and refuses the token. A failed fetch keeps the
//! old keys (nothing is sent to nodes that did not ask); if the first one
//! fails, tokens with a `kid` are refused until one succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::ACCEPT;
use hyper::{Request, Uri};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use wavecast_core::auth::Verifier;

use super::client::HttpClient;
use crate::mailbox::{ShardInbox, ShardMsg};

/// Least time between two fetches made because a token named an unknown
/// `kid` (the "refreshed on an unknown kid at most every 30 s").
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(30);
/// Time one fetch of the key set may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest key set read, in bytes; a longer one is a failed fetch.
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// The shards' asks for a fetch, one flag per shard (so however many
/// tokens with unknown key ids arrive, a shard has at most one ask
/// waiting), and the fetcher's wake-up.
#[derive(Debug)]
pub struct KeyAsks {
    asked: Vec<AtomicBool>,
    wake: Notify,
}

impl KeyAsks {
    /// Room for `shards` shards, none asking.
    pub fn new(shards: usize) -> KeyAsks {
        KeyAsks {
            asked: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            wake: Notify::new(),
        }
    }

    /// Shard `shard`'s node wants a fresh key set; it gets
    /// `ShardMsg::Keys` back, with or without one.
    pub fn ask(&self, shard: usize) {
        self.asked[shard].store(true, Ordering::Release);
        // Kept as a permit if the fetcher is busy: no ask is missed.
        self.wake.notify_one();
    }

    /// The shards that asked since the last take.
    fn take(&self) -> Vec<usize> {
        (0..self.asked.len())
            .filter(|&i| self.asked[i].swap(false, Ordering::AcqRel))
            .collect()
    }
}

/// The fetcher's state; [`Fetcher::run`] is its task.
pub struct Fetcher {
    /// `token_jwks_url`.
    pub url: Uri,
    /// `token_jwks_refresh`.
    pub refresh: Duration,
    /// The outbound client.
    pub client: HttpClient,
    /// A copy of the nodes' verifier, to check a document before it is
    /// sent.
    pub scratch: Verifier,
    /// Every shard's inbox, by index.
    pub shards: Vec<ShardInbox>,
    /// The shards' asks.
    pub asks: Arc<KeyAsks>,
}

/// Why a fetched document was not used.
#[derive(Debug, thiserror::Error)]
enum KeysError {
    #[error(transparent)]
    Fetch(#[from] super::client::FetchError),
    #[error("answered {0}")]
    Status(hyper::StatusCode),
    #[error("not UTF-8")]
    NotText,
    #[error("{0}")]
    NotJwks(String),
    #[error("no usable key in the set (RSA, EC P-256/P-384, Ed25519, each with a kid)")]
    NoKey,
}

impl Fetcher {
    /// Fetches at start, every `refresh` and on asks, until `stop` turns
    /// true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // The document the nodes were last given.
        let mut current: Option<Arc<str>> = None;
        let mut last_on_demand: Option<Instant> = None;
        match self.fetch().await {
            Ok(doc) => self.install(&mut current, doc),
            Err(e) => tracing::error!(
                url = %self.url, error = %e,
                "cannot fetch the token key set (token_jwks_url); tokens with a kid are refused until a fetch succeeds"
            ),
        }
        let mut next = Instant::now() + self.refresh;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    next = Instant::now() + self.refresh;
                    match self.fetch().await {
                        Ok(doc) => self.install(&mut current, doc),
                        Err(e) => tracing::warn!(
                            url = %self.url, error = %e,
                            "cannot refresh the token key set; the keys fetched before stay"
                        ),
                    }
                }
                _ = self.asks.wake.notified() => {
                    let asking = self.asks.take();
                    if asking.is_empty() {
                        continue;
                    }
                    let now = Instant::now();
                    if last_on_demand.is_some_and(|t| now < t + ON_DEMAND_INTERVAL) {
                        tracing::debug!("unknown token kid: key set fetched less than 30s ago, not again");
                        self.answer_without(&asking);
                        continue;
                    }
                    last_on_demand = Some(now);
                    match self.fetch().await {
                        Ok(doc) if current.as_deref() != Some(&*doc) => {
                            // The new set answers the asks too.
                            self.install(&mut current, doc);
                        }
                        Ok(_) => self.answer_without(&asking),
                        Err(e) => {
                            tracing::warn!(
                                url = %self.url, error = %e,
                                "cannot fetch the token key set for an unknown kid; the keys fetched before stay"
                            );
                            self.answer_without(&asking);
                        }
                    }
                }
                stopped = stop.changed() => {
                    if stopped.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// Fetches the document and checks that it is a usable key set.
    async fn fetch(&mut self) -> Result<Arc<str>, KeysError> {
        let request = Request::get(self.url.clone())
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| KeysError::NotJwks(e.to_string()))?;
        let response = self
            .client
            .send(request, FETCH_TIMEOUT, MAX_DOCUMENT)
            .await?;
        if !response.status.is_success() {
            return Err(KeysError::Status(response.status));
        }
        let text = std::str::from_utf8(&response.body).map_err(|_| KeysError::NotText)?;
        match self.scratch.set_jwks(text) {
            Ok(0) => Err(KeysError::NoKey),
            Ok(_) => Ok(Arc::from(text)),
            Err(e) => Err(KeysError::NotJwks(e)),
        }
    }

    /// Hands a fetched document to every node unless they have it already
    /// (then only the asks waiting now are answered, without it).
    fn install(&self, current: &mut Option<Arc<str>>, doc: Arc<str>) {
        if current.as_deref() == Some(&*doc) {
            let asking = self.asks.take();
            self.answer_without(&asking);
            return;
        }
        // Taken before sending: an ask made after this point is answered
        // later (by the next fetch), one made before by this document.
        let _answered = self.asks.take();
        tracing::info!(url = %self.url, bytes = doc.len(), "token key set fetched");
        for inbox in &self.shards {
            let _ = inbox.send(ShardMsg::Keys(Some(doc.clone())));
        }
        *current = Some(doc);
    }

    /// Tells the asking shards that no new key set came.
    fn answer_without(&self, asking: &[usize]) {
        for &i in asking {
            let _ = self.shards[i].send(ShardMsg::Keys(None));
        }
    }
}
