//! The Redis backbone: the sequencer of every channel when many servers
//! share one Redis (`--redis URL`).
//!
//! It reproduces the semantics of core's in-memory
//! [`Hub`](wavecast_core::hub::Hub) with Redis as the shared state, so that
//! a node cannot tell the two apart except through [`BackboneEvent::Reset`] after a
//! lost link (tests/cluster.rs compares their history and expiry answers).
//! One thread (`wavecast-redis`) runs the driver: it consumes the same
//! messages as the in-memory hub thread (`ToHub`) and answers with the same
//! events.
//!
//! Split by job: [`scripts`] holds the Lua scripts, the keys and the
//! parsing of what Redis answers; [`commands`] what the driver does with
//! each message (a node's command, an API request; link up or down);
//! [`control`] the protocol between servers for the API's cluster-wide
//! requests; this module the link (connect, reconnect, resubscribe,
//! refresh) and the driver's loop and state.
//!
//! # Lifetimes
//!
//! The hub drops a channel the moment nothing is left in it; Redis keys
//! expire instead. The meta hash lives at least as long as the stream (the
//! history ttl, extended by each publish) and is leased (`presence_ttl`)
//! by every server that subscribes to the channel or has a present client
//! in it, refreshed every third of the lease. So while anyone listens, the
//! epoch stays; once nobody does, it outlives the hub's by at most one
//! lease, which only makes more positions recoverable, never a wrong one.
//! Presence entries of a server that crashed expire after one lease (the
//! next refresh or read of the channel by any server prunes them and
//! announces their leave).
//!
//! # Links and failures
//!
//! One multiplexed connection carries the scripts (pipelined); one pub/sub
//! connection per server holds one SUBSCRIBE per channel with a local
//! subscriber (the union of the shards'). When either fails, requests in
//! flight get [`BackboneError::Unavailable`], `/readyz` reports not ready,
//! and the driver reconnects with backoff (100 ms doubling to 2 s). Once
//! back it resubscribes every channel, refreshes leases and presence, and
//! sends [`BackboneEvent::Reset`] to every shard: each node then resubscribes and
//! fills its gaps from the streams (or tells its clients to recover).
//!
//! What differs from the hub, by design: requests fail with "unavailable"
//! while the link is down; channel lifetimes are leases (above); the
//! channel list of `/api/info` counts this server's channels only (the
//! others' are in Redis, not read for it).
//!
//! Ordering: the driver sends commands to Redis in the order it receives
//! them. A subscribe is completed (SUBSCRIBE acknowledged, epoch ensured)
//! before the next message is read, so the node's position read that follows
//! it sees the epoch its publications will carry, and no publication after
//! that position can be missed by the subscription.

mod commands;
mod control;
mod persistence;
mod scripts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use wavecast_core::backbone::{BackboneError, BackboneEvent, BackboneReply, NodeId, RequestId};
use wavecast_core::hub::ChannelStats;
use wavecast_core::protocol::ClientInfo;

use crate::backbone::{LinkStats, ToHub};
use crate::logging::startup::redact_url;
use crate::mailbox::{ShardInbox, ShardMsg};
use crate::sys::backlog::Receiver;
use control::{control_topic, is_control_topic, ControlEvent, Pending, CONTROL_ALL};
use scripts::{
    channel_of, invoke_presence_add, parse_message, presence_remove, presence_value, topic, Keys,
    Scripts,
};

pub use control::CONTROL_TIMEOUT;

/// First delay before reconnecting after a lost link.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for its answer: past it the link counts as
/// cut (a network cut that sends no reset shows this way).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Clients refreshed by one script call.
const REFRESH_BATCH: usize = 256;
/// Topics per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 512;
/// While Redis stays unreachable, how often the failure is logged again
/// (at warn; every attempt is logged at debug).
const DOWN_REMINDER: Duration = Duration::from_secs(30);

/// Settings of the Redis backbone.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The Redis URL (`redis://HOST:PORT/DB`).
    pub url: String,
    /// How long a server's presence entries and channel leases last
    /// without a refresh (refreshed every third of it): a crashed server's
    /// clients leave presence within this time.
    pub presence_ttl: Duration,
    /// This server's instance id (the start of its client ids): other
    /// servers address its control requests and replies by it.
    pub instance: String,
}

