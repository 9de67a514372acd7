//! The Redis side of the backbone's data: the Lua scripts (one per write,
//! so each is atomic), the keys and topics of a channel, the calls that run
//! the scripts, and the parsing of their answers and of the pub/sub
//! messages they publish.
//!
//! # Keys (per channel `CH`)
//!
//! - `wc:{CH}:m`: hash with the channel's epoch (`e`), top offset (`o`)
//!   and the marker it was last written under (`r`, see "Rewinds"). It is
//!   created with a fresh epoch when missing (by a publish, a subscribe or
//!   a presence add), so a channel that went away starts a new epoch:
//!   positions from before can never be taken for positions after.
//! - `wc:{CH}:s`: stream of kept publications, entry id `OFFSET-0`, fields
//!   `x` (expiry, Redis time in ms), `d` (the JSON data) and, for a
//!   client's publication, `i` (its sender as INFO, below); capped at the
//!   history size, expired entries trimmed from the front.
//! - `wc:{CH}:p` / `wc:{CH}:px`: presence: client id to `FLAG USER` for a
//!   client without `conn_info` or `chan_info` (FLAG `0`, or `1` if its
//!   join was announced) or `FLAG INFO` for one with either (FLAG `2`, or
//!   `3` if announced), and client id to expiry time.
//! - `wc:{CH}:pub`: the pub/sub topic: `p\nEPOCH\nOFFSET\nDATA` for a
//!   publication, `P\nEPOCH\nOFFSET\nINFO\nDATA` for one with a sender;
//!   `j\nCLIENT\nUSER` / `l\nCLIENT\nUSER` for the join/leave of a client
//!   without infos, `J\nINFO` / `L\nINFO` for one with.
//!
//! INFO is a client as one line of JSON: `{"client":…,"user":…}`, with
//! `"conn_info":…` and `"chan_info":…` when present (their JSON as the
//! client gave it, line breaks turned into spaces). The forms without
//! infos are the ones servers wrote before infos existed, byte for byte,
//! and are still read; INFO without the two fields is read too.
//!
//! And per server, two control topics (see the `control` module): `wc:ctl`,
//! which every server subscribes to, and `wc:ctl:INSTANCE`, its own.
//!
//! # Rewinds
//!
//! A Redis that keeps snapshots only comes back from a restart (or a
//! failover) with the channels as they were at its last snapshot: top
//! offsets lower than what was handed out, under the same epochs. Nothing
//! in the data tells such a rewind from a channel that was quiet since.
//! So every script gets a marker, read by the server on the connection it
//! runs on ([`super::persistence::marker`]): `aof` when Redis keeps every
//! write, else the process's `run_id`. A channel whose meta was written
//! under another marker gets a new epoch the first time any script
//! touches it (its offsets and kept publications stay, they are true),
//! before anything is published or recovered: a position from before is
//! answered `recovered: false`, and no offset is given again under the
//! epoch it was first delivered with. Under `appendonly yes` the marker
//! stays `aof` across restarts and nothing changes. An empty marker (INFO
//! refused) turns the check off; a meta without one (written by a server
//! from before the check) is adopted as it is.
//!
//! Every write is one Lua script, so each is atomic: a publish increments
//! the offset, appends to the stream and PUBLISHes in one step, which makes
//! the pub/sub order the offset order for every server. A history read
//! reads epoch, top and range in one step too. All times are Redis's own
//! clock (`TIME`), so servers' clocks do not matter.

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script, Value};
use serde_json::value::RawValue;
use wavecast_core::backbone::{BackboneEvent, HistoryPage, HistoryPolicy};
use wavecast_core::hub::NO_EPOCH;
use wavecast_core::protocol::{ClientInfo, Payload, Publication, StreamPosition};

/// Longest history ttl handed to Redis (about 100 years).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Largest history size handed to Redis: MAXLEN takes a signed 64-bit
/// count, and four billion publications are beyond any Redis's memory.
const MAX_HISTORY_SIZE: usize = u32::MAX as usize;

