//! Configuration: defaults, then a TOML file, then `WAVECAST_*` environment
//! variables, then flags, each overriding the one before.
//!
//! Every setting is a flag of `wavecast serve` (clap, which also reads the
//! environment variable of the same name) and a key of the TOML file with
//! the flag's name in snake case. Durations are human (`200ms`, `25s`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use wavecast_core::namespace::{NamespaceOptions, Namespaces};

/// Flags of `wavecast serve`; each also reads `WAVECAST_<NAME>`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are these flags in snake case.
    #[arg(long, env = "WAVECAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8000]; port 0 picks a free one.
    #[arg(long, env = "WAVECAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Interval between server pings [default: 25s].
    #[arg(long, env = "WAVECAST_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Silence tolerated past an interval before a client is dropped [default: 10s].
    #[arg(long, env = "WAVECAST_HEARTBEAT_TIMEOUT", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// Most WebSocket connections held at once; beyond it the handshake gets 503 [default: 100000].
    #[arg(long, env = "WAVECAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest message accepted from a client, in bytes [default: 65536].
    #[arg(long, env = "WAVECAST_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Bytes that may wait for a slow client before it is disconnected [default: 1048576].
    #[arg(long, env = "WAVECAST_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Also serve `/echo`, which sends every message back (conformance runs).
    #[arg(long, env = "WAVECAST_ECHO", num_args = 0..=1, default_missing_value = "true")]
    pub echo: Option<bool>,
    /// Worker threads, each owning a shard of the connections [default: one per core].
    #[arg(long, env = "WAVECAST_WORKERS")]
    pub workers: Option<usize>,
    /// Allowed Origin values for browser clients (comma-separated); none set allows any.
    #[arg(long, env = "WAVECAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Key for the HTTP API (`Authorization: apikey KEY`); without one the API answers 403.
    #[arg(long, env = "WAVECAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Redis URL (`redis://HOST:PORT`) of the cluster to join; without one the backbone is in memory (one server).
    #[arg(long, env = "WAVECAST_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// With Redis: how long a crashed server's clients stay in presence (refreshed every third of it) [default: 15s].
    #[arg(long, env = "WAVECAST_REDIS_PRESENCE_TTL", value_parser = parse_duration)]
    pub redis_presence_ttl: Option<Duration>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    #[serde(default, with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    heartbeat_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_message_size: Option<usize>,
    max_queued_bytes: Option<usize>,
    echo: Option<bool>,
    workers: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    api_key: Option<String>,
    redis: Option<String>,
    #[serde(default, with = "opt_duration")]
    redis_presence_ttl: Option<Duration>,
    /// Options of channels without a namespace.
    channels: Option<NamespaceFile>,
    /// Options of channels `NAME:...`, by NAME.
    #[serde(default)]
    namespaces: BTreeMap<String, NamespaceFile>,
}

/// One namespace's options in the file; unset keys take the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFile {
    history_size: Option<usize>,
    #[serde(default, with = "opt_duration")]
    history_ttl: Option<Duration>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    allow_publish: Option<bool>,
}

impl NamespaceFile {
    fn resolve(&self) -> NamespaceOptions {
        let d = NamespaceOptions::default();
        NamespaceOptions {
            history_size: self.history_size.unwrap_or(d.history_size),
            history_ttl: self.history_ttl.unwrap_or(d.history_ttl),
            presence: self.presence.unwrap_or(d.presence),
            join_leave: self.join_leave.unwrap_or(d.join_leave),
            allow_publish: self.allow_publish.unwrap_or(d.allow_publish),
        }
    }
}

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Interval between server pings.
    pub heartbeat_interval: Duration,
    /// Silence tolerated after an interval.
    pub heartbeat_timeout: Duration,
    /// Most WebSocket connections at once.
    pub max_connections: usize,
    /// Largest client message.
    pub max_message_size: usize,
    /// Outbound byte budget per connection.
    pub max_queued_bytes: usize,
    /// Serve `/echo`.
    pub echo: bool,
    /// Worker threads (shards).
    pub workers: usize,
    /// Allowed origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// The HTTP API key; `None` disables the API (403).
    pub api_key: Option<String>,
    /// The Redis URL of the cluster; `None`: the in-memory backbone.
    pub redis: Option<String>,
    /// With Redis: lease of this server's presence entries and channels.
    pub redis_presence_ttl: Duration,
    /// Channel namespaces and the defaults of channels without one.
    pub namespaces: Namespaces,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_message_size: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            echo: false,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            allowed_origins: None,
            api_key: None,
            redis: None,
            redis_presence_ttl: Duration::from_secs(15),
            namespaces: Namespaces::default(),
        }
    }
}