/// The Redis backbone could not start; the operator must fix the setting.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    /// The URL is not a valid Redis URL. (The URL is not repeated in the
    /// message: it may hold a password.)
    #[error("invalid redis URL: {source}")]
    Url {
        /// Why it is invalid.
        source: RedisError,
    },
    /// The driver thread could not be started.
    #[error("cannot start the redis backbone thread: {0}")]
    Thread(std::io::Error),
}

/// A client of this server present in a channel, as the driver remembers
/// it to refresh its entry and to write it again after Redis lost it: the
/// form and value of its presence entry ([`scripts::presence_value`]: the
/// user, or the client's INFO when it has infos), encoded once.
#[derive(Debug, Clone)]
struct Local {
    form: &'static str,
    value: String,
    announced: bool,
}

/// The live connections to Redis.
struct Link {
    conn: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
    /// Counts links, so that a failure reported by a request of an old link
    /// does not tear down the new one.
    generation: u64,
}

/// Starts the driver thread; returns the sender that [`crate::backbone`]
/// wraps. `ready` is kept true exactly while the link to Redis is up.
pub(crate) fn spawn(
    options: RedisOptions,
    shards: Vec<ShardInbox>,
    ready: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    rx: Receiver<ToHub>,
) -> Result<(), RedisStartError> {
    let client = redis::Client::open(options.url.as_str())
        .map_err(|source| RedisStartError::Url { source })?;
    let lease = options.presence_ttl.max(Duration::from_millis(300));
    let shown = redact_url(&options.url);
    std::thread::Builder::new()
        .name("wavecast-redis".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the redis backbone runtime");
                    return;
                }
            };
            let (lost_tx, lost_rx) = watch::channel(0);
            let (control_tx, control_rx) = mpsc::channel(CONTROL_EVENTS);
            let driver = Driver {
                client,
                shards: Arc::new(shards),
                ready,
                stats,
                lease,
                scripts: Arc::new(Scripts::new(String::new())),
                subs: BTreeMap::new(),
                present: BTreeMap::new(),
                removals: Vec::new(),
                lost_tx,
                generation: 0,
                instance: options.instance,
                pending: HashMap::new(),
                next_request: 0,
                control_tx,
                in_flight: Arc::new(InFlight::default()),
                shown,
                persistence: None,
            };
            rt.block_on(driver.run(rx, lost_rx, control_rx));
        })
        .map_err(RedisStartError::Thread)?;
    Ok(())
}

struct Driver {
    client: redis::Client,
    shards: Arc<Vec<ShardInbox>>,
    ready: Arc<AtomicBool>,
    /// Link errors and reconnects, for `/metrics`.
    stats: Arc<LinkStats>,
    lease: Duration,
    scripts: Arc<Scripts>,
    /// Channel -> shards (nodes) subscribed to it. A channel is in Redis's
    /// SUBSCRIBE list exactly while it is here (and the link is up).
    subs: BTreeMap<String, BTreeSet<NodeId>>,
    /// Channel -> client id -> this server's present client.
    present: BTreeMap<String, BTreeMap<String, Local>>,
    /// Presence removals made while the link was down: applied (and their
    /// leaves announced) once it is back.
    removals: Vec<(String, ClientInfo, bool)>,
    /// Requests report a lost link here, with their link's generation.
    /// The highest link generation a request saw broken: one value, not a
    /// queue, however many requests fail at once (a report of an older
    /// link changes nothing, since the driver compares with the current).
    lost_tx: watch::Sender<u64>,
    generation: u64,
    /// This server's instance id: its control topic is named after it.
    instance: String,
    /// This server's control requests waiting for replies, by request id.
    pending: HashMap<u64, Pending>,
    /// The last request id given out.
    next_request: u64,
    /// The driver's tasks report on control requests here, at most
    /// [`CONTROL_EVENTS`] waiting (a task waits for room; the driver reads
    /// them in every turn of its loop).
    control_tx: mpsc::Sender<ControlEvent>,
    /// Requests running on the link: at most [`MAX_IN_FLIGHT`]; past it
    /// the driver takes no more messages (so the backlog fills and the
    /// shards stop reading their clients).
    in_flight: Arc<InFlight>,
    /// The Redis URL as logs show it (password redacted).
    shown: String,
    /// What Redis last said of its persistence (logged when it changes).
    persistence: Option<persistence::Persistence>,
}