/// Lua shared by the scripts: Redis time in ms, creating a channel's meta
/// with a fresh epoch, extending a key's expiry (never shortening it), and
/// pruning expired presence (announcing the leave of announced clients).
const LUA_COMMON: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function new_epoch()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2])) .. '-' .. redis.call('INCR', 'wc:epochs')
end
local function checked(meta, marker)
  local m = redis.call('HMGET', meta, 'e', 'r')
  local epoch, was = m[1], m[2]
  if not epoch then return nil end
  if marker == '' or was == marker then return epoch end
  if was then
    -- Written under another Redis process that did not keep every write:
    -- this data may be older than what was handed out. A new epoch, so
    -- that no position from before continues here and no offset is given
    -- again under the epoch it was delivered with.
    epoch = new_epoch()
    redis.call('HSET', meta, 'e', epoch, 'r', marker)
  else
    -- A meta from a server without the check: adopted as it is.
    redis.call('HSET', meta, 'r', marker)
  end
  return epoch
end
local function ensure(meta, stream, marker)
  local epoch = checked(meta, marker)
  if epoch then return epoch end
  epoch = new_epoch()
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', '0', 'r', marker)
  return epoch
end
local function extend(key, ms)
  if ms > 0 and redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
local function announced(value)
  local flag = string.sub(value, 1, 1)
  return flag == '1' or flag == '3'
end
local function leave_message(c, value)
  local flag = string.sub(value, 1, 1)
  if flag == '2' or flag == '3' then return 'L\n' .. string.sub(value, 2) end
  return 'l\n' .. c .. '\n' .. string.sub(value, 2)
end
local function prune(p, px, topic, now)
  local gone = redis.call('ZRANGEBYSCORE', px, '-inf', now)
  for _, c in ipairs(gone) do
    local old = redis.call('HGET', p, c)
    redis.call('HDEL', p, c)
    redis.call('ZREM', px, c)
    if old and announced(old) then
      redis.call('PUBLISH', topic, leave_message(c, old))
    end
  end
end
"#;

/// KEYS: meta, stream, topic. ARGV: data, history size, history ttl (ms),
/// the sender's info as JSON (empty for none), the marker. Returns
/// {epoch, offset}.
const LUA_PUBLISH: &str = r#"
local now = now_ms()
local size = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local epoch = ensure(KEYS[1], KEYS[2], ARGV[5])
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if size > 0 and ttl > 0 then
  if ARGV[4] == '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 'x', now + ttl, 'd', ARGV[1])
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 'x', now + ttl, 'd', ARGV[1],
      'i', ARGV[4])
  end
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
if ARGV[4] == '' then
  redis.call('PUBLISH', KEYS[3], 'p\n' .. epoch .. '\n' .. offset .. '\n' .. ARGV[1])
else
  redis.call('PUBLISH', KEYS[3],
    'P\n' .. epoch .. '\n' .. offset .. '\n' .. ARGV[4] .. '\n' .. ARGV[1])
end
return {epoch, tostring(offset)}
"#;

/// KEYS: meta, stream. ARGV: has since (0/1), since epoch, since offset,
/// limit (-1: none), reverse (0/1: the newest `limit`, still returned
/// oldest first; the caller turns them around), the marker. Returns
/// {epoch, top, complete, {offset, data, info, ...}} (info: the sender as
/// JSON, or empty), or {''} for a channel that does not exist.
const LUA_HISTORY: &str = r#"
local now = now_ms()
local epoch = checked(KEYS[1], ARGV[6])
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
if ARGV[5] == '1' then start = start + (available - take) end
local pubs = {}
if take > 0 then
  local rows = redis.call('XRANGE', KEYS[2], start .. '-0', '+', 'COUNT', take)
  for _, r in ipairs(rows) do
    table.insert(pubs, string.match(r[1], '^%d+'))
    table.insert(pubs, r[2][4])
    table.insert(pubs, r[2][6] or '')
  end
