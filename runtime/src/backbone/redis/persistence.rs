//! Whether Redis keeps the streams across its own restart, read at every
//! (re)connect with `CONFIG GET appendonly` and `CONFIG GET save`.
//!
//! The channels' streams, epochs and offsets live in Redis. A Redis that
//! persists nothing comes back empty after a restart: every channel gets a
//! new epoch, and every subscriber that recovers is answered
//! `recovered: false` (its client must reload what it missed from the
//! application). With the append-only file the streams survive and the
//! nodes fill what pub/sub lost from them, so clients see nothing. That is
//! worth a warning at startup, once: the answer is logged again only when
//! it changes (a Redis restarted with other settings), not at every
//! reconnect.
//!
//! Managed Redis services often rename or refuse `CONFIG`; then the check
//! is skipped with an info line (the operator may know better), never an
//! error: the backbone works the same either way.

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::{link_broken, RESPONSE_TIMEOUT};

/// What Redis said of its persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Persistence {
    /// `appendonly yes`: every write is kept (as often as `appendfsync`
    /// says).
    AppendOnly,
    /// Snapshots only (`save` rules, `appendonly no`): a restart goes back
    /// to the last snapshot.
    Snapshots(String),
    /// Neither: a restart loses everything.
    Nothing,
    /// `CONFIG GET` was refused or answered unexpectedly.
    Unknown(String),
}

impl Persistence {
    /// Decides from the two settings' values.
    pub(super) fn from_settings(appendonly: &str, save: &str) -> Persistence {
        if appendonly.eq_ignore_ascii_case("yes") {
            Persistence::AppendOnly
        } else if !save.trim().is_empty() {
            Persistence::Snapshots(save.trim().to_owned())
        } else {
            Persistence::Nothing
        }
    }
}

/// Asks Redis (over `conn`, within the response timeout). `None`: the
/// link broke meanwhile (the driver notices at its next command; the
/// check is made again at the next connect).
pub(super) async fn read(conn: &mut MultiplexedConnection) -> Option<Persistence> {
    let appendonly = match config_get(conn, "appendonly").await {
        Ok(v) => v,
        Err(Failed::Link) => return None,
        Err(Failed::Refused(why)) => return Some(Persistence::Unknown(why)),
    };
    let save = match config_get(conn, "save").await {
        Ok(v) => v,
        Err(Failed::Link) => return None,
        Err(Failed::Refused(why)) => return Some(Persistence::Unknown(why)),
    };
    Some(Persistence::from_settings(&appendonly, &save))
}

/// Why a `CONFIG GET` gave no value.
enum Failed {
    /// The link broke or Redis did not answer in time.
    Link,
    /// Redis answered with an error (`CONFIG` renamed or not allowed) or
    /// something else than a setting.
    Refused(String),
}

/// `CONFIG GET name`: its value (an absent setting reads as empty).
async fn config_get(conn: &mut MultiplexedConnection, name: &str) -> Result<String, Failed> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let query = cmd.query_async::<Value>(conn);
    let value = match tokio::time::timeout(RESPONSE_TIMEOUT, query).await {
        Err(_) => return Err(Failed::Link),
        Ok(Err(e)) if link_broken(&e) => return Err(Failed::Link),
        Ok(Err(e)) => return Err(Failed::Refused(e.to_string())),
        Ok(Ok(v)) => v,
    };
    setting_value(&value, name)
        .ok_or_else(|| Failed::Refused(format!("unexpected answer {value:?}")))
}

/// The value of `name` in a `CONFIG GET` answer: a flat array of name,
/// value pairs (RESP2) or a map (RESP3); empty when Redis has no such
/// setting.
fn setting_value(answer: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let pairs: Vec<(&Value, &Value)> = match answer {
        Value::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|p| (&p[0], &p[1])).collect()
        }
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    if pairs.is_empty() {
        return Some(String::new());
    }
    pairs
        .into_iter()
        .find(|(k, _)| text(k).is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| text(v))
}

/// Logs `now` unless it is what was logged last (`last`, which becomes
/// `now`): a warning when a restart of Redis would lose positions, info
/// otherwise. True if it logged.
pub(super) fn report(last: &mut Option<Persistence>, now: Persistence) -> bool {
    if last.as_ref() == Some(&now) {
        tracing::debug!(?now, "redis persistence unchanged");
        return false;
    }
    match &now {
        Persistence::AppendOnly => tracing::info!(
            persistence = "appendonly",
            "redis persists every write (appendonly yes): a restart of redis keeps every \
             channel's history and position, and clients recover"
        ),
        Persistence::Snapshots(save) => tracing::warn!(
            persistence = "snapshots",
            save = %save,
            "redis persists snapshots only (appendonly no, save \"{save}\"): a restart of redis \
             goes back to the last snapshot, so every channel starts a new epoch at its first \
             use after it and every subscriber that recovers gets recovered: false; set \
             appendonly yes (docs/OPERATIONS.md, \"Redis persistence\")"
        ),
        Persistence::Nothing => tracing::warn!(
            persistence = "none",
            "redis persists nothing (appendonly no, save \"\"): a restart of redis loses every \
             channel's history and position, and every subscriber that recovers gets \
             recovered: false; set appendonly yes (docs/OPERATIONS.md, \"Redis persistence\")"
        ),
        Persistence::Unknown(why) => tracing::info!(
            persistence = "unknown",
            "cannot tell whether redis persists (CONFIG GET: {why}); without appendonly yes a \
             restart of redis makes subscribers get recovered: false"
        ),
    }
    *last = Some(now);
    true
}