/// Most requests the driver runs on the link at once.
const MAX_IN_FLIGHT: usize = 1024;

/// Most reports on control requests waiting for the driver: two a request
/// (its publish's outcome and its expiry), for as many requests as the
/// driver runs at once.
const CONTROL_EVENTS: usize = 2 * MAX_IN_FLIGHT;

/// How often the driver looks again at a shard inbox that was over the
/// bound.
const INBOX_RECHECK: Duration = Duration::from_millis(1);

/// The driver's count of running requests, and a wake-up when one ends.
#[derive(Debug, Default)]
struct InFlight {
    running: AtomicUsize,
    done: tokio::sync::Notify,
}

impl InFlight {
    fn is_full(&self) -> bool {
        self.running.load(Ordering::Acquire) >= MAX_IN_FLIGHT
    }
}

/// Is any shard's inbox over the bound? Then the driver stops reading the
/// pub/sub stream (Redis buffers it, and past its own output limit drops
/// the link, after which every node recovers) rather than grow the inbox.
fn shards_behind(shards: &[ShardInbox], max: usize) -> bool {
    shards.iter().any(|s| s.len() > max)
}

/// The link failed while the driver used it.
struct Lost;

/// The link's down time, for its log lines.
struct Down {
    /// When it went down (`None`: never up yet, at startup).
    since: Option<Instant>,
    /// Connection attempts made since.
    attempts: u64,
    /// When a failed attempt was last logged at warn.
    warned: Option<Instant>,
}

impl Down {
    fn new(since: Option<Instant>) -> Down {
        Down {
            since,
            attempts: 0,
            warned: None,
        }
    }

    /// Whether this failed attempt is logged at warn: the first one, then
    /// one every [`DOWN_REMINDER`].
    fn remind(&mut self) -> bool {
        let now = Instant::now();
        if self.warned.is_some_and(|at| now - at < DOWN_REMINDER) {
            return false;
        }
        self.warned = Some(now);
        true
    }
}