end
local complete = 0
if continues and after + 1 >= first and take == available then complete = 1 end
return {epoch, tostring(top), complete, pubs}
"#;

/// KEYS: meta, stream, presence hash, presence expiries, topic. ARGV:
/// the marker, the lease (ms), then quadruples {client, form, value, mode}: form `0` with
/// the user as value (a client without infos), `2` with its INFO; mode 2
/// adds and announces (once), 1 refreshes a client whose join was
/// announced, 0 adds or refreshes without announcing. With no quadruples:
/// ensures the channel and its lease (a subscribe or a lease refresh).
/// Returns the epoch.
const LUA_PRESENCE_ADD: &str = r#"
local now = now_ms()
local lease = tonumber(ARGV[2])
local epoch = ensure(KEYS[1], KEYS[2], ARGV[1])
extend(KEYS[1], lease)
prune(KEYS[3], KEYS[4], KEYS[5], now)
local i = 3
while i + 3 <= #ARGV do
  local client, form, value, mode = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local old = redis.call('HGET', KEYS[3], client)
  local was = old and announced(old)
  local flag = tonumber(form)
  if was or mode ~= '0' then flag = flag + 1 end
  redis.call('HSET', KEYS[3], client, flag .. value)
  redis.call('ZADD', KEYS[4], now + lease, client)
  if mode == '2' and not was then
    if form == '0' then
      redis.call('PUBLISH', KEYS[5], 'j\n' .. client .. '\n' .. value)
    else
      redis.call('PUBLISH', KEYS[5], 'J\n' .. value)
    end
  end
  i = i + 4
end
if #ARGV > 2 then
  extend(KEYS[3], lease)
  extend(KEYS[4], lease)
end
return epoch
"#;

/// KEYS: presence hash, presence expiries, topic. ARGV: client, announce
/// (0/1). The leave shows the client as it was present (its stored entry,
/// as the hub's does). Returns 1 if the client was present.
const LUA_PRESENCE_REMOVE: &str = r#"
prune(KEYS[1], KEYS[2], KEYS[3], now_ms())
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not old then return 0 end
if ARGV[2] == '1' then
  redis.call('PUBLISH', KEYS[3], leave_message(ARGV[1], old))
end
return 1
"#;

/// KEYS: presence hash, presence expiries, topic. Returns HGETALL of the
/// live entries.
const LUA_PRESENCE_READ: &str = r#"
prune(KEYS[1], KEYS[2], KEYS[3], now_ms())
return redis.call('HGETALL', KEYS[1])
"#;

/// The scripts, compiled once (their SHA1s are what EVALSHA sends).
pub(super) struct Scripts {
    /// The marker of the Redis process these scripts run on (see
    /// "Rewinds" above): one `Scripts` per connection.
    marker: String,
    publish: Script,
    history: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_read: Script,
}

impl Scripts {
    /// The scripts, sent with `marker` (from
    /// [`super::persistence::marker`], read on the connection they run on).
    pub(super) fn new(marker: String) -> Scripts {
        let with_common = |body: &str| Script::new(&format!("{LUA_COMMON}{body}"));
        Scripts {
            marker,
            publish: with_common(LUA_PUBLISH),
            history: with_common(LUA_HISTORY),
            presence_add: with_common(LUA_PRESENCE_ADD),
            presence_remove: with_common(LUA_PRESENCE_REMOVE),
            presence_read: with_common(LUA_PRESENCE_READ),
        }
    }

