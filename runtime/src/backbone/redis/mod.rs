//! The Redis backbone: the sequencer of every channel when many servers
//! share one Redis (`--redis URL`).
//!
//! It reproduces the semantics of core's in-memory
//! [`Hub`](wavecast_core::hub::Hub) with Redis as the shared state, so that
//! a node cannot tell the two apart except through [`Event::Reset`] after a
//! lost link (tests/cluster.rs compares their history and expiry answers).
//! One thread (`wavecast-redis`) runs the driver: it consumes the same
//! messages as the in-memory hub thread (`ToHub`) and answers with the same
//! events.
//!
//! # Keys (per channel `CH`)
//!
//! - `wc:{CH}:m`: hash with the channel's epoch (`e`) and top offset (`o`).
//!   It is created with a fresh epoch when missing (by a publish, a
//!   subscribe or a presence add), so a channel that went away starts a new
//!   epoch: positions from before can never be taken for positions after.
//! - `wc:{CH}:s`: stream of kept publications, entry id `OFFSET-0`, fields
//!   `x` (expiry, Redis time in ms) and `d` (the JSON data); capped at the
//!   history size, expired entries trimmed from the front.
//! - `wc:{CH}:p` / `wc:{CH}:px`: presence: client id to `FLAG USER`
//!   (FLAG `1` if its join was announced), and client id to expiry time.
//! - `wc:{CH}:pub`: the pub/sub topic: `p\nEPOCH\nOFFSET\nDATA` for a
//!   publication, `j\nCLIENT\nUSER` / `l\nCLIENT\nUSER` for join/leave.
//!
//! And per server, two control topics (see "Control requests"): `wc:ctl`,
//! which every server subscribes to, and `wc:ctl:INSTANCE`, its own.
//!
//! Every write is one Lua script, so each is atomic: a publish increments
//! the offset, appends to the stream and PUBLISHes in one step, which makes
//! the pub/sub order the offset order for every server. A history read
//! reads epoch, top and range in one step too. All times are Redis's own
//! clock (`TIME`), so servers' clocks do not matter.
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
//! sends [`Event::Reset`] to every shard: each node then resubscribes and
//! fills its gaps from the streams (or tells its clients to recover).
//!
//! What differs from the hub, by design: requests fail with "unavailable"
//! while the link is down; channel lifetimes are leases (above); the
//! channel list of `/api/info` counts this server's channels only (the
//! others' are in Redis, not read for it).
//!
//! # Control requests
//!
//! The HTTP API's `disconnect` and `channels` reach the whole cluster
//! through small JSON messages (`ControlMsg`) on control topics, carried
//! by the same pub/sub connection (its SUBSCRIBEs are restored with the
//! channels' after a reconnect). A client id starts with the instance id
//! of the server that holds it, so a disconnect is PUBLISHed to
//! `wc:ctl:INSTANCE`; a channel count is PUBLISHed to `wc:ctl`, which
//! every server, this one included, receives. Each server answers through
//! its shards and PUBLISHes the reply, tagged with the request's id, to
//! the asker's own topic. PUBLISH's answer is how many servers got the
//! request, hence how many replies to expect: 0 for a disconnect means no
//! such server is running (the client is not found). The driver waits at
//! most [`CONTROL_TIMEOUT`]: a disconnect without any reply by then fails
//! ([`ControlError::NoReply`]); a channel count answers with the replies
//! that arrived (a server may die mid-request). Replies to unknown or
//! expired requests, and messages that do not parse, are ignored (the
//! latter with a warning). Requests in flight when the link is lost fail
//! with "unavailable". The pending requests live in the driver's own state,
//! so nothing on the fan-out path takes a lock for them.
//!
//! Ordering: the driver sends commands to Redis in the order it receives
//! them. A subscribe is completed (SUBSCRIBE acknowledged, epoch ensured)
//! before the next message is read, so the node's position read that follows
//! it sees the epoch its publications will carry, and no publication after
//! that position can be missed by the subscription.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError, Script, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wavecast_core::backbone::{
    BackboneError, Command, Event, HistoryPage, HistoryPolicy, NodeId, Reply, RequestId,
};
use wavecast_core::hub::{ChannelStats, NO_EPOCH};
use wavecast_core::protocol::{ClientInfo, Payload, Publication, StreamPosition};

use crate::backbone::{
    disconnect_local, local_channels, ClusterChannels, Control, ControlError, ShardInbox, ShardMsg,
    ToHub,
};
use crate::server::is_instance;

/// First delay before reconnecting after a lost link.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for its answer: past it the link counts as
/// cut (a network cut that sends no reset shows this way).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest history ttl handed to Redis (about 100 years).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Largest history size handed to Redis: MAXLEN takes a signed 64-bit
/// count, and four billion publications are beyond any Redis's memory.
const MAX_HISTORY_SIZE: usize = u32::MAX as usize;
/// Clients refreshed by one script call.
const REFRESH_BATCH: usize = 256;
/// Topics per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 512;
/// How long a control request (an API disconnect or channel count over
/// the cluster) waits for the other servers' replies.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// The control topic every server subscribes to: requests for all.
const CONTROL_ALL: &str = "wc:ctl";

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

/// Lua shared by the scripts: Redis time in ms, creating a channel's meta
/// with a fresh epoch, extending a key's expiry (never shortening it), and
/// pruning expired presence (announcing the leave of announced clients).
const LUA_COMMON: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ensure(meta, stream)
  local epoch = redis.call('HGET', meta, 'e')
  if epoch then return epoch end
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2])) .. '-' .. redis.call('INCR', 'wc:epochs')
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', '0')
  return epoch