/// The marker every backbone script compares with the one a channel's
/// meta was last written under (see the `scripts` module, "Rewinds"):
/// `aof` when Redis keeps every write (`aof_enabled:1`), else the Redis
/// process's `run_id`, which changes at every restart; empty when `INFO`
/// is refused (the check is then off). Read on the connection the scripts
/// will run on: a connection is to one Redis process, so the marker sent
/// with a script is always that of the process that runs it. `None`: the
/// link broke meanwhile.
pub(super) async fn marker(conn: &mut MultiplexedConnection) -> Option<String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    let server = info(conn, cmd).await?;
    let mut cmd = redis::cmd("INFO");
    cmd.arg("persistence");
    let persistence = info(conn, cmd).await?;
    Some(marker_of(&server, &persistence))
}

/// `INFO` text, empty if Redis refused it; `None` if the link broke.
async fn info(conn: &mut MultiplexedConnection, cmd: redis::Cmd) -> Option<String> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, cmd.query_async::<String>(conn)).await {
        Err(_) => None,
        Ok(Err(e)) if link_broken(&e) => None,
        Ok(Err(e)) => {
            tracing::info!(
                error = %e,
                "redis refused INFO: a redis restarted from an older snapshot cannot be \
                 detected (docs/OPERATIONS.md, \"Redis persistence\")"
            );
            Some(String::new())
        }
        Ok(Ok(text)) => Some(text),
    }
}

/// The marker from the `INFO server` and `INFO persistence` texts.
pub(super) fn marker_of(server: &str, persistence: &str) -> String {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    if field(persistence, "aof_enabled").as_deref() == Some("1") {
        return "aof".to_owned();
    }
    field(server, "run_id").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_aof_or_the_run_id() {
        let server = "# Server\r\nredis_version:7.0.15\r\nrun_id:8f1c0e\r\ntcp_port:6379\r\n";
        assert_eq!(
            marker_of(server, "# Persistence\r\naof_enabled:0\r\n"),
            "8f1c0e"
        );
        assert_eq!(marker_of(server, "aof_enabled:1\r\n"), "aof");
        assert_eq!(marker_of("", ""), "");
        assert_eq!(marker_of("run_id_x:1\r\n", ""), "");
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn settings_decide_what_survives_a_restart() {
        assert_eq!(
            Persistence::from_settings("yes", ""),
            Persistence::AppendOnly
        );
        assert_eq!(
            Persistence::from_settings("no", "3600 1 300 100"),
            Persistence::Snapshots("3600 1 300 100".into())
        );
        assert_eq!(Persistence::from_settings("no", ""), Persistence::Nothing);
        assert_eq!(Persistence::from_settings("no", " "), Persistence::Nothing);
    }

    #[test]
    fn config_get_answers_are_read_in_both_protocols() {
        let resp2 = Value::Array(vec![bulk("appendonly"), bulk("yes")]);
        assert_eq!(setting_value(&resp2, "appendonly").as_deref(), Some("yes"));
        let resp3 = Value::Map(vec![(bulk("save"), bulk(""))]);
        assert_eq!(setting_value(&resp3, "save").as_deref(), Some(""));
        assert_eq!(
            setting_value(&Value::Array(vec![]), "save").as_deref(),
            Some("")
        );
        assert_eq!(setting_value(&Value::Int(1), "save"), None);
        assert_eq!(
            setting_value(&Value::Array(vec![bulk("other"), bulk("x")]), "save"),
            None
        );
    }

    #[test]
    fn an_answer_is_logged_once_and_again_only_when_it_changes() {
        let mut last = None;
        assert!(report(&mut last, Persistence::Nothing), "first answer");
        assert!(!report(&mut last, Persistence::Nothing), "a reconnect");
        assert!(!report(&mut last, Persistence::Nothing));
        assert!(report(&mut last, Persistence::AppendOnly), "changed");
        assert!(!report(&mut last, Persistence::AppendOnly));
        assert!(report(&mut last, Persistence::Nothing), "changed back");
        assert_eq!(last, Some(Persistence::Nothing));
    }
}