    pub(super) fn all(&self) -> [&Script; 5] {
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
pub(super) struct Keys {
    meta: String,
    stream: String,
    presence: String,
    expiries: String,
    topic: String,
}

impl Keys {
    pub(super) fn new(channel: &str) -> Keys {
        Keys {
            meta: format!("wc:{{{channel}}}:m"),
            stream: format!("wc:{{{channel}}}:s"),
            presence: format!("wc:{{{channel}}}:p"),
            expiries: format!("wc:{{{channel}}}:px"),
            topic: topic(channel),
        }
    }
}

pub(super) fn topic(channel: &str) -> String {
    format!("wc:{{{channel}}}:pub")
}

/// The channel of a pub/sub topic, if it is one of ours.
pub(super) fn channel_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("wc:{")?.strip_suffix("}:pub")
}

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected answer from a backbone script",
        what.to_owned(),
    ))
}

/// Runs the presence-add script on a channel with `args` (the lease, then
/// client quadruples; see [`LUA_PRESENCE_ADD`] and [`presence_args`]).
pub(super) async fn invoke_presence_add(
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
        .key(&keys.topic)
        .arg(&scripts.marker);
    for a in args {
        inv.arg(a);
    }
    inv.invoke_async::<Value>(conn).await.map(|_| ())
}

/// Publishes `data` to `channel`: its position, as the hub's publish.
pub(super) async fn publish(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
    data: &Payload,
    info: Option<&ClientInfo>,
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
        .arg(info.map(info_json).unwrap_or_default())
        .arg(&scripts.marker)
        .invoke_async(conn)
        .await?;
    let offset = offset.parse().map_err(|_| unexpected("offset"))?;
    Ok(StreamPosition { epoch, offset })
}

/// Reads a channel's history after `since`, at most `limit`.
pub(super) async fn history(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
    since: Option<&StreamPosition>,
    limit: Option<usize>,
    reverse: bool,
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
        .arg(if reverse { "1" } else { "0" })
        .arg(&scripts.marker)
        .invoke_async(conn)
        .await?;
    let mut page = parse_history(v, since)?;
    if reverse {
        page.publications.reverse();
    }
    Ok(page)
}

/// Reads the history script's answer into a page.
pub(super) fn parse_history(
    v: Value,
    since: Option<&StreamPosition>,
) -> Result<HistoryPage, RedisError> {
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
    let mut publications = Vec::with_capacity(pubs.len() / 3);
    let mut pubs = pubs.into_iter();
    while let (Some(offset), Some(data), Some(info)) = (pubs.next(), pubs.next(), pubs.next()) {
        let offset: String = redis::from_redis_value(&offset)?;
        let offset = offset.parse().map_err(|_| unexpected("history: offset"))?;
        let data: Vec<u8> = redis::from_redis_value(&data)?;
        let data = Payload::from_json_bytes(Bytes::from(data))
            .map_err(|_| unexpected("history: data is not JSON"))?;
        let info: Vec<u8> = redis::from_redis_value(&info)?;
        let info = match info.as_slice() {
            b"" => None,
            json => Some(Box::new(
                parse_info(json).ok_or_else(|| unexpected("history: info"))?,
            )),
        };
        publications.push(Publication { offset, data, info });
    }
    Ok(HistoryPage {
        epoch,
        top,
        publications,
        complete: complete == 1,
    })
}

/// Removes a client of this server from a channel's presence, announcing
/// its leave if `announce`.
pub(super) async fn presence_remove(
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    channel: &str,
    info: &ClientInfo,
    announce: bool,
) -> Result<(), RedisError> {
    let keys = Keys::new(channel);
    scripts
        .presence_remove
        .key(&keys.presence)
        .key(&keys.expiries)
        .key(&keys.topic)
        .arg(&info.client)
        .arg(if announce { "1" } else { "0" })
        .invoke_async::<Value>(conn)
        .await
        .map(|_| ())
}

/// A channel's presence, sorted by client id (as the hub's).
pub(super) async fn presence(
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
    let mut out = entries
        .into_iter()
        .map(|(client, value)| {
            parse_presence_value(client, &value).ok_or_else(|| unexpected("presence: entry"))
        })
        .collect::<Result<Vec<ClientInfo>, RedisError>>()?;
    out.sort();
    Ok(out)
}

