//! The TOML file: its shape (every key a flag's name in snake case) and reading it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wavecast_core::namespace::{NamespaceOptions, Permission};

use super::size::opt_size;
use super::{ConfigError, LogFormat};

/// The TOML file: the same settings as the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, with = "super::listen::opt_listen")]
    pub(super) listen: Option<SocketAddr>,
    #[serde(default, with = "opt_duration")]
    pub(super) heartbeat_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) heartbeat_timeout: Option<Duration>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) max_http_connections: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub(super) http_timeout: Option<Duration>,
    #[serde(default, with = "opt_size")]
    pub(super) max_message_size: Option<usize>,
    #[serde(default, with = "opt_size")]
    pub(super) max_queued_bytes: Option<usize>,
    pub(super) max_requests_in_flight: Option<usize>,
    pub(super) backbone_queue: Option<usize>,
    pub(super) max_history_channels: Option<usize>,
    #[serde(default, with = "opt_size")]
    pub(super) max_history_bytes: Option<usize>,
    pub(super) echo: Option<bool>,
    pub(super) workers: Option<usize>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) api_key: Option<String>,
    pub(super) status: Option<bool>,
    pub(super) status_password: Option<String>,
    pub(super) redis: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) redis_presence_ttl: Option<Duration>,
    pub(super) token_hmac_secret: Option<String>,
    pub(super) token_public_key: Option<PathBuf>,
    pub(super) token_audience: Option<String>,
    pub(super) token_issuer: Option<String>,
    pub(super) token_allow_no_exp: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub(super) token_leeway: Option<Duration>,
    #[serde(default, with = "opt_size")]
    pub(super) token_max_size: Option<usize>,
    pub(super) token_jwks_url: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) token_jwks_refresh: Option<Duration>,
    pub(super) connect_proxy: Option<String>,
    pub(super) refresh_proxy: Option<String>,
    pub(super) subscribe_proxy: Option<String>,
    pub(super) publish_proxy: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) proxy_timeout: Option<Duration>,
    pub(super) proxy_headers: Option<Vec<String>>,
    pub(super) proxy_max_in_flight: Option<usize>,
    pub(super) allow_anonymous: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(super) refresh_grace: Option<Duration>,
    pub(super) client_command_rate: Option<u32>,
    pub(super) client_publish_rate: Option<u32>,
    pub(super) client_ping_rate: Option<u32>,
    pub(super) max_subscriptions: Option<usize>,
    pub(super) sse_max_channels: Option<usize>,
    pub(super) sse_token_cookie: Option<String>,
    pub(super) sse_token_in_query: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub(super) sse_retry: Option<Duration>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) log_level: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(super) log_summary_interval: Option<Duration>,
    pub(super) compression: Option<bool>,
    pub(super) compression_level: Option<u32>,
    #[serde(default, with = "opt_size")]
    pub(super) compression_threshold: Option<usize>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    pub(super) tls_handshake_timeout: Option<Duration>,
    pub(super) tls_max_handshakes: Option<usize>,
    /// Options of channels without a namespace.
    pub(super) channels: Option<NamespaceFile>,
    /// Options of channels `NAME:...`, by NAME.
    #[serde(default)]
    pub(super) namespaces: BTreeMap<String, NamespaceFile>,
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
    allow_subscribe: Option<PermissionValue>,
    allow_publish: Option<PermissionValue>,
    allow_history: Option<PermissionValue>,
    allow_presence: Option<PermissionValue>,
    user_limited: Option<bool>,
    compression: Option<bool>,
}

/// A permission as written in the file: a string, or a boolean, which is
/// refused with what to write instead (`allow_publish` was a boolean
/// before permissions).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PermissionValue {
    Name(String),
    Bool(bool),
}

impl NamespaceFile {
    /// The namespace's options over `base` (the defaults, or the secured
    /// defaults when authentication is configured).
    pub(super) fn resolve(
        &self,
        base: NamespaceOptions,
        ns: &str,
    ) -> Result<NamespaceOptions, ConfigError> {
        let permission = |name: &'static str,
                          value: &Option<PermissionValue>,
                          default: Permission,
                          subscribe: bool|
         -> Result<Permission, ConfigError> {
            let allowed: &[&str] = if subscribe {
                &["anonymous", "authenticated", "token", "none"]
            } else {
                &["anonymous", "authenticated", "subscriber", "none"]
            };
            let invalid = |reason: String| ConfigError::Invalid { name, reason };
            match value {
                None => Ok(default),
                Some(PermissionValue::Bool(b)) => Err(invalid(format!(
                    "in {ns}: a boolean is no longer accepted; write one of {} (for {b}: \"{}\")",
                    allowed.join(", "),
                    if *b { "anonymous" } else { "none" }
                ))),
                Some(PermissionValue::Name(n)) => match Permission::from_name(n) {
                    Some(p) if allowed.contains(&p.name()) => Ok(p),
                    _ => Err(invalid(format!(
                        "in {ns}: {n:?} is not one of {}",
                        allowed.join(", ")
                    ))),
                },
            }
        };
        Ok(NamespaceOptions {
            history_size: self.history_size.unwrap_or(base.history_size),
            history_ttl: self.history_ttl.unwrap_or(base.history_ttl),
            presence: self.presence.unwrap_or(base.presence),
            join_leave: self.join_leave.unwrap_or(base.join_leave),
            compression: self.compression.unwrap_or(base.compression),
            allow_subscribe: permission(
                "allow_subscribe",
                &self.allow_subscribe,
                base.allow_subscribe,
                true,
            )?,
            allow_publish: permission(
                "allow_publish",
                &self.allow_publish,
                base.allow_publish,
                false,
            )?,
            allow_history: permission(
                "allow_history",
                &self.allow_history,
                base.allow_history,
                false,
            )?,
            allow_presence: permission(
                "allow_presence",
                &self.allow_presence,
                base.allow_presence,
                false,
            )?,
            user_limited: self.user_limited.unwrap_or(base.user_limited),
        })
    }
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