end
local function extend(key, ms)
  if ms > 0 and redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
local function prune(p, px, topic, now)
  local gone = redis.call('ZRANGEBYSCORE', px, '-inf', now)
  for _, c in ipairs(gone) do
    local old = redis.call('HGET', p, c)
    redis.call('HDEL', p, c)
    redis.call('ZREM', px, c)
    if old and string.sub(old, 1, 1) == '1' then
      redis.call('PUBLISH', topic, 'l\n' .. c .. '\n' .. string.sub(old, 2))
    end
  end
end
"#;

/// KEYS: meta, stream, topic. ARGV: data, history size, history ttl (ms).
/// Returns {epoch, offset}.
const LUA_PUBLISH: &str = r#"
local now = now_ms()
local size = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local epoch = ensure(KEYS[1], KEYS[2])
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if size > 0 and ttl > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 'x', now + ttl, 'd', ARGV[1])
  for _ = 1, 64 do
    local f = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if f == nil or tonumber(f[2][2]) > now then break end
    redis.call('XDEL', KEYS[2], f[1])
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
  extend(KEYS[1], ttl)
else
  -- Nothing is kept: like the hub, the channel lives on only while someone
  -- holds a lease on it.
  redis.call('DEL', KEYS[2])
  extend(KEYS[1], 1)
end
redis.call('PUBLISH', KEYS[3], 'p\n' .. epoch .. '\n' .. offset .. '\n' .. ARGV[1])
return {epoch, tostring(offset)}
"#;

/// KEYS: meta, stream. ARGV: has since (0/1), since epoch, since offset,
/// limit (-1: none). Returns {epoch, top, complete, {offset, data, ...}},
/// or {''} for a channel that does not exist.
const LUA_HISTORY: &str = r#"
local now = now_ms()
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {''} end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local after, continues = 0, true
if ARGV[1] == '1' then
  local so = tonumber(ARGV[3])
  if ARGV[2] == epoch and so <= top then after = so else continues = false end
end
local first = top + 1
while true do
  local f = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  if f == nil then break end
  if tonumber(f[2][2]) > now then
    first = tonumber(string.match(f[1], '^%d+'))
    break
  end
  redis.call('XDEL', KEYS[2], f[1])
end
local start = math.max(after + 1, first)
local available = math.max(0, top - start + 1)
local take = available
local limit = tonumber(ARGV[4])
if limit >= 0 and limit < take then take = limit end
local pubs = {}
if take > 0 then
  local rows = redis.call('XRANGE', KEYS[2], start .. '-0', '+', 'COUNT', take)
  for _, r in ipairs(rows) do
    table.insert(pubs, string.match(r[1], '^%d+'))
    table.insert(pubs, r[2][4])
  end
end
local complete = 0
if continues and after + 1 >= first and take == available then complete = 1 end
return {epoch, tostring(top), complete, pubs}
"#;

/// KEYS: meta, stream, presence hash, presence expiries, topic. ARGV:
/// lease (ms), then triples {client, user, mode}: mode 2 adds and announces
/// (once), 1 refreshes a client whose join was announced, 0 adds or
/// refreshes without announcing. With no triples: ensures the channel and
/// its lease (a subscribe or a lease refresh). Returns the epoch.
const LUA_PRESENCE_ADD: &str = r#"
local now = now_ms()
local lease = tonumber(ARGV[1])
local epoch = ensure(KEYS[1], KEYS[2])
extend(KEYS[1], lease)
prune(KEYS[3], KEYS[4], KEYS[5], now)
local i = 2
while i + 2 <= #ARGV do
  local client, user, mode = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[3], client)
  local was = old and string.sub(old, 1, 1) == '1'
  local flag = '0'
  if was or mode ~= '0' then flag = '1' end
  redis.call('HSET', KEYS[3], client, flag .. user)
  redis.call('ZADD', KEYS[4], now + lease, client)
  if mode == '2' and not was then
    redis.call('PUBLISH', KEYS[5], 'j\n' .. client .. '\n' .. user)
  end
  i = i + 3
end
if #ARGV > 1 then
  extend(KEYS[3], lease)
  extend(KEYS[4], lease)
end
return epoch
"#;

/// KEYS: presence hash, presence expiries, topic. ARGV: client, user,
/// announce (0/1). Returns 1 if the client was present.
const LUA_PRESENCE_REMOVE: &str = r#"
prune(KEYS[1], KEYS[2], KEYS[3], now_ms())
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 and ARGV[3] == '1' then
  redis.call('PUBLISH', KEYS[3], 'l\n' .. ARGV[1] .. '\n' .. ARGV[2])
end
return removed
"#;

/// KEYS: presence hash, presence expiries, topic. Returns HGETALL of the
/// live entries.
const LUA_PRESENCE_READ: &str = r#"
prune(KEYS[1], KEYS[2], KEYS[3], now_ms())
return redis.call('HGETALL', KEYS[1])
"#;