/// A client with `conn_info` or `chan_info` is stored and announced as
/// INFO; one without, in the form servers wrote before infos existed.
fn has_infos(info: &ClientInfo) -> bool {
    info.conn_info.is_some() || info.chan_info.is_some()
}

/// The form and value of a client's presence entry, as the presence-add
/// script takes them (see [`LUA_PRESENCE_ADD`]): `0` and the user, or `2`
/// and its INFO.
pub(super) fn presence_value(info: &ClientInfo) -> (&'static str, String) {
    if has_infos(info) {
        ("2", info_json(info))
    } else {
        ("0", info.user.clone())
    }
}

/// Reads a presence entry (`FLAG USER` or `FLAG INFO`, see the module doc)
/// of the client id `client`.
fn parse_presence_value(client: String, value: &[u8]) -> Option<ClientInfo> {
    let (flag, rest) = value.split_first()?;
    match flag {
        b'0' | b'1' => Some(ClientInfo {
            client,
            user: String::from_utf8_lossy(rest).into_owned(),
            conn_info: None,
            chan_info: None,
        }),
        b'2' | b'3' => {
            let info = parse_info(rest)?;
            Some(ClientInfo { client, ..info })
        }
        _ => None,
    }
}

/// A client as INFO: one line of JSON, so it fits between the topic
/// message's separators. Written by hand so that `conn_info` and
/// `chan_info` keep their JSON text (a round trip through a JSON value
/// could rewrite numbers); a raw line break in valid JSON can only be
/// whitespace between tokens, so turning it into a space keeps the value.
fn info_json(info: &ClientInfo) -> String {
    let mut out = String::with_capacity(
        info.client.len()
            + info.user.len()
            + info.conn_info.as_ref().map_or(0, Payload::len)
            + info.chan_info.as_ref().map_or(0, Payload::len)
            + 48,
    );
    out.push_str("{\"client\":");
    out.push_str(&serde_json::Value::from(info.client.as_str()).to_string());
    out.push_str(",\"user\":");
    out.push_str(&serde_json::Value::from(info.user.as_str()).to_string());
    for (key, json) in [
        ("conn_info", &info.conn_info),
        ("chan_info", &info.chan_info),
    ] {
        if let Some(json) = json {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            // Payload text is valid JSON, hence UTF-8.
            let text = String::from_utf8_lossy(json.as_json());
            out.extend(text.chars().map(|c| match c {
                '\n' | '\r' => ' ',
                c => c,
            }));
        }
    }
    out.push('}');
    out
}

/// INFO as written by [`info_json`], or by a server from before infos
/// (`{"client","user"}` only).
fn parse_info(json: &[u8]) -> Option<ClientInfo> {
    #[derive(serde::Deserialize)]
    struct Info {
        client: String,
        user: String,
        #[serde(default, deserialize_with = "present_json")]
        conn_info: Option<Box<RawValue>>,
        #[serde(default, deserialize_with = "present_json")]
        chan_info: Option<Box<RawValue>>,
    }
    let info: Info = serde_json::from_slice(json).ok()?;
    let payload = |raw: Option<Box<RawValue>>| match raw {
        None => Some(None),
        Some(raw) => Payload::from_json(raw.get().as_bytes()).ok().map(Some),
    };
    Some(ClientInfo {
        client: info.client,
        user: info.user,
        conn_info: payload(info.conn_info)?,
        chan_info: payload(info.chan_info)?,
    })
}

