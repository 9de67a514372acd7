//! The Redis side of the backbone's data: the Lua scripts (one per write,
//! so each is atomic), the keys and topics of a channel, the calls that run
//! the scripts, and the parsing of their answers and of the pub/sub
//! messages they publish.
//!
//! # Keys (per channel `CH`)
//!
//! - `wc:{CH}:m`: hash with the channel's epoch (`e`) and top offset (`o`).
//!   It is created with a fresh epoch when missing (by a publish, a
//!   subscribe or a presence add), so a channel that went away starts a new
//!   epoch: positions from before can never be taken for positions after.
//! - `wc:{CH}:s`: stream of kept publications, entry id `OFFSET-0`, fields
//!   `x` (expiry, Redis time in ms), `d` (the JSON data) and, for a
//!   client's publication, `i` (its sender, `{"client":…,"user":…}`);
//!   capped at the history size, expired entries trimmed from the front.
//! - `wc:{CH}:p` / `wc:{CH}:px`: presence: client id to `FLAG USER`
//!   (FLAG `1` if its join was announced), and client id to expiry time.
//! - `wc:{CH}:pub`: the pub/sub topic: `p\nEPOCH\nOFFSET\nDATA` for a
//!   publication, `P\nEPOCH\nOFFSET\nINFO\nDATA` for one with a sender
//!   (INFO one line of JSON), `j\nCLIENT\nUSER` / `l\nCLIENT\nUSER` for
//!   join/leave.
//!
//! And per server, two control topics (see the `control` module): `wc:ctl`,
//! which every server subscribes to, and `wc:ctl:INSTANCE`, its own.
//!
//! Every write is one Lua script, so each is atomic: a publish increments
//! the offset, appends to the stream and PUBLISHes in one step, which makes
//! the pub/sub order the offset order for every server. A history read
//! reads epoch, top and range in one step too. All times are Redis's own
//! clock (`TIME`), so servers' clocks do not matter.

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script, Value};
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

/// KEYS: meta, stream, topic. ARGV: data, history size, history ttl (ms),
/// the sender's info as JSON (empty for none). Returns {epoch, offset}.
const LUA_PUBLISH: &str = r#"
local now = now_ms()
local size = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local epoch = ensure(KEYS[1], KEYS[2])
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
/// limit (-1: none). Returns {epoch, top, complete, {offset, data, info,
/// ...}} (info: the sender as JSON, or empty),
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
    table.insert(pubs, r[2][6] or '')
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
pub(super) struct Scripts {
    publish: Script,
    history: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_read: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_common = |body: &str| Script::new(&format!("{LUA_COMMON}{body}"));
        Scripts {
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
/// client triples; see [`LUA_PRESENCE_ADD`]).
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
        .key(&keys.topic);
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
        .arg(&info.user)
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

/// A publication's sender as stored in Redis: one line of JSON (JSON text
/// has no raw newline, so it fits between the topic message's separators).
fn info_json(info: &ClientInfo) -> String {
    serde_json::json!({"client": info.client, "user": info.user}).to_string()
}

fn parse_info(json: &[u8]) -> Option<ClientInfo> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(ClientInfo {
        client: v.get("client")?.as_str()?.to_owned(),
        user: v.get("user")?.as_str()?.to_owned(),
    })
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
        b"j" | b"l" => {
            let mut parts = rest.splitn(2, |&b| b == b'\n');
            let client = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let info = ClientInfo { client, user };
            let channel = channel.to_owned();
            Some(if kind == b"j" {
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

    #[test]
    fn a_publication_with_a_sender_parses_with_its_info() {
        let info = ClientInfo {
            client: "c-1".into(),
            user: "ann\n\"x\"".into(),
        };
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
                info: ClientInfo {
                    client: "id1".into(),
                    user: "user\nwith newline".into()
                }
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
}