/// The scripts, compiled once (their SHA1s are what EVALSHA sends).
struct Scripts {
    publish: Script,
    history: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_read: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with_common = |body: &str| Script::new(&format!("{LUA_COMMON}{body}"));
        Scripts {
            publish: with_common(LUA_PUBLISH),
            history: with_common(LUA_HISTORY),
            presence_add: with_common(LUA_PRESENCE_ADD),
            presence_remove: with_common(LUA_PRESENCE_REMOVE),
            presence_read: with_common(LUA_PRESENCE_READ),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.publish,
            &self.history,
            &self.presence_add,
            &self.presence_remove,
            &self.presence_read,
        ]
    }
}

/// The Redis keys of one channel.
struct Keys {
    meta: String,
    stream: String,
    presence: String,
    expiries: String,
    topic: String,
}

impl Keys {
    fn new(channel: &str) -> Keys {
        Keys {
            meta: format!("wc:{{{channel}}}:m"),
            stream: format!("wc:{{{channel}}}:s"),
            presence: format!("wc:{{{channel}}}:p"),
            expiries: format!("wc:{{{channel}}}:px"),
            topic: topic(channel),
        }
    }
}

fn topic(channel: &str) -> String {
    format!("wc:{{{channel}}}:pub")
}

/// The channel of a pub/sub topic, if it is one of ours.
fn channel_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("wc:{")?.strip_suffix("}:pub")
}

/// The control topic of one server: requests for it and replies to it.
/// (Channel topics start with `wc:{`, so the two never meet.)
fn control_topic(instance: &str) -> String {
    format!("{CONTROL_ALL}:{instance}")
}

fn is_control_topic(topic: &str) -> bool {
    topic == CONTROL_ALL || topic.starts_with("wc:ctl:")
}

/// A message between servers on a control topic, as JSON with an `op`
/// field: `{"op":"disconnect","req":7,"from":"0a1b2c","client":"...",
/// "reconnect":true}`, `{"op":"disconnected","req":7,"found":true}`,
/// `{"op":"channels","req":8,"from":"0a1b2c"}`,
/// `{"op":"channel_counts","req":8,"channels":{"news":2}}`. `req` is the
/// asker's request id, unique among its requests; `from` its instance id,
/// whose topic gets the reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ControlMsg {
    /// Close `client` if you hold it (4004 if `reconnect`, else 4501).
    Disconnect {
        req: u64,
        from: String,
        client: String,
        reconnect: bool,
    },
    /// Count the live subscribers of your channels.
    Channels { req: u64, from: String },
    /// The reply to `Disconnect`.
    Disconnected { req: u64, found: bool },
    /// The reply to `Channels`: channels with at least one subscriber.
    ChannelCounts {
        req: u64,
        channels: BTreeMap<String, usize>,
    },
}

/// A control request of this server that waits for replies.
struct Pending {
    what: Waiting,
    /// How many servers received the request (PUBLISH's answer); `None`
    /// until Redis has answered the PUBLISH (a reply may come first).
    receivers: Option<usize>,
    /// Replies received so far.
    answers: usize,
}

/// What a pending request collects, and who waits for it.
enum Waiting {
    Disconnect {
        instance: String,
        /// True once any reply found the client. (Two servers could share
        /// an instance id: any one finding it is enough.)
        found: bool,
        reply: oneshot::Sender<Result<bool, ControlError>>,
    },
    Channels {
        counts: BTreeMap<String, usize>,
        reply: oneshot::Sender<ClusterChannels>,
    },
}

impl Pending {
    /// True when nothing more can change the answer.
    fn settled(&self) -> bool {
        let all = self.receivers.is_some_and(|n| self.answers >= n);
        match &self.what {
            Waiting::Disconnect { found, .. } => *found || all,
            Waiting::Channels { .. } => all,
        }
    }

    /// Answers the API with what was collected; `expired` if the time is
    /// up before every reply came.
    fn finish(self, expired: bool) {
        match self.what {
            Waiting::Disconnect {
                instance,
                found,
                reply,
            } => {
                let r = if found {
                    Ok(true)
                } else if expired {
                    Err(ControlError::NoReply {
                        instance,
                        waited: CONTROL_TIMEOUT,
                    })
                } else {
                    Ok(false)
                };
                let _ = reply.send(r);
            }
            Waiting::Channels { counts, reply } => {
                let asked = self.receivers.unwrap_or(self.answers);
                if expired {
                    tracing::warn!(
                        asked,
                        answered = self.answers,
                        "channel count: some servers did not answer in time; answering without them"
                    );
                }
                let _ = reply.send(ClusterChannels {
                    counts,
                    asked,
                    answered: self.answers,
                });
            }
        }
    }
}

/// What the driver's own tasks report about its control requests.
enum ControlEvent {
    /// Redis delivered the request to this many servers.
    Published { req: u64, receivers: usize },
    /// The PUBLISH failed (the link is reported lost separately).
    Failed(u64),
    /// The request's time is up.
    Expired(u64),
}

/// PUBLISHes a control message; returns how many servers received it.
async fn publish_control(
    conn: &mut MultiplexedConnection,
    topic: &str,
    msg: &ControlMsg,
) -> Result<usize, RedisError> {
    // Our own enum with string keys: serialising cannot fail.
    let payload = serde_json::to_vec(msg).unwrap_or_default();
    redis::cmd("PUBLISH")
        .arg(topic)
        .arg(payload)
        .query_async(conn)
        .await
}