impl Driver {
    async fn run(
        mut self,
        mut rx: Receiver<ToHub>,
        mut lost_rx: watch::Receiver<u64>,
        mut control_rx: mpsc::Receiver<ControlEvent>,
    ) {
        let mut link: Option<Link> = None;
        let mut backoff = MIN_BACKOFF;
        let mut next_attempt = Instant::now();
        // A link was up before: the next connect is a reconnect.
        let mut had_link = false;
        // While the link is down: since when, attempts made, and when the
        // failure was last logged at warn.
        let mut down = Down::new(None);
        let mut refresh = tokio::time::interval(self.lease / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(l) = link.as_mut() else {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(msg) => self.handle_down(msg),
                        None => return,
                    },
                    // Late reports of requests that the lost link failed.
                    Some(event) = control_rx.recv() => self.control_event(event),
                    _ = tokio::time::sleep_until(next_attempt) => {
                        down.attempts += 1;
                        match self.connect().await {
                            Ok(mut l) => {
                                match down.since {
                                    None => tracing::info!(
                                        redis = %self.shown,
                                        "backbone link up: connected to redis at {}",
                                        self.shown
                                    ),
                                    Some(since) => tracing::info!(
                                        redis = %self.shown,
                                        down_ms = since.elapsed().as_millis() as u64,
                                        attempts = down.attempts,
                                        "backbone link up again: reconnected to redis at {} after {:.1}s \
                                         ({} attempts); every shard resubscribes and recovers",
                                        self.shown,
                                        since.elapsed().as_secs_f64(),
                                        down.attempts
                                    ),
                                }
                                if let Some(found) = persistence::read(&mut l.conn).await {
                                    persistence::report(&mut self.persistence, found);
                                }
                                if std::mem::replace(&mut had_link, true) {
                                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                                }
                                down = Down::new(None);
                                link = Some(l);
                                backoff = MIN_BACKOFF;
                                self.ready.store(true, Ordering::Release);
                                // Whatever the nodes had in flight or missed
                                // is theirs to redo now.
                                for shard in self.shards.iter() {
                                    let _ = shard.send(ShardMsg::Backbone(BackboneEvent::Reset));
                                }
                            }
                            Err(e) => {
                                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                                if down.remind() {
                                    tracing::warn!(
                                        error = %e,
                                        redis = %self.shown,
                                        attempts = down.attempts,
                                        "cannot connect to redis at {}: {e} (retrying every {}s at most; \
                                         requests answer unavailable meanwhile)",
                                        self.shown,
                                        MAX_BACKOFF.as_secs()
                                    );
                                } else {
                                    tracing::debug!(error = %e, retry_in = ?backoff, "cannot connect to redis");
                                }
                                next_attempt = Instant::now() + backoff;
                                backoff = (backoff * 2).min(MAX_BACKOFF);
                            }
                        }
                    }
                }
                continue;
            };
            let generation = l.generation;
            let full = self.in_flight.is_full();
            let behind = shards_behind(&self.shards, rx.max());
            let lost = tokio::select! {
                msg = rx.recv(), if !full => match msg {
                    Some(msg) => self.handle_up(l, msg).await.is_err(),
                    None => return,
                },
                _ = self.in_flight.done.notified(), if full => false,
                _ = tokio::time::sleep(INBOX_RECHECK), if behind => false,
                msg = l.stream.next(), if !behind => match msg {
                    Some(msg) => {
                        self.dispatch(l, &msg);
                        false
                    }
                    None => true,
                },
                Some(event) = control_rx.recv() => {
                    self.control_event(event);
                    false
                }
                Ok(()) = lost_rx.changed() => *lost_rx.borrow_and_update() == generation,
                _ = refresh.tick() => {
                    self.refresh(l);
                    false
                }
            };
            if lost {
                tracing::warn!(
                    redis = %self.shown,
                    "backbone link down: lost the link to redis at {}; reconnecting (requests \
                     answer unavailable, /readyz 503, until it is back)",
                    self.shown
                );
                down = Down::new(Some(Instant::now()));
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.ready.store(false, Ordering::Release);
                link = None;
                // Their replies would come over the lost connection:
                // dropping the reply slots answers "unavailable".
                self.pending.clear();
                next_attempt = Instant::now() + MIN_BACKOFF;
                backoff = MIN_BACKOFF * 2;
            }
        }
    }

    /// Opens both connections, loads the scripts, resubscribes every
    /// channel and writes this server's leases and presence again.
    async fn connect(&mut self) -> Result<Link, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| timeout_error())??;
        let (mut sink, stream) = pubsub.split();
        // Before any script runs on this connection: the first touch of a
        // channel after a restart of a Redis without the append-only file
        // must see the new process's marker (a new epoch, see the
        // `scripts` module, "Rewinds").
        let marker = persistence::marker(&mut conn)
            .await
            .ok_or_else(timeout_error)?;
        self.scripts = Arc::new(Scripts::new(marker));
        for script in self.scripts.all() {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        // The control topics first: they are what other servers' API
        // requests reach this one by.
        let topics: Vec<String> = [CONTROL_ALL.to_owned(), control_topic(&self.instance)]
            .into_iter()
            .chain(self.subs.keys().map(|c| topic(c)))
            .collect();
        for chunk in topics.chunks(SUBSCRIBE_BATCH) {
            tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(chunk))
                .await
                .map_err(|_| timeout_error())??;
        }
        // Each removal is forgotten only once Redis has it, so a failure
        // here leaves the rest for the next attempt.
        while let Some((channel, info, announce)) = self.removals.first().cloned() {
            presence_remove(&self.scripts, &mut conn, &channel, &info, announce).await?;
            self.removals.remove(0);
        }
        // Epochs and leases before the nodes' Reset: their history reads
        // must find the channels they subscribe to.
        let channels: BTreeSet<String> = self
            .subs
            .keys()
            .chain(self.present.keys())
            .cloned()
            .collect();
        for channel in channels {
            for args in self.refresh_args(&channel) {
                let keys = Keys::new(&channel);
                invoke_presence_add(&self.scripts, &mut conn, &keys, &args).await?;
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(Link {
            conn,
            sink,
            stream,
            generation: self.generation,
        })
    }

    /// The argument lists (lease, then client quadruples) that refresh this
    /// server's lease and presence in one channel: at least one list.
    fn refresh_args(&self, channel: &str) -> Vec<Vec<String>> {
        let lease = self.lease.as_millis().to_string();
        let Some(clients) = self.present.get(channel) else {
            return vec![vec![lease]];
        };
        let clients: Vec<(&String, &Local)> = clients.iter().collect();
        let mut out = Vec::new();
        for chunk in clients.chunks(REFRESH_BATCH) {
            let mut args = vec![lease.clone()];
            for (client, local) in chunk {
                args.push((*client).clone());
                args.push(local.form.to_owned());
                args.push(local.value.clone());
                args.push(if local.announced { "1" } else { "0" }.to_owned());
            }
            out.push(args);
        }
        if out.is_empty() {
            out.push(vec![lease]);
        }
        out
    }

    /// Refreshes every lease and presence entry of this server, and pings
    /// the pub/sub connection (without waiting: failures report a lost
    /// link). The ping is what notices a silent network cut on a server
    /// that publishes nothing.
    fn refresh(&self, link: &Link) {
        let mut sink = link.sink.clone();
        let lost = self.lost_tx.clone();
        let generation = link.generation;
        tokio::spawn(async move {
            let r = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await;
            if !matches!(r, Ok(Ok(_))) {
                lost_link(&lost, generation);
            }
        });
        let channels: BTreeSet<&String> = self.subs.keys().chain(self.present.keys()).collect();
        for channel in channels {
            for args in self.refresh_args(channel) {
                let keys = Keys::new(channel);
                let scripts = self.scripts.clone();
                let mut conn = link.conn.clone();
                let lost = self.lost_tx.clone();
                let generation = link.generation;
                tokio::spawn(async move {
                    if let Err(e) = invoke_presence_add(&scripts, &mut conn, &keys, &args).await {
                        report(&lost, generation, &e);
                    }
                });
            }
        }
    }

    /// Runs a request on the link as a task. Tasks start in the order they
    /// are spawned (tokio's current-thread scheduler is FIFO), and each
    /// sends its command on its first poll, so Redis sees them in arrival
    /// order. An error that means a broken link is reported.
    fn spawn<F, Fut>(&self, link: &Link, f: F)
    where
        F: FnOnce(Arc<Scripts>, MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Option<RedisError>> + Send + 'static,
    {
        let fut = f(self.scripts.clone(), link.conn.clone());
        let lost = self.lost_tx.clone();
        let generation = link.generation;
        let in_flight = self.in_flight.clone();
        in_flight.running.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Some(e) = fut.await {
                report(&lost, generation, &e);
            }
            in_flight.running.fetch_sub(1, Ordering::AcqRel);
            in_flight.done.notify_one();
        });
    }

    /// Removes `node` from the channel's subscribers; true if it was the
    /// last one (the server's subscription must go).
    fn unsubscribed(&mut self, node: NodeId, channel: &str) -> bool {
        let Some(set) = self.subs.get_mut(channel) else {
            return false;
        };
        let removed = set.remove(&node);
        if set.is_empty() {
            self.subs.remove(channel);
            return removed;
        }
        false
    }

    fn present_add(&mut self, channel: &str, info: &ClientInfo, announce: bool) -> Local {
        let (form, value) = presence_value(info);
        let clients = self.present.entry(channel.to_owned()).or_default();
        // The entry takes the latest info; its join stays announced.
        let announced = announce || clients.get(&info.client).is_some_and(|l| l.announced);
        let local = Local {
            form,
            value,
            announced,
        };
        clients.insert(info.client.clone(), local.clone());
        local
    }

    fn present_remove(&mut self, channel: &str, client: &str) {
        if let Some(clients) = self.present.get_mut(channel) {
            clients.remove(client);
            if clients.is_empty() {
                self.present.remove(channel);
            }
        }
    }

    /// What this server knows of channels: the ones its shards subscribe
    /// to or have present clients in. Epochs and offsets live in Redis and
    /// are not read for this.
    fn channel_stats(&self) -> Vec<ChannelStats> {
        let names: BTreeSet<&String> = self.subs.keys().chain(self.present.keys()).collect();
        names
            .into_iter()
            .map(|name| ChannelStats {
                name: name.clone(),
                nodes: self
                    .subs
                    .get(name)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default(),
                presence: self.present.get(name).map_or(0, BTreeMap::len),
                epoch: String::new(),
                top: 0,
                kept: 0,
            })
            .collect()
    }

    fn reply(&self, node: NodeId, request: RequestId, reply: BackboneReply) {
        send_reply(&self.shards, node, request, reply);
    }

    /// A pub/sub message: to every shard subscribed to its channel, or,
    /// on a control topic, to [`Driver::control_message`].
    fn dispatch(&mut self, link: &Link, msg: &redis::Msg) {
        let name = msg.get_channel_name();
        let Some(channel) = channel_of(name) else {
            if is_control_topic(name) {
                self.control_message(link, msg.get_payload_bytes());
            }
            return;
        };
        let Some(nodes) = self.subs.get(channel) else {
            return; // unsubscribed meanwhile
        };
        let Some(event) = parse_message(channel, msg.get_payload_bytes()) else {
            // Only another wavecast writes these topics; a message we cannot
            // read is skipped, and the nodes see the offset gap it leaves
            // at the next publication and fill it from the stream.
            tracing::warn!(channel, "unreadable message on a wavecast topic");
            return;
        };
        for node in nodes {
            if let Some(shard) = self.shards.get(node.0 as usize) {
                let _ = shard.send(ShardMsg::Backbone(event.clone()));
            }
        }
    }
}