/// The configuration could not be loaded; the operator must fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of its range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Resolves defaults, the file named by `args.config`, and the flags.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let config = Config {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            heartbeat_interval: args
                .heartbeat_interval
                .or(file.heartbeat_interval)
                .unwrap_or(d.heartbeat_interval),
            heartbeat_timeout: args
                .heartbeat_timeout
                .or(file.heartbeat_timeout)
                .unwrap_or(d.heartbeat_timeout),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_message_size: args
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(d.max_message_size),
            max_queued_bytes: args
                .max_queued_bytes
                .or(file.max_queued_bytes)
                .unwrap_or(d.max_queued_bytes),
            echo: args.echo.or(file.echo).unwrap_or(d.echo),
            workers: args.workers.or(file.workers).unwrap_or(d.workers),
            allowed_origins: args.allowed_origins.clone().or(file.allowed_origins),
            api_key: args
                .api_key
                .clone()
                .or(file.api_key)
                .filter(|k| !k.is_empty()),
            redis: args.redis.clone().or(file.redis).filter(|u| !u.is_empty()),
            redis_presence_ttl: args
                .redis_presence_ttl
                .or(file.redis_presence_ttl)
                .unwrap_or(d.redis_presence_ttl),
            namespaces: Namespaces {
                default: file
                    .channels
                    .as_ref()
                    .map(NamespaceFile::resolve)
                    .unwrap_or_default(),
                named: file
                    .namespaces
                    .iter()
                    .map(|(k, v)| (k.clone(), v.resolve()))
                    .collect(),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| {
            Err(ConfigError::Invalid {
                name,
                reason: reason.to_string(),
            })
        };
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat_interval", "must be more than zero");
        }
        if self.workers == 0 || self.workers > 256 {
            return invalid("workers", "must be between 1 and 256");
        }
        if self.max_message_size < 125 || self.max_message_size > 64 * 1024 * 1024 {
            return invalid("max_message_size", "must be between 125 bytes and 64 MiB");
        }
        if self.redis_presence_ttl < Duration::from_secs(1) {
            return invalid("redis_presence_ttl", "must be at least 1s");
        }
        if self.max_queued_bytes == 0 {
            return invalid("max_queued_bytes", "must be more than zero");
        }
        for (name, ns) in &self.namespaces.named {
            if name.is_empty()
                || name.contains(':')
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return invalid(
                    "namespaces",
                    "a namespace name must be non-empty, without ':' or whitespace",
                );
            }
            if ns.join_leave && !ns.presence {
                return invalid(
                    "namespaces",
                    "join_leave needs presence in the same namespace",
                );
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a human duration (`200ms`, `25s`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("wavecast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9001\"\nheartbeat_interval = \"3s\"\nmax_connections = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            max_connections: Some(9),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(10));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn namespaces_from_file() {
        let dir = std::env::temp_dir().join(format!("wavecast-config-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "[channels]\nhistory_size = 7\n[namespaces.chat]\njoin_leave = true\nhistory_ttl = \"1m\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.namespaces.default.history_size, 7);
        let chat = c.namespaces.resolve("chat:1").unwrap();
        assert!(chat.join_leave && chat.presence);
        assert_eq!(chat.history_ttl, Duration::from_secs(60));
        assert_eq!(chat.history_size, 100);
        assert!(c.namespaces.resolve("game:1").is_err());
        std::fs::write(
            &path,
            "[namespaces.chat]\npresence = false\njoin_leave = true\n",
        )
        .unwrap();
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redis_from_file_and_flags() {
        let dir =
            std::env::temp_dir().join(format!("wavecast-config-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "redis = \"redis://10.0.0.1:6379\"\nredis_presence_ttl = \"4s\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.redis.as_deref(), Some("redis://10.0.0.1:6379"));
        assert_eq!(c.redis_presence_ttl, Duration::from_secs(4));
        args.redis = Some("redis://127.0.0.1:7000".into());
        assert_eq!(
            Config::load(&args).unwrap().redis.as_deref(),
            Some("redis://127.0.0.1:7000")
        );
        assert_eq!(Config::load(&ServeArgs::default()).unwrap().redis, None);
        args.redis_presence_ttl = Some(Duration::from_millis(10));
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Invalid {
                name: "redis_presence_ttl",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("wavecast-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&path, "heartbeat_interval = \"soon\"\n").unwrap();
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Parse { .. })
        ));
        let args = ServeArgs {
            workers: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Invalid {
                name: "workers",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