/// A client of this server present in a channel, as the driver remembers
/// it to refresh its entry and to write it again after Redis lost it.
#[derive(Debug, Clone)]
struct Local {
    user: String,
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
    backlog: Arc<crate::backlog::Backlog>,
) -> Result<mpsc::UnboundedSender<ToHub>, RedisStartError> {
    let client = redis::Client::open(options.url.as_str())
        .map_err(|source| RedisStartError::Url { source })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let lease = options.presence_ttl.max(Duration::from_millis(300));
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
            let (lost_tx, lost_rx) = mpsc::unbounded_channel();
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            let driver = Driver {
                client,
                shards: Arc::new(shards),
                ready,
                lease,
                scripts: Arc::new(Scripts::new()),
                subs: BTreeMap::new(),
                present: BTreeMap::new(),
                removals: Vec::new(),
                lost_tx,
                generation: 0,
                instance: options.instance,
                pending: HashMap::new(),
                next_request: 0,
                control_tx,
                backlog,
                in_flight: Arc::new(InFlight::default()),
            };
            rt.block_on(driver.run(rx, lost_rx, control_rx));
        })
        .map_err(RedisStartError::Thread)?;
    Ok(tx)
}

struct Driver {
    client: redis::Client,
    shards: Arc<Vec<ShardInbox>>,
    ready: Arc<AtomicBool>,
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
    lost_tx: mpsc::UnboundedSender<u64>,
    generation: u64,
    /// This server's instance id: its control topic is named after it.
    instance: String,
    /// This server's control requests waiting for replies, by request id.
    pending: HashMap<u64, Pending>,
    /// The last request id given out.
    next_request: u64,
    /// The driver's tasks report on control requests here.
    control_tx: mpsc::UnboundedSender<ControlEvent>,
    /// Commands the shards sent and the driver has not taken yet.
    backlog: Arc<crate::backlog::Backlog>,
    /// Requests running on the link: at most [`MAX_IN_FLIGHT`]; past it
    /// the driver takes no more messages (so the backlog fills and the
    /// shards stop reading their clients).
    in_flight: Arc<InFlight>,
}