fn send_reply(shards: &[ShardInbox], node: NodeId, request: RequestId, reply: BackboneReply) {
    if let Some(shard) = shards.get(node.0 as usize) {
        let _ = shard.send(ShardMsg::Backbone(BackboneEvent::Reply { request, reply }));
    }
}

/// True if the error means the link is broken (as opposed to a command
/// Redis refused).
fn link_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Reports that the link of `generation` broke.
fn lost_link(lost: &watch::Sender<u64>, generation: u64) {
    lost.send_modify(|g| *g = (*g).max(generation));
}

fn report(lost: &watch::Sender<u64>, generation: u64, e: &RedisError) {
    if link_broken(e) {
        lost_link(lost, generation);
    } else {
        tracing::warn!(error = %e, "redis refused a backbone command");
    }
}

fn lost_or_log(e: &RedisError) -> Result<(), Lost> {
    if link_broken(e) {
        Err(Lost)
    } else {
        tracing::warn!(error = %e, "redis refused a backbone command");
        Ok(())
    }
}

/// The reply half of a result (a broken link answers "unavailable") and
/// the error to report.
fn split<T>(r: Result<T, RedisError>) -> (Result<T, BackboneError>, Option<RedisError>) {
    match r {
        Ok(v) => (Ok(v), None),
        Err(e) if link_broken(&e) => (Err(BackboneError::Unavailable), Some(e)),
        Err(e) => (Err(BackboneError::Internal(e.to_string())), Some(e)),
    }
}

fn timeout_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_is_refused_at_start() {
        let options = RedisOptions {
            url: "http://127.0.0.1:6379".into(),
            presence_ttl: Duration::from_secs(15),
            instance: "0a1b2c".into(),
        };
        let r = crate::backbone::Backbone::start_redis(options, Vec::new(), 1);
        assert!(matches!(r, Err(RedisStartError::Url { .. })), "{r:?}");
    }
}