/// A field present with any JSON value, `null` included (an `Option`
/// alone would read `null` as absent).
fn present_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    <Box<RawValue> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Reads a message of a channel's topic (see the module doc for the
/// format); `None` if it is not one.
pub(super) fn parse_message(channel: &str, payload: &[u8]) -> Option<BackboneEvent> {
    let mut parts = payload.splitn(2, |&b| b == b'\n');
    let kind = parts.next()?;
    let rest = parts.next()?;
    match kind {
        b"p" | b"P" => {
            let with_info = kind == b"P";
            let mut parts = rest.splitn(if with_info { 4 } else { 3 }, |&b| b == b'\n');
            let epoch = std::str::from_utf8(parts.next()?).ok()?;
            let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
            let info = match with_info {
                true => Some(Box::new(parse_info(parts.next()?)?)),
                false => None,
            };
            let data = Payload::from_json(parts.next()?).ok()?;
            Some(BackboneEvent::Publication {
                channel: channel.to_owned(),
                epoch: epoch.to_owned(),
                publication: Publication { offset, data, info },
            })
        }
        b"j" | b"l" | b"J" | b"L" => {
            let info = if kind == b"J" || kind == b"L" {
                parse_info(rest)?
            } else {
                let mut parts = rest.splitn(2, |&b| b == b'\n');
                let client = String::from_utf8(parts.next()?.to_vec()).ok()?;
                let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
                ClientInfo {
                    client,
                    user,
                    conn_info: None,
                    chan_info: None,
                }
            };
            let channel = channel.to_owned();
            Some(if kind == b"j" || kind == b"J" {
                BackboneEvent::Join { channel, info }
            } else {
                BackboneEvent::Leave { channel, info }
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_channel_names() {
        for ch in ["news", "chat:1", "a}b", "{x}", ""] {
            assert_eq!(channel_of(&topic(ch)), Some(ch));
        }
        assert_eq!(channel_of("other"), None);
        assert_eq!(channel_of("wc:{x}:m"), None);
    }

    fn json(text: &str) -> Payload {
        Payload::from_json(text.as_bytes()).expect("valid JSON")
    }

    fn client(client: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: user.into(),
            conn_info: None,
            chan_info: None,
        }
    }

    /// A client with both infos, one of them with line breaks between its
    /// tokens (as a pretty-printed token claim or proxy answer has).
    fn with_infos() -> ClientInfo {
        ClientInfo {
            conn_info: Some(json("{\n  \"name\": \"Ann\",\r\n  \"n\": 1.50e1\n}")),
            chan_info: Some(json("null")),
            ..client("c-7", "ann\nx")
        }
    }

    #[test]
    fn a_publication_with_a_sender_parses_with_its_info() {
        let info = client("c-1", "ann\n\"x\"");
        let mut message = b"P\n17-3\n9\n".to_vec();
        message.extend_from_slice(info_json(&info).as_bytes());
        message.extend_from_slice(b"\n{\"t\":\"a\\nb\"}");
        match parse_message("c", &message) {
            Some(BackboneEvent::Publication { publication, .. }) => {
                assert_eq!(publication.offset, 9);
                assert_eq!(publication.info.as_deref(), Some(&info));
                assert_eq!(publication.data.as_json(), b"{\"t\":\"a\\nb\"}");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_message("c", b"P\n17-3\n9\nnot json\n1").is_none());
    }

    #[test]
    fn messages_parse_into_events() {
        let e = parse_message("c", b"p\n17-3\n42\n{\"a\":\"x\\ny\"}").expect("publication");
        match e {
            BackboneEvent::Publication {
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
            Some(BackboneEvent::Join {
                channel: "c".into(),
                info: client("id1", "user\nwith newline"),
            })
        );
        assert!(matches!(
            parse_message("c", b"l\nid1\n"),
            Some(BackboneEvent::Leave { .. })
        ));
        // Not JSON, no offset, unknown kind, truncated: rejected.
        assert_eq!(parse_message("c", b"p\ne\n1\nnot json"), None);
        assert_eq!(parse_message("c", b"p\ne\nx\n1"), None);
        assert_eq!(parse_message("c", b"z\n1"), None);
        assert_eq!(parse_message("c", b"p"), None);
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

    #[test]
    fn info_without_infos_is_the_json_servers_wrote_before() {
        assert_eq!(
            info_json(&client("c-1", "ann\"\n")),
            r#"{"client":"c-1","user":"ann\"\n"}"#
        );
        assert_eq!(presence_value(&client("c-1", "ann")), ("0", "ann".into()));
        // What an older server stored and announced still reads.
        assert_eq!(
            parse_info(br#"{"user":"u","client":"c"}"#),
            Some(client("c", "u"))
        );
        assert_eq!(
            parse_presence_value("c".into(), b"1bob"),
            Some(client("c", "bob"))
        );
        assert_eq!(
            parse_presence_value("c".into(), b"0"),
            Some(client("c", ""))
        );
    }

    #[test]
    fn info_with_infos_is_one_line_and_keeps_their_json() {
        let info = with_infos();
        let line = info_json(&info);
        assert!(!line.contains(['\n', '\r']), "{line:?}");
        assert_eq!(
            line,
            r#"{"client":"c-7","user":"ann\nx","conn_info":{   "name": "Ann",    "n": 1.50e1 },"chan_info":null}"#
        );
        let back = parse_info(line.as_bytes()).expect("parses");
        assert_eq!(back.client, info.client);
        assert_eq!(back.user, info.user);
        // The same value (only whitespace changed), `null` kept as present.
        let value = |p: &Option<Payload>| {
            serde_json::from_slice::<serde_json::Value>(p.as_ref().expect("present").as_json())
                .expect("JSON")
        };
        assert_eq!(value(&back.conn_info), value(&info.conn_info));
        assert_eq!(back.chan_info, Some(json("null")));
        // Only one of the two.
        let only_chan = ClientInfo {
            chan_info: Some(json(r#"{"role":"mod"}"#)),
            ..client("c-8", "bo")
        };
        let (form, value) = presence_value(&only_chan);
        assert_eq!(form, "2");
        assert_eq!(
            value,
            r#"{"client":"c-8","user":"bo","chan_info":{"role":"mod"}}"#
        );
        assert_eq!(parse_info(value.as_bytes()), Some(only_chan.clone()));
        let mut stored = b"3".to_vec();
        stored.extend_from_slice(value.as_bytes());
        assert_eq!(parse_presence_value("c-8".into(), &stored), Some(only_chan));
        // Info that is not JSON, or not valid data, is refused.
        assert_eq!(parse_presence_value("c".into(), b"2{"), None);
        assert_eq!(parse_presence_value("c".into(), b"9x"), None);
        assert_eq!(parse_presence_value("c".into(), b""), None);
        assert_eq!(
            parse_info(br#"{"client":"c","user":"u","conn_info":1e999}"#),
            None
        );
    }

    #[test]
    fn join_leave_and_publications_carry_infos() {
        let info = with_infos();
        let line = info_json(&info);
        let join = parse_message("ch", format!("J\n{line}").as_bytes());
        let Some(BackboneEvent::Join { channel, info: got }) = join else {
            panic!("not a join: {join:?}");
        };
        assert_eq!(channel, "ch");
        assert_eq!(got, parse_info(line.as_bytes()).expect("parses"));
        assert!(got.conn_info.is_some() && got.chan_info.is_some());
        assert!(matches!(
            parse_message("ch", format!("L\n{line}").as_bytes()),
            Some(BackboneEvent::Leave { info, .. }) if info == got
        ));
        assert_eq!(parse_message("ch", b"J\nnot json"), None);
        // A publication's INFO sits between separators: its infos' line
        // breaks must not cut it.
        let message = format!("P\ne\n3\n{line}\n[1,\n2]");
        match parse_message("ch", message.as_bytes()) {
            Some(BackboneEvent::Publication { publication, .. }) => {
                assert_eq!(publication.info.as_deref(), Some(&got));
                assert_eq!(publication.data.as_json(), b"[1,\n2]");
            }
            other => panic!("{other:?}"),
        }
    }
}