/// Most requests the driver runs on the link at once.
const MAX_IN_FLIGHT: usize = 1024;

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

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ToHub>,
        mut lost_rx: mpsc::UnboundedReceiver<u64>,
        mut control_rx: mpsc::UnboundedReceiver<ControlEvent>,
    ) {
        let mut link: Option<Link> = None;
        let mut backoff = MIN_BACKOFF;
        let mut next_attempt = Instant::now();
        let mut refresh = tokio::time::interval(self.lease / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(l) = link.as_mut() else {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(msg) => {
                            self.took(&msg);
                            self.handle_down(msg)
                        }
                        None => return,
                    },
                    // Late reports of requests that the lost link failed.
                    Some(event) = control_rx.recv() => self.control_event(event),
                    _ = tokio::time::sleep_until(next_attempt) => {
                        match self.connect().await {
                            Ok(l) => {
                                tracing::info!("redis backbone connected");
                                link = Some(l);
                                backoff = MIN_BACKOFF;
                                self.ready.store(true, Ordering::Release);
                                // Whatever the nodes had in flight or missed
                                // is theirs to redo now.
                                for shard in self.shards.iter() {
                                    let _ = shard.send(ShardMsg::Backbone(Event::Reset));
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect to redis");
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
            let behind = shards_behind(&self.shards, self.backlog.max());
            let lost = tokio::select! {
                msg = rx.recv(), if !full => match msg {
                    Some(msg) => {
                        self.took(&msg);
                        self.handle_up(l, msg).await.is_err()
                    }
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
                g = lost_rx.recv() => g == Some(generation),
                _ = refresh.tick() => {
                    self.refresh(l);
                    false
                }
            };
            if lost {
                tracing::warn!("lost the link to redis; reconnecting");
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

    /// Uncounts a node's command from the backlog once taken.
    fn took(&self, msg: &ToHub) {
        if matches!(msg, ToHub::Command(..)) {
            self.backlog.taken(1);
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
            self.presence_remove(&mut conn, &channel, &info, announce)
                .await?;
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

    /// The argument lists (lease, then client triples) that refresh this
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
                args.push(local.user.clone());
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
                let _ = lost.send(generation);
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

    async fn presence_remove(
        &self,
        conn: &mut MultiplexedConnection,
        channel: &str,
        info: &ClientInfo,
        announce: bool,
    ) -> Result<(), RedisError> {
        let keys = Keys::new(channel);
        self.scripts
            .presence_remove
            .key(&keys.presence)
            .key(&keys.expiries)
            .key(&keys.topic)
            .arg(&info.client)
            .arg(&info.user)
            .arg(if announce { "1" } else { "0" })
            .invoke_async::<Value>(conn)
            .await
            .map(|_| ())
    }

    /// A message while the link is down: bookkeeping is kept, requests
    /// fail at once.
    fn handle_down(&mut self, msg: ToHub) {
        match msg {
            ToHub::Command(node, cmd) => match cmd {
                Command::Subscribe { channel } => {
                    self.subs.entry(channel).or_default().insert(node);
                }
                Command::Unsubscribe { channel } => {
                    self.unsubscribed(node, &channel);
                }
                Command::Publish { request, .. } => self.reply(
                    node,
                    request,
                    Reply::Published(Err(BackboneError::Unavailable)),
                ),
                Command::History { request, .. } => self.reply(
                    node,
                    request,
                    Reply::History(Err(BackboneError::Unavailable)),
                ),
                Command::Presence { request, .. } => self.reply(
                    node,
                    request,
                    Reply::Presence(Err(BackboneError::Unavailable)),
                ),
                Command::PresenceAdd {
                    channel,
                    info,
                    announce,
                } => {
                    self.present_add(&channel, &info, announce);
                }
                Command::PresenceRemove {
                    channel,
                    info,
                    announce,
                } => {
                    self.present_remove(&channel, &info.client);
                    self.removals.push((channel, info, announce));
                }
            },
            // Dropping the reply slot answers "unavailable" (HTTP 503).
            ToHub::Publish { .. } | ToHub::History { .. } | ToHub::Presence { .. } => {}
            ToHub::Channels(reply) => {
                let _ = reply.send(self.channel_stats());
            }
            // Nothing can reach Redis now: dropping the slot says so.
            ToHub::Flush(_) | ToHub::RemoteDisconnect { .. } | ToHub::ClusterChannels(_) => {}
        }
    }

    /// A message while the link is up. Subscriptions are completed before
    /// returning (see the module doc on ordering); other requests run as
    /// tasks, sent to Redis in the order they arrive.
    async fn handle_up(&mut self, link: &mut Link, msg: ToHub) -> Result<(), Lost> {
        match msg {
            ToHub::Command(node, cmd) => match cmd {
                Command::Subscribe { channel } => {
                    let set = self.subs.entry(channel.clone()).or_default();
                    let first = set.is_empty();
                    set.insert(node);
                    if first {
                        let r = tokio::time::timeout(
                            RESPONSE_TIMEOUT,
                            link.sink.subscribe(topic(&channel)),
                        )
                        .await;
                        if !matches!(r, Ok(Ok(()))) {
                            return Err(Lost);
                        }
                    }
                    let keys = Keys::new(&channel);
                    let args = vec![self.lease.as_millis().to_string()];
                    if let Err(e) =
                        invoke_presence_add(&self.scripts, &mut link.conn, &keys, &args).await
                    {
                        return lost_or_log(&e);
                    }
                }
                Command::Unsubscribe { channel } => {
                    if self.unsubscribed(node, &channel) {
                        let r = tokio::time::timeout(
                            RESPONSE_TIMEOUT,
                            link.sink.unsubscribe(topic(&channel)),
                        )
                        .await;
                        if !matches!(r, Ok(Ok(()))) {
                            return Err(Lost);
                        }
                    }
                }
                Command::Publish {
                    request,
                    channel,
                    data,
                    history,
                } => {
                    self.spawn_request(
                        link,
                        node,
                        request,
                        Reply::Published,
                        move |scripts, mut conn| async move {
                            publish(&scripts, &mut conn, &channel, &data, history).await
                        },
                    );
                }
                Command::History {
                    request,
                    channel,
                    since,
                    limit,
                } => {
                    self.spawn_request(
                        link,
                        node,
                        request,
                        Reply::History,
                        move |scripts, mut conn| async move {
                            history(&scripts, &mut conn, &channel, since.as_ref(), limit).await
                        },
                    );
                }
                Command::Presence { request, channel } => {
                    self.spawn_request(
                        link,
                        node,
                        request,
                        Reply::Presence,
                        move |scripts, mut conn| async move {
                            presence(&scripts, &mut conn, &channel).await
                        },
                    );
                }
                Command::PresenceAdd {
                    channel,
                    info,
                    announce,
                } => {
                    let local = self.present_add(&channel, &info, announce);
                    let mode = if announce {
                        "2"
                    } else if local.announced {
                        "1"
                    } else {
                        "0"
                    };
                    let args = vec![
                        self.lease.as_millis().to_string(),
                        info.client,
                        info.user,
                        mode.to_owned(),
                    ];
                    self.spawn(link, move |scripts, mut conn| async move {
                        let keys = Keys::new(&channel);
                        invoke_presence_add(&scripts, &mut conn, &keys, &args)
                            .await
                            .err()
                    });
                }
                Command::PresenceRemove {
                    channel,
                    info,
                    announce,
                } => {
                    self.present_remove(&channel, &info.client);
                    let keys = Keys::new(&channel);
                    self.spawn(link, move |scripts, mut conn| async move {
                        scripts
                            .presence_remove
                            .key(&keys.presence)
                            .key(&keys.expiries)
                            .key(&keys.topic)
                            .arg(&info.client)
                            .arg(&info.user)
                            .arg(if announce { "1" } else { "0" })
                            .invoke_async::<Value>(&mut conn)
                            .await
                            .err()
                    });
                }
            },
            ToHub::Publish {
                channel,
                data,
                history: policy,
                reply,
            } => self.spawn(link, move |scripts, mut conn| async move {
                match publish(&scripts, &mut conn, &channel, &data, policy).await {
                    Ok(pos) => {
                        let _ = reply.send(pos);
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::History {
                channel,
                since,
                limit,
                reply,
            } => self.spawn(link, move |scripts, mut conn| async move {
                match history(&scripts, &mut conn, &channel, since.as_ref(), limit).await {
                    Ok(page) => {
                        let _ = reply.send(page);
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::Presence { channel, reply } => {
                self.spawn(link, move |scripts, mut conn| async move {
                    match presence(&scripts, &mut conn, &channel).await {
                        Ok(list) => {
                            let _ = reply.send(list);
                            None
                        }
                        Err(e) => Some(e),
                    }
                })
            }
            ToHub::Channels(reply) => {
                let _ = reply.send(self.channel_stats());
            }
            // A PING sent after every command before it (tasks send in
            // spawn order): its answer means Redis has executed them.
            ToHub::Flush(reply) => self.spawn(link, move |_, mut conn| async move {
                match redis::cmd("PING").query_async::<Value>(&mut conn).await {
                    Ok(_) => {
                        let _ = reply.send(());
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::RemoteDisconnect {
                instance,
                client,
                reconnect,
                reply,
            } => {
                // The API passes only instance ids; anything else could
                // name no server's topic.
                if !is_instance(&instance) {
                    let _ = reply.send(Ok(false));
                    return Ok(());
                }
                let topic = control_topic(&instance);
                let what = Waiting::Disconnect {
                    instance,
                    found: false,
                    reply,
                };
                self.control_request(link, topic, what, |req, from| ControlMsg::Disconnect {
                    req,
                    from,
                    client,
                    reconnect,
                });
            }
            ToHub::ClusterChannels(reply) => {
                let what = Waiting::Channels {
                    counts: BTreeMap::new(),
                    reply,
                };
                self.control_request(link, CONTROL_ALL.to_owned(), what, |req, from| {
                    ControlMsg::Channels { req, from }
                });
            }
        }
        Ok(())
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

    /// Runs one node's request on the link ([`Self::spawn`]) and sends the
    /// node its reply, built by `wrap` from the outcome.
    fn spawn_request<T, F, Fut>(
        &self,
        link: &Link,
        node: NodeId,
        request: RequestId,
        wrap: fn(Result<T, BackboneError>) -> Reply,
        f: F,
    ) where
        T: Send + 'static,
        F: FnOnce(Arc<Scripts>, MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let shards = self.shards.clone();
        self.spawn(link, move |scripts, conn| {
            let run = f(scripts, conn);
            async move {
                let (reply, err) = split(run.await);
                send_reply(&shards, node, request, wrap(reply));
                err
            }
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
        let clients = self.present.entry(channel.to_owned()).or_default();
        let local = clients.entry(info.client.clone()).or_insert(Local {
            user: info.user.clone(),
            announced: false,
        });
        local.user.clone_from(&info.user);
        local.announced |= announce;
        local.clone()
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

    fn reply(&self, node: NodeId, request: RequestId, reply: Reply) {
        send_reply(&self.shards, node, request, reply);
    }

    /// Sends a control request to `topic` and keeps it pending until its
    /// replies are in or [`CONTROL_TIMEOUT`] has passed.
    fn control_request(
        &mut self,
        link: &Link,
        topic: String,
        what: Waiting,
        make: impl FnOnce(u64, String) -> ControlMsg,
    ) {
        self.next_request = self.next_request.wrapping_add(1);
        let req = self.next_request;
        let msg = make(req, self.instance.clone());
        self.pending.insert(
            req,
            Pending {
                what,
                receivers: None,
                answers: 0,
            },
        );
        let events = self.control_tx.clone();
        self.spawn(link, move |_, mut conn| async move {
            match publish_control(&mut conn, &topic, &msg).await {
                Ok(receivers) => {
                    let _ = events.send(ControlEvent::Published { req, receivers });
                    None
                }
                Err(e) => {
                    let _ = events.send(ControlEvent::Failed(req));
                    Some(e)
                }
            }
        });
        let events = self.control_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CONTROL_TIMEOUT).await;
            let _ = events.send(ControlEvent::Expired(req));
        });
    }

    fn control_event(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Published { req, receivers } => {
                if let Some(p) = self.pending.get_mut(&req) {
                    p.receivers = Some(receivers);
                    self.settle(req);
                }
            }
            // Dropping the reply slot answers "unavailable".
            ControlEvent::Failed(req) => {
                self.pending.remove(&req);
            }
            ControlEvent::Expired(req) => {
                if let Some(p) = self.pending.remove(&req) {
                    p.finish(true);
                }
            }
        }
    }

    /// Answers request `req` if its replies are all in.
    fn settle(&mut self, req: u64) {
        if self.pending.get(&req).is_some_and(Pending::settled) {
            if let Some(p) = self.pending.remove(&req) {
                p.finish(false);
            }
        }
    }

    /// A message on a control topic: a request of another server (or of
    /// this one) is answered through the shards; a reply goes to the
    /// request waiting for it.
    fn control_message(&mut self, link: &Link, payload: &[u8]) {
        let msg: ControlMsg = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable control message from redis; ignored");
                return;
            }
        };
        match msg {
            ControlMsg::Disconnect {
                req,
                from,
                client,
                reconnect,
            } => {
                if !is_instance(&from) {
                    tracing::warn!(from, "control request from an invalid instance id; ignored");
                    return;
                }
                let shards = self.shards.clone();
                let code = Control::disconnect_code(reconnect);
                self.spawn(link, move |_, mut conn| async move {
                    let found = disconnect_local(&shards, &client, code).await;
                    let reply = ControlMsg::Disconnected { req, found };
                    publish_control(&mut conn, &control_topic(&from), &reply)
                        .await
                        .err()
                });
            }
            ControlMsg::Channels { req, from } => {
                if !is_instance(&from) {
                    tracing::warn!(from, "control request from an invalid instance id; ignored");
                    return;
                }
                let shards = self.shards.clone();
                self.spawn(link, move |_, mut conn| async move {
                    let channels = local_channels(&shards).await;
                    let reply = ControlMsg::ChannelCounts { req, channels };
                    publish_control(&mut conn, &control_topic(&from), &reply)
                        .await
                        .err()
                });
            }
            ControlMsg::Disconnected { req, found } => match self.pending.get_mut(&req) {
                Some(Pending {
                    what: Waiting::Disconnect { found: f, .. },
                    answers,
                    ..
                }) => {
                    *f |= found;
                    *answers += 1;
                    self.settle(req);
                }
                _ => tracing::debug!(req, "reply to an unknown or expired request; ignored"),
            },
            ControlMsg::ChannelCounts { req, channels } => match self.pending.get_mut(&req) {
                Some(Pending {
                    what: Waiting::Channels { counts, .. },
                    answers,
                    ..
                }) => {
                    for (c, n) in channels {
                        let sum = counts.entry(c).or_default();
                        *sum = sum.saturating_add(n);
                    }
                    *answers += 1;
                    self.settle(req);
                }
                _ => tracing::debug!(req, "reply to an unknown or expired request; ignored"),
            },
        }
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

fn send_reply(shards: &[ShardInbox], node: NodeId, request: RequestId, reply: Reply) {
    if let Some(shard) = shards.get(node.0 as usize) {
        let _ = shard.send(ShardMsg::Backbone(Event::Reply { request, reply }));
    }
}

/// True if the error means the link is broken (as opposed to a command
/// Redis refused).
fn link_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn report(lost: &mpsc::UnboundedSender<u64>, generation: u64, e: &RedisError) {
    if link_broken(e) {
        let _ = lost.send(generation);
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

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected answer from a backbone script",
        what.to_owned(),
    ))
}

async fn invoke_presence_add(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    args: &[String],
) -> Result<(), RedisError> {
    let mut inv = scripts.presence_add.prepare_invoke();
    inv.key(&keys.meta)
        .key(&keys.stream)
        .key(&keys.presence)
        .key(&keys.expiries)
        .key(&keys.topic);
    for a in args {
        inv.arg(a);
    }
    inv.invoke_async::<Value>(conn).await.map(|_| ())
}

async fn publish(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
    data: &Payload,
    policy: HistoryPolicy,
) -> Result<StreamPosition, RedisError> {
    let keys = Keys::new(channel);
    // Clamped so that expiry times stay exact in Lua's doubles and within
    // what PEXPIRE accepts.
    let ttl_ms = u64::try_from(policy.ttl.as_millis())
        .unwrap_or(u64::MAX)
        .min(MAX_TTL_MS);
    let (epoch, offset): (String, String) = scripts
        .publish
        .key(&keys.meta)
        .key(&keys.stream)
        .key(&keys.topic)
        .arg(data.as_json())
        .arg(policy.size.min(MAX_HISTORY_SIZE))
        .arg(ttl_ms)
        .invoke_async(conn)
        .await?;
    let offset = offset.parse().map_err(|_| unexpected("offset"))?;
    Ok(StreamPosition { epoch, offset })
}

async fn history(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
    since: Option<&StreamPosition>,
    limit: Option<usize>,
) -> Result<HistoryPage, RedisError> {
    let keys = Keys::new(channel);
    let (has, epoch, offset) = match since {
        Some(p) => ("1", p.epoch.as_str(), p.offset),
        None => ("0", "", 0),
    };
    let limit = limit.map_or_else(|| "-1".to_owned(), |l| l.to_string());
    let v: Value = scripts
        .history
        .key(&keys.meta)
        .key(&keys.stream)
        .arg(has)
        .arg(epoch)
        .arg(offset)
        .arg(limit)
        .invoke_async(conn)
        .await?;
    parse_history(v, since)
}

/// Reads the history script's answer into a page.
fn parse_history(v: Value, since: Option<&StreamPosition>) -> Result<HistoryPage, RedisError> {
    let Value::Array(items) = v else {
        return Err(unexpected("history: not an array"));
    };
    let mut items = items.into_iter();
    let epoch = items
        .next()
        .map(|v| redis::from_redis_value::<String>(&v))
        .transpose()?
        .ok_or_else(|| unexpected("history: no epoch"))?;
    if epoch == NO_EPOCH {
        // A channel Redis does not know: the hub's answer for an unknown one.
        let complete = since.is_none_or(|p| p.epoch == NO_EPOCH && p.offset == 0);
        return Ok(HistoryPage {
            epoch,
            top: 0,
            publications: Vec::new(),
            complete,
        });
    }
    let (Some(top), Some(complete), Some(Value::Array(pubs))) =
        (items.next(), items.next(), items.next())
    else {
        return Err(unexpected("history: short answer"));
    };
    let top: String = redis::from_redis_value(&top)?;
    let top: u64 = top.parse().map_err(|_| unexpected("history: top"))?;
    let complete: i64 = redis::from_redis_value(&complete)?;
    let mut publications = Vec::with_capacity(pubs.len() / 2);
    let mut pubs = pubs.into_iter();
    while let (Some(offset), Some(data)) = (pubs.next(), pubs.next()) {
        let offset: String = redis::from_redis_value(&offset)?;
        let offset = offset.parse().map_err(|_| unexpected("history: offset"))?;
        let data: Vec<u8> = redis::from_redis_value(&data)?;
        let data = Payload::from_json_bytes(Bytes::from(data))
            .map_err(|_| unexpected("history: data is not JSON"))?;
        publications.push(Publication { offset, data });
    }
    Ok(HistoryPage {
        epoch,
        top,
        publications,
        complete: complete == 1,
    })
}

async fn presence(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
) -> Result<Vec<ClientInfo>, RedisError> {
    let keys = Keys::new(channel);
    let entries: Vec<(String, Vec<u8>)> = scripts
        .presence_read
        .key(&keys.presence)
        .key(&keys.expiries)
        .key(&keys.topic)
        .invoke_async(conn)
        .await?;
    let mut out: Vec<ClientInfo> = entries
        .into_iter()
        .map(|(client, value)| ClientInfo {
            client,
            user: String::from_utf8_lossy(value.get(1..).unwrap_or_default()).into_owned(),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads a message of a channel's topic (see the module doc for the
/// format); `None` if it is not one.
fn parse_message(channel: &str, payload: &[u8]) -> Option<Event> {
    let mut parts = payload.splitn(2, |&b| b == b'\n');
    let kind = parts.next()?;
    let rest = parts.next()?;
    match kind {
        b"p" => {
            let mut parts = rest.splitn(3, |&b| b == b'\n');
            let epoch = std::str::from_utf8(parts.next()?).ok()?;
            let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
            let data = Payload::from_json(parts.next()?).ok()?;
            Some(Event::Publication {
                channel: channel.to_owned(),
                epoch: epoch.to_owned(),
                publication: Publication { offset, data },
            })
        }
        b"j" | b"l" => {
            let mut parts = rest.splitn(2, |&b| b == b'\n');
            let client = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let info = ClientInfo { client, user };
            let channel = channel.to_owned();
            Some(if kind == b"j" {
                Event::Join { channel, info }
            } else {
                Event::Leave { channel, info }
            })
        }
        _ => None,
    }
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
        let r = crate::backbone::Backbone::start_redis(
            options,
            Vec::new(),
            std::sync::Arc::new(crate::backlog::Backlog::new(1)),
        );
        assert!(matches!(r, Err(RedisStartError::Url { .. })), "{r:?}");
    }

    #[test]
    fn topics_round_trip_channel_names() {
        for ch in ["news", "chat:1", "a}b", "{x}", ""] {
            assert_eq!(channel_of(&topic(ch)), Some(ch));
        }
        assert_eq!(channel_of("other"), None);
        assert_eq!(channel_of("wc:{x}:m"), None);
    }

    #[test]
    fn messages_parse_into_events() {
        let e = parse_message("c", b"p\n17-3\n42\n{\"a\":\"x\\ny\"}").expect("publication");
        match e {
            Event::Publication {
                channel,
                epoch,
                publication,
            } => {
                assert_eq!(channel, "c");
                assert_eq!(epoch, "17-3");
                assert_eq!(publication.offset, 42);
                assert_eq!(publication.data.as_json(), b"{\"a\":\"x\\ny\"}");
            }
            other => panic!("not a publication: {other:?}"),
        }
        assert_eq!(
            parse_message("c", b"j\nid1\nuser\nwith newline"),
            Some(Event::Join {
                channel: "c".into(),
                info: ClientInfo {
                    client: "id1".into(),
                    user: "user\nwith newline".into()
                }
            })
        );
        assert!(matches!(
            parse_message("c", b"l\nid1\n"),
            Some(Event::Leave { .. })
        ));
        // Not JSON, no offset, unknown kind, truncated: rejected.
        assert_eq!(parse_message("c", b"p\ne\n1\nnot json"), None);
        assert_eq!(parse_message("c", b"p\ne\nx\n1"), None);
        assert_eq!(parse_message("c", b"z\n1"), None);
        assert_eq!(parse_message("c", b"p"), None);
    }

    #[test]
    fn control_messages_round_trip_and_garbage_is_refused() {
        let msgs = [
            ControlMsg::Disconnect {
                req: 1,
                from: "0a1b2c".into(),
                client: "ffffff-0-3".into(),
                reconnect: false,
            },
            ControlMsg::Channels {
                req: 2,
                from: "0a1b2c".into(),
            },
            ControlMsg::Disconnected {
                req: 1,
                found: true,
            },
            ControlMsg::ChannelCounts {
                req: 2,
                channels: BTreeMap::from([("news".to_owned(), 3)]),
            },
        ];
        for m in msgs {
            let text = serde_json::to_vec(&m).expect("serialise");
            assert_eq!(serde_json::from_slice::<ControlMsg>(&text).ok(), Some(m));
        }
        let documented = br#"{"op":"disconnected","req":7,"found":true}"#;
        assert_eq!(
            serde_json::from_slice::<ControlMsg>(documented).ok(),
            Some(ControlMsg::Disconnected {
                req: 7,
                found: true
            })
        );
        for bad in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"op":"frobnicate","req":1}"#,
            br#"{"op":"disconnected","req":-1,"found":true}"#,
            br#"{"op":"channel_counts","req":1,"channels":{"a":"x"}}"#,
        ] {
            assert!(
                serde_json::from_slice::<ControlMsg>(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(is_control_topic(&control_topic("0a1b2c")) && is_control_topic(CONTROL_ALL));
        assert_eq!(channel_of(&control_topic("0a1b2c")), None);
    }

    #[test]
    fn unknown_channel_history_is_the_hubs() {
        let v = Value::Array(vec![Value::BulkString(b"".to_vec())]);
        let page = parse_history(v.clone(), None).expect("page");
        assert!(page.complete && page.top == 0 && page.epoch.is_empty());
        let pos = StreamPosition {
            epoch: "e".into(),
            offset: 3,
        };
        assert!(!parse_history(v, Some(&pos)).expect("page").complete);
    }
}
