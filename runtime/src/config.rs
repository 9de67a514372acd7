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

use hyper::Uri;
use serde::Deserialize;
use wavecast_core::auth::{
    AuthConfig, TokenConfig, Verifier, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEEWAY,
    DEFAULT_MAX_TOKEN_SIZE, DEFAULT_REFRESH_GRACE,
};
use wavecast_core::hub::HistoryBudget;
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::proxy::{Proxies, ProxyKind};

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
    /// Most WebSocket connections one client IP address may hold at once; beyond it the handshake gets 503; 0: no limit [default: 0].
    #[arg(long, env = "WAVECAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Most plain HTTP (keep-alive) connections held at once; beyond it a new one gets 503 [default: 1024].
    #[arg(long, env = "WAVECAST_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// Time a client has to send a request head, and an HTTP keep-alive connection may stay idle between requests [default: 10s].
    #[arg(long, env = "WAVECAST_HTTP_TIMEOUT", value_parser = parse_duration)]
    pub http_timeout: Option<Duration>,
    /// Largest message accepted from a client, in bytes [default: 65536].
    #[arg(long, env = "WAVECAST_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Bytes that may wait for a slow client before it is disconnected [default: 1048576].
    #[arg(long, env = "WAVECAST_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Commands of one connection that may wait for the backbone at once; beyond it the server stops reading that client until replies go out [default: 32].
    #[arg(long, env = "WAVECAST_MAX_REQUESTS_IN_FLIGHT")]
    pub max_requests_in_flight: Option<usize>,
    /// Commands (of all connections) that may wait for the sequencer, and events that may wait for a shard; beyond it the server stops reading clients until the sequencer catches up [default: 8192].
    #[arg(long, env = "WAVECAST_BACKBONE_QUEUE")]
    pub backbone_queue: Option<usize>,
    /// Most channels holding history at once, server-wide; beyond it the oldest history is evicted [default: 10000].
    #[arg(long, env = "WAVECAST_MAX_HISTORY_CHANNELS")]
    pub max_history_channels: Option<usize>,
    /// Most bytes of history kept, server-wide (payloads plus 128 bytes each); beyond it the oldest history is evicted [default: 268435456].
    #[arg(long, env = "WAVECAST_MAX_HISTORY_BYTES")]
    pub max_history_bytes: Option<usize>,
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
    /// Shared secret of HS256/384/512 connection and subscription tokens.
    #[arg(long, env = "WAVECAST_TOKEN_HMAC_SECRET", hide_env_values = true)]
    pub token_hmac_secret: Option<String>,
    /// PEM file of the public key of RS/PS (RSA), ES256 (P-256), ES384 (P-384) or EdDSA (Ed25519) tokens.
    #[arg(long, env = "WAVECAST_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// Audience (`aud`) every token must name.
    #[arg(long, env = "WAVECAST_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// Issuer (`iss`) every token must name.
    #[arg(long, env = "WAVECAST_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// Accept tokens without `exp`.
    #[arg(long, env = "WAVECAST_TOKEN_ALLOW_NO_EXP", num_args = 0..=1, default_missing_value = "true")]
    pub token_allow_no_exp: Option<bool>,
    /// Clock skew allowed when checking a token's `exp` and `nbf` [default: 5s].
    #[arg(long, env = "WAVECAST_TOKEN_LEEWAY", value_parser = parse_duration)]
    pub token_leeway: Option<Duration>,
    /// Longest token accepted, in bytes [default: 8192].
    #[arg(long, env = "WAVECAST_TOKEN_MAX_SIZE")]
    pub token_max_size: Option<usize>,
    /// URL of a JWKS (JSON Web Key Set) whose keys verify tokens by `kid`; https, or http to a loopback host; needs token_audience.
    #[arg(long, env = "WAVECAST_TOKEN_JWKS_URL")]
    pub token_jwks_url: Option<String>,
    /// Interval between fetches of token_jwks_url (an unknown `kid` also fetches it, at most every 30s) [default: 10m].
    #[arg(long, env = "WAVECAST_TOKEN_JWKS_REFRESH", value_parser = parse_duration)]
    pub token_jwks_refresh: Option<Duration>,
    /// URL the server POSTs a `connect` without a token to; the backend says who the connection is.
    #[arg(long, env = "WAVECAST_CONNECT_PROXY")]
    pub connect_proxy: Option<String>,
    /// URL the server POSTs to when a connection of the connect proxy reaches its `expire_at`.
    #[arg(long, env = "WAVECAST_REFRESH_PROXY")]
    pub refresh_proxy: Option<String>,
    /// URL the server POSTs a client's subscribe to; the backend may refuse it.
    #[arg(long, env = "WAVECAST_SUBSCRIBE_PROXY")]
    pub subscribe_proxy: Option<String>,
    /// URL the server POSTs a client's publication to; the backend may refuse it or rewrite its data.
    #[arg(long, env = "WAVECAST_PUBLISH_PROXY")]
    pub publish_proxy: Option<String>,
    /// Time a proxy request may take; then the client gets error 100 [default: 1s].
    #[arg(long, env = "WAVECAST_PROXY_TIMEOUT", value_parser = parse_duration)]
    pub proxy_timeout: Option<Duration>,
    /// Client handshake request headers forwarded with every proxy request (comma-separated names, e.g. cookie).
    #[arg(long, env = "WAVECAST_PROXY_HEADERS", value_delimiter = ',')]
    pub proxy_headers: Option<Vec<String>>,
    /// Most proxy requests in flight at once, server-wide; beyond it the client gets error 100 at once [default: 256].
    #[arg(long, env = "WAVECAST_PROXY_MAX_IN_FLIGHT")]
    pub proxy_max_in_flight: Option<usize>,
    /// Also allow anonymous connections beside token authentication [default: false; with no token key and no connect proxy every connection is anonymous].
    #[arg(long, env = "WAVECAST_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Time a connection has to send `connect` where authentication is on [default: 10s].
    #[arg(long, env = "WAVECAST_CONNECT_TIMEOUT", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Time past a token's `exp` before a connection that did not refresh is closed [default: 30s].
    #[arg(long, env = "WAVECAST_REFRESH_GRACE", value_parser = parse_duration)]
    pub refresh_grace: Option<Duration>,
    /// Commands per second one connection may send (bursts of twice that); over it error 107, and close 4504 if it persists 5s; 0: no limit [default: 100].
    #[arg(long, env = "WAVECAST_CLIENT_COMMAND_RATE")]
    pub client_command_rate: Option<u32>,
    /// Publications per second one connection may send (same rules; 0: no limit) [default: 20].
    #[arg(long, env = "WAVECAST_CLIENT_PUBLISH_RATE")]
    pub client_publish_rate: Option<u32>,
    /// Most channels one connection may subscribe to; beyond it error 107 [default: 512].
    #[arg(long, env = "WAVECAST_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Most channels of one Server-Sent Events stream (`GET /sse`), at most 128; beyond it 400 [default: 32].
    #[arg(long, env = "WAVECAST_SSE_MAX_CHANNELS")]
    pub sse_max_channels: Option<usize>,
    /// The cookie that carries an SSE stream's connection token [default: wavecast_token].
    #[arg(long, env = "WAVECAST_SSE_TOKEN_COOKIE")]
    pub sse_token_cookie: Option<String>,
    /// Accept an SSE stream's token in the URL (`?token=`), which ends up in logs [default: false].
    #[arg(long, env = "WAVECAST_SSE_TOKEN_IN_QUERY")]
    pub sse_token_in_query: Option<bool>,
    /// Reconnection delay an SSE stream tells the browser (`retry:`), randomised per stream between half and 1.5 times it [default: 2s].
    #[arg(long, env = "WAVECAST_SSE_RETRY", value_parser = parse_duration)]
    pub sse_retry: Option<Duration>,
    /// Log format: `text` (for people) or `json` (one object per line, for log shippers) [default: text].
    #[arg(long, env = "WAVECAST_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to log: a level (`info`, `debug`) or filter directives such as `wavecast=debug,info` [default: RUST_LOG if set, else info].
    #[arg(long, env = "WAVECAST_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Interval of the info line that sums up slow-consumer and heartbeat closes (written only when there were some) [default: 10s].
    #[arg(long, env = "WAVECAST_LOG_SUMMARY_INTERVAL", value_parser = parse_duration)]
    pub log_summary_interval: Option<Duration>,
    /// Serve anonymous clients on a non-loopback address without any authentication (flag only).
    #[arg(long)]
    pub insecure: bool,
}

/// The format of the log on stderr (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message and
    /// fields (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`,
    /// `fields`), for log shippers.
    Json,
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
    max_connections_per_ip: Option<usize>,
    max_http_connections: Option<usize>,
    #[serde(default, with = "opt_duration")]
    http_timeout: Option<Duration>,
    max_message_size: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_requests_in_flight: Option<usize>,
    backbone_queue: Option<usize>,
    max_history_channels: Option<usize>,
    max_history_bytes: Option<usize>,
    echo: Option<bool>,
    workers: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    api_key: Option<String>,
    redis: Option<String>,
    #[serde(default, with = "opt_duration")]
    redis_presence_ttl: Option<Duration>,
    token_hmac_secret: Option<String>,
    token_public_key: Option<PathBuf>,
    token_audience: Option<String>,
    token_issuer: Option<String>,
    token_allow_no_exp: Option<bool>,
    #[serde(default, with = "opt_duration")]
    token_leeway: Option<Duration>,
    token_max_size: Option<usize>,
    token_jwks_url: Option<String>,
    #[serde(default, with = "opt_duration")]
    token_jwks_refresh: Option<Duration>,
    connect_proxy: Option<String>,
    refresh_proxy: Option<String>,
    subscribe_proxy: Option<String>,
    publish_proxy: Option<String>,
    #[serde(default, with = "opt_duration")]
    proxy_timeout: Option<Duration>,
    proxy_headers: Option<Vec<String>>,
    proxy_max_in_flight: Option<usize>,
    allow_anonymous: Option<bool>,
    #[serde(default, with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    refresh_grace: Option<Duration>,
    client_command_rate: Option<u32>,
    client_publish_rate: Option<u32>,
    max_subscriptions: Option<usize>,
    sse_max_channels: Option<usize>,
    sse_token_cookie: Option<String>,
    sse_token_in_query: Option<bool>,
    #[serde(default, with = "opt_duration")]
    sse_retry: Option<Duration>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    #[serde(default, with = "opt_duration")]
    log_summary_interval: Option<Duration>,
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
    allow_subscribe: Option<PermissionValue>,
    allow_publish: Option<PermissionValue>,
    allow_history: Option<PermissionValue>,
    allow_presence: Option<PermissionValue>,
    user_limited: Option<bool>,
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
    fn resolve(&self, base: NamespaceOptions, ns: &str) -> Result<NamespaceOptions, ConfigError> {
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
    /// Most WebSocket connections of one client IP address at once (0: no
    /// limit).
    pub max_connections_per_ip: usize,
    /// Most plain HTTP connections at once.
    pub max_http_connections: usize,
    /// Request head deadline (first and later heads) and HTTP keep-alive
    /// idle limit.
    pub http_timeout: Duration,
    /// Largest client message.
    pub max_message_size: usize,
    /// Outbound byte budget per connection.
    pub max_queued_bytes: usize,
    /// Commands per connection waiting for the backbone.
    pub max_requests_in_flight: usize,
    /// Commands waiting for the sequencer (all shards), and events waiting
    /// in one shard's inbox, before reading stops.
    pub backbone_queue: usize,
    /// Most channels holding history (in-memory backbone only).
    pub max_history_channels: usize,
    /// Most bytes of history (in-memory backbone only).
    pub max_history_bytes: usize,
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
    /// Token keys and rules (`token_*`).
    pub tokens: TokenConfig,
    /// The verifier built from `tokens`, when a key is configured.
    pub verifier: Option<Verifier>,
    /// `token_jwks_url`: the key set fetched for `tokens` (then
    /// `tokens.jwks` is set).
    pub token_jwks_url: Option<Uri>,
    /// Interval between fetches of the key set.
    pub token_jwks_refresh: Duration,
    /// `connect_proxy`.
    pub connect_proxy: Option<Uri>,
    /// `refresh_proxy`.
    pub refresh_proxy: Option<Uri>,
    /// `subscribe_proxy`.
    pub subscribe_proxy: Option<Uri>,
    /// `publish_proxy`.
    pub publish_proxy: Option<Uri>,
    /// Time one proxy request may take.
    pub proxy_timeout: Duration,
    /// Client request headers forwarded to the proxies (lowercase names).
    pub proxy_headers: Vec<String>,
    /// Most proxy requests in flight, server-wide.
    pub proxy_max_in_flight: usize,
    /// Anonymous connections allowed (always, when no key and no connect
    /// proxy is configured).
    pub allow_anonymous: bool,
    /// Time to send `connect` where authentication is on.
    pub connect_timeout: Duration,
    /// Time past `exp` before an unrefreshed connection is closed.
    pub refresh_grace: Duration,
    /// `--insecure`: serve anonymous clients on a network address.
    pub insecure: bool,
    /// Commands per second per connection (0: no limit).
    pub client_command_rate: u32,
    /// Publications per second per connection (0: no limit).
    pub client_publish_rate: u32,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most channels of one SSE stream.
    pub sse_max_channels: usize,
    /// The cookie of an SSE stream's token.
    pub sse_token_cookie: String,
    /// `?token=` accepted on `/sse`.
    pub sse_token_in_query: bool,
    /// The middle of the randomised `retry:` of SSE streams.
    pub sse_retry: Duration,
    /// The log's format.
    pub log_format: LogFormat,
    /// The log's filter directives as configured; `None`: not set
    /// (`RUST_LOG`, else `info`; see [`crate::logging`]).
    pub log_level: Option<String>,
    /// Interval of the summary of slow-consumer and heartbeat closes.
    pub log_summary_interval: Duration,
    /// The config file read, if any (for the startup lines).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_http_connections: 1024,
            http_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            max_requests_in_flight: wavecast_core::node::MAX_REQUESTS_IN_FLIGHT,
            backbone_queue: 8192,
            max_history_channels: HistoryBudget::DEFAULT_MAX_CHANNELS,
            max_history_bytes: HistoryBudget::DEFAULT_MAX_BYTES,
            echo: false,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            allowed_origins: None,
            api_key: None,
            redis: None,
            redis_presence_ttl: Duration::from_secs(15),
            namespaces: Namespaces::default(),
            tokens: TokenConfig {
                leeway: DEFAULT_LEEWAY,
                max_size: DEFAULT_MAX_TOKEN_SIZE,
                ..TokenConfig::default()
            },
            verifier: None,
            token_jwks_url: None,
            token_jwks_refresh: Duration::from_secs(600),
            connect_proxy: None,
            refresh_proxy: None,
            subscribe_proxy: None,
            publish_proxy: None,
            proxy_timeout: Duration::from_secs(1),
            proxy_headers: Vec::new(),
            proxy_max_in_flight: 256,
            allow_anonymous: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            refresh_grace: DEFAULT_REFRESH_GRACE,
            insecure: false,
            client_command_rate: 100,
            client_publish_rate: 20,
            max_subscriptions: wavecast_core::node::MAX_SUBSCRIPTIONS,
            sse_max_channels: wavecast_core::sse::MAX_CHANNELS,
            sse_token_cookie: wavecast_core::sse::TOKEN_COOKIE.to_owned(),
            sse_token_in_query: false,
            sse_retry: Duration::from_secs(2),
            log_format: LogFormat::Text,
            log_level: None,
            log_summary_interval: Duration::from_secs(10),
            config_file: None,
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
    /// Whether any authentication is configured: a token key (secret,
    /// public key, JWKS URL) or a connect proxy. Without one every
    /// connection is anonymous, which only loopback or `--insecure` allows.
    pub fn authenticates(&self) -> bool {
        self.verifier.is_some() || self.connect_proxy.is_some()
    }

    /// Which proxies are configured (for the nodes).
    pub fn proxies(&self) -> Proxies {
        Proxies {
            connect: self.connect_proxy.is_some(),
            refresh: self.refresh_proxy.is_some(),
            subscribe: self.subscribe_proxy.is_some(),
            publish: self.publish_proxy.is_some(),
        }
    }

    /// The SSE endpoint's request rules (for the shards).
    pub fn sse(&self) -> wavecast_core::sse::SseConfig {
        wavecast_core::sse::SseConfig {
            max_channels: self.sse_max_channels,
            token_cookie: self.sse_token_cookie.clone(),
            token_in_query: self.sse_token_in_query,
            allowed_origins: self.allowed_origins.clone(),
        }
    }

    /// The URL of a proxy, if configured.
    pub fn proxy_url(&self, kind: ProxyKind) -> Option<&Uri> {
        match kind {
            ProxyKind::Connect => self.connect_proxy.as_ref(),
            ProxyKind::Refresh => self.refresh_proxy.as_ref(),
            ProxyKind::Subscribe => self.subscribe_proxy.as_ref(),
            ProxyKind::Publish => self.publish_proxy.as_ref(),
        }
    }

    /// How the nodes authenticate connections; `unix_origin_micros` is the
    /// wall-clock time of the server clock's origin.
    pub fn auth(&self, unix_origin_micros: u64) -> AuthConfig {
        AuthConfig {
            verifier: self.verifier.clone(),
            allow_anonymous: self.allow_anonymous,
            connect_timeout: self.connect_timeout,
            refresh_grace: self.refresh_grace,
            unix_origin_micros,
        }
    }

    /// Resolves defaults, the file named by `args.config`, and the flags.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let public_key_path = args
            .token_public_key
            .clone()
            .or(file.token_public_key.clone());
        let public_key_pem = match &public_key_path {
            Some(path) => Some(std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let url = |name: &'static str, flag: &Option<String>, file: &Option<String>| {
            flag.clone()
                .or_else(|| file.clone())
                .filter(|u| !u.is_empty())
                .map(|u| parse_url(name, &u))
                .transpose()
        };
        let token_jwks_url = url("token_jwks_url", &args.token_jwks_url, &file.token_jwks_url)?;
        let connect_proxy = url("connect_proxy", &args.connect_proxy, &file.connect_proxy)?;
        let refresh_proxy = url("refresh_proxy", &args.refresh_proxy, &file.refresh_proxy)?;
        let subscribe_proxy = url(
            "subscribe_proxy",
            &args.subscribe_proxy,
            &file.subscribe_proxy,
        )?;
        let publish_proxy = url("publish_proxy", &args.publish_proxy, &file.publish_proxy)?;
        let tokens = TokenConfig {
            hmac_secret: args
                .token_hmac_secret
                .clone()
                .or(file.token_hmac_secret.clone())
                .map(String::into_bytes),
            public_key_pem,
            audience: args.token_audience.clone().or(file.token_audience.clone()),
            issuer: args.token_issuer.clone().or(file.token_issuer.clone()),
            allow_no_exp: args
                .token_allow_no_exp
                .or(file.token_allow_no_exp)
                .unwrap_or(false),
            leeway: args
                .token_leeway
                .or(file.token_leeway)
                .unwrap_or(d.tokens.leeway),
            max_size: args
                .token_max_size
                .or(file.token_max_size)
                .unwrap_or(d.tokens.max_size),
            jwks: token_jwks_url.is_some(),
        };
        let verifier = if tokens.has_key() {
            Some(
                Verifier::new(tokens.clone()).map_err(|e| ConfigError::Invalid {
                    name: if tokens.public_key_pem.is_some() {
                        "token_public_key"
                    } else {
                        "token_hmac_secret"
                    },
                    reason: e.to_string(),
                })?,
            )
        } else {
            None
        };
        // With authentication configured, the namespaces' defaults close:
        // subscribing needs a user, publishing is the backends'.
        let authenticates = verifier.is_some() || connect_proxy.is_some();
        let base = if authenticates {
            NamespaceOptions::secured()
        } else {
            NamespaceOptions::default()
        };
        let default_ns = match &file.channels {
            Some(f) => f.resolve(base, "[channels]")?,
            None => base,
        };
        let mut named = BTreeMap::new();
        for (name, f) in &file.namespaces {
            named.insert(
                name.clone(),
                f.resolve(base, &format!("[namespaces.{name}]"))?,
            );
        }
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
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip),
            max_http_connections: args
                .max_http_connections
                .or(file.max_http_connections)
                .unwrap_or(d.max_http_connections),
            http_timeout: args
                .http_timeout
                .or(file.http_timeout)
                .unwrap_or(d.http_timeout),
            max_message_size: args
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(d.max_message_size),
            max_queued_bytes: args
                .max_queued_bytes
                .or(file.max_queued_bytes)
                .unwrap_or(d.max_queued_bytes),
            max_requests_in_flight: args
                .max_requests_in_flight
                .or(file.max_requests_in_flight)
                .unwrap_or(d.max_requests_in_flight),
            backbone_queue: args
                .backbone_queue
                .or(file.backbone_queue)
                .unwrap_or(d.backbone_queue),
            max_history_channels: args
                .max_history_channels
                .or(file.max_history_channels)
                .unwrap_or(d.max_history_channels),
            max_history_bytes: args
                .max_history_bytes
                .or(file.max_history_bytes)
                .unwrap_or(d.max_history_bytes),
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
                default: default_ns,
                named,
            },
            allow_anonymous: args
                .allow_anonymous
                .or(file.allow_anonymous)
                .unwrap_or(!authenticates),
            tokens,
            verifier,
            token_jwks_url,
            token_jwks_refresh: args
                .token_jwks_refresh
                .or(file.token_jwks_refresh)
                .unwrap_or(d.token_jwks_refresh),
            connect_proxy,
            refresh_proxy,
            subscribe_proxy,
            publish_proxy,
            proxy_timeout: args
                .proxy_timeout
                .or(file.proxy_timeout)
                .unwrap_or(d.proxy_timeout),
            proxy_headers: args
                .proxy_headers
                .clone()
                .or(file.proxy_headers)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            proxy_max_in_flight: args
                .proxy_max_in_flight
                .or(file.proxy_max_in_flight)
                .unwrap_or(d.proxy_max_in_flight),
            connect_timeout: args
                .connect_timeout
                .or(file.connect_timeout)
                .unwrap_or(d.connect_timeout),
            refresh_grace: args
                .refresh_grace
                .or(file.refresh_grace)
                .unwrap_or(d.refresh_grace),
            insecure: args.insecure,
            client_command_rate: args
                .client_command_rate
                .or(file.client_command_rate)
                .unwrap_or(d.client_command_rate),
            client_publish_rate: args
                .client_publish_rate
                .or(file.client_publish_rate)
                .unwrap_or(d.client_publish_rate),
            max_subscriptions: args
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(d.max_subscriptions),
            sse_max_channels: args
                .sse_max_channels
                .or(file.sse_max_channels)
                .unwrap_or(d.sse_max_channels),
            sse_token_cookie: args
                .sse_token_cookie
                .clone()
                .or(file.sse_token_cookie.clone())
                .unwrap_or(d.sse_token_cookie),
            sse_token_in_query: args
                .sse_token_in_query
                .or(file.sse_token_in_query)
                .unwrap_or(d.sse_token_in_query),
            sse_retry: args.sse_retry.or(file.sse_retry).unwrap_or(d.sse_retry),
            log_format: args.log_format.or(file.log_format).unwrap_or(d.log_format),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .filter(|l| !l.trim().is_empty()),
            log_summary_interval: args
                .log_summary_interval
                .or(file.log_summary_interval)
                .unwrap_or(d.log_summary_interval),
            config_file: args.config.clone(),
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
        if self.http_timeout.is_zero() {
            return invalid("http_timeout", "must be more than zero");
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
        // A connection's count is a u16 in the core.
        if self.max_requests_in_flight == 0 || self.max_requests_in_flight > 1024 {
            return invalid("max_requests_in_flight", "must be between 1 and 1024");
        }
        if self.backbone_queue == 0 || self.backbone_queue > 10_000_000 {
            return invalid("backbone_queue", "must be between 1 and 10000000");
        }
        if self.max_history_channels == 0 || self.max_history_channels > 100_000_000 {
            return invalid("max_history_channels", "must be between 1 and 100000000");
        }
        // At least one largest client message must fit; at most 1 TiB.
        if self.max_history_bytes < 64 * 1024 || self.max_history_bytes as u64 > 1 << 40 {
            return invalid("max_history_bytes", "must be between 64 KiB and 1 TiB");
        }
        if !self.authenticates() && !self.allow_anonymous {
            return invalid(
                "allow_anonymous",
                "false needs token_hmac_secret, token_public_key, token_jwks_url or connect_proxy: \
                 no connection could authenticate",
            );
        }
        if !self.authenticates() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid {
                name: "listen",
                reason: format!(
                    "{} is not a loopback address and no authentication is configured: every client \
                     could subscribe to and publish on every channel. Set token_hmac_secret, \
                     token_public_key, token_jwks_url or connect_proxy (docs/OPERATIONS.md, \
                     \"Authentication\"), or pass --insecure to serve anonymous clients anyway",
                    self.listen
                ),
            });
        }
        // Bucket levels are u32 thousandths of a command, twice the rate.
        for (name, rate) in [
            ("client_command_rate", self.client_command_rate),
            ("client_publish_rate", self.client_publish_rate),
        ] {
            if rate > 1_000_000 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at most 1000000 (0: no limit)".into(),
                });
            }
        }
        if self.max_subscriptions == 0 || self.max_subscriptions > 65_536 {
            return invalid("max_subscriptions", "must be between 1 and 65536");
        }
        if self.sse_max_channels == 0 || self.sse_max_channels > 128 {
            // An id holds a position per channel and comes back in a
            // header, within the request head's 8 KiB.
            return invalid("sse_max_channels", "must be between 1 and 128");
        }
        let cookie_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.sse_token_cookie.is_empty() || !self.sse_token_cookie.chars().all(cookie_char) {
            return invalid(
                "sse_token_cookie",
                "must be a cookie name (letters, digits, and !#$%&'*+-.^_`|~)",
            );
        }
        if self.sse_retry.is_zero() || self.sse_retry > Duration::from_secs(3600) {
            return invalid("sse_retry", "must be more than zero and at most 1h");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be more than zero");
        }
        if let Some(level) = &self.log_level {
            if let Err(e) = parse_log_level(level) {
                return Err(ConfigError::Invalid {
                    name: "log_level",
                    reason: format!(
                        "in {level:?}: {e}; write a level (off, error, warn, info, debug, trace) \
                         or directives such as wavecast=debug,info"
                    ),
                });
            }
        }
        if self.log_summary_interval < Duration::from_secs(1)
            || self.log_summary_interval > Duration::from_secs(3600)
        {
            return invalid("log_summary_interval", "must be between 1s and 1h");
        }
        if self.tokens.max_size < 256 || self.tokens.max_size > 1024 * 1024 {
            return invalid("token_max_size", "must be between 256 bytes and 1 MiB");
        }
        self.validate_outbound()?;
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

impl Config {
    /// The rules of the outbound settings: the JWKS URL's audience and
    /// scheme, the proxies' bounds and forwarded headers. (The URLs were
    /// parsed, as http or https, by [`parse_url`].)
    fn validate_outbound(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        if let Some(url) = &self.token_jwks_url {
            if self.tokens.audience.is_none() {
                return invalid(
                    "token_jwks_url",
                    "needs token_audience: keys from a shared identity provider sign tokens \
                     for other services too, so this server must accept only those naming it"
                        .into(),
                );
            }
            if url.scheme_str() != Some("https") && !is_loopback_host(url) {
                return invalid(
                    "token_jwks_url",
                    format!(
                        "{url} must be https (http is allowed only to a loopback host: \
                         127.0.0.0/8, ::1, localhost): the keys decide who may connect"
                    ),
                );
            }
        }
        if self.token_jwks_refresh < Duration::from_secs(1) {
            return invalid("token_jwks_refresh", "must be at least 1s".into());
        }
        if self.proxy_timeout.is_zero() || self.proxy_timeout > Duration::from_secs(60) {
            return invalid(
                "proxy_timeout",
                "must be more than zero and at most 60s".into(),
            );
        }
        if self.proxy_max_in_flight == 0 || self.proxy_max_in_flight > 1_000_000 {
            return invalid(
                "proxy_max_in_flight",
                "must be between 1 and 1000000".into(),
            );
        }
        for name in &self.proxy_headers {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return invalid("proxy_headers", format!("{name:?} is not a header name"));
            }
            if NOT_FORWARDED.contains(&name.as_str()) {
                return invalid(
                    "proxy_headers",
                    format!(
                        "{name:?} describes the client's own request, not the client; \
                         it cannot be forwarded (none of {})",
                        NOT_FORWARDED.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Headers that frame or route an HTTP message: the proxy request has its
/// own, so they are never forwarded.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Reads a URL setting: an absolute `http://` or `https://` URL with a
/// host.
fn parse_url(name: &'static str, value: &str) -> Result<Uri, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { name, reason };
    let url: Uri = value
        .parse()
        .map_err(|e| invalid(format!("{value:?} is not a URL: {e}")))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(invalid(format!(
                "{value:?} must be an http:// or https:// URL"
            )))
        }
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(invalid(format!("{value:?} has no host")));
    }
    Ok(url)
}

/// Whether a URL's host is this machine by name or address (127.0.0.0/8,
/// `::1`, `localhost`): http to it never crosses a network.
fn is_loopback_host(url: &Uri) -> bool {
    let Some(host) = url.host() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// Parses a log filter (`log_level`, `RUST_LOG`): a level or
/// comma-separated `target=level` directives, strictly: a directive that
/// does not parse is an error, and so is a bare word that is not a level
/// (tracing would read `loud` as "everything of target `loud`", which is
/// a typo far more often than a wish).
pub fn parse_log_level(directive: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in directive
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !part.contains(['=', '[']) && !LEVELS.iter().any(|l| part.eq_ignore_ascii_case(l)) {
            return Err(format!(
                "{part:?} is neither a level nor a TARGET=LEVEL directive"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(directive)
        .map_err(|e| e.to_string())
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
    fn http_bounds_from_file_and_flags() {
        let d = Config::default();
        assert_eq!(
            (d.max_http_connections, d.http_timeout),
            (1024, Duration::from_secs(10))
        );
        let file: FileConfig =
            toml::from_str("max_http_connections = 7\nhttp_timeout = \"2s\"\n").unwrap();
        assert_eq!(file.max_http_connections, Some(7));
        assert_eq!(file.http_timeout, Some(Duration::from_secs(2)));
        let args = ServeArgs {
            http_timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Invalid {
                name: "http_timeout",
                ..
            })
        ));
    }

    #[test]
    fn max_connections_per_ip_from_file_and_flags() {
        assert_eq!(
            Config::default().max_connections_per_ip,
            0,
            "off by default"
        );
        let file: FileConfig = toml::from_str("max_connections_per_ip = 5\n").unwrap();
        assert_eq!(file.max_connections_per_ip, Some(5));
        let args = ServeArgs {
            max_connections_per_ip: Some(3),
            ..Default::default()
        };
        assert_eq!(Config::load(&args).unwrap().max_connections_per_ip, 3);
    }

    #[test]
    fn sse_settings_from_file_and_flags_within_their_bounds() {
        let d = Config::default();
        assert_eq!(
            (
                d.sse_max_channels,
                d.sse_token_cookie.as_str(),
                d.sse_token_in_query,
                d.sse_retry
            ),
            (32, "wavecast_token", false, Duration::from_secs(2))
        );
        let file: FileConfig = toml::from_str(
            "sse_max_channels = 4\nsse_token_cookie = \"sid\"\nsse_token_in_query = true\nsse_retry = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(file.sse_max_channels, Some(4));
        assert_eq!(file.sse_retry, Some(Duration::from_secs(5)));
        let args = ServeArgs {
            sse_max_channels: Some(8),
            sse_token_in_query: Some(true),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!((c.sse_max_channels, c.sse_token_in_query), (8, true));
        assert_eq!(c.sse().max_channels, 8);
        let bad = [
            (
                ServeArgs {
                    sse_max_channels: Some(0),
                    ..Default::default()
                },
                "sse_max_channels",
            ),
            (
                ServeArgs {
                    sse_max_channels: Some(129),
                    ..Default::default()
                },
                "sse_max_channels",
            ),
            (
                ServeArgs {
                    sse_token_cookie: Some("a b".into()),
                    ..Default::default()
                },
                "sse_token_cookie",
            ),
            (
                ServeArgs {
                    sse_retry: Some(Duration::ZERO),
                    ..Default::default()
                },
                "sse_retry",
            ),
        ];
        for (args, setting) in bad {
            match Config::load(&args) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, setting),
                other => panic!("{setting}: {other:?}"),
            }
        }
    }

    #[test]
    fn log_settings_from_file_and_flags() {
        let d = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(
            (d.log_format, d.log_level.as_deref(), d.log_summary_interval),
            (LogFormat::Text, None, Duration::from_secs(10))
        );
        let file: FileConfig = toml::from_str(
            "log_format = \"json\"\nlog_level = \"wavecast=debug,info\"\nlog_summary_interval = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(file.log_format, Some(LogFormat::Json));
        assert_eq!(file.log_level.as_deref(), Some("wavecast=debug,info"));
        assert_eq!(file.log_summary_interval, Some(Duration::from_secs(60)));
        let bad = toml::from_str::<FileConfig>("log_format = \"xml\"\n").unwrap_err();
        assert!(bad.to_string().contains("`text` or `json`"), "{bad}");
        let args = ServeArgs {
            log_format: Some(LogFormat::Json),
            log_level: Some("debug".into()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(
            (c.log_format, c.log_level.as_deref()),
            (LogFormat::Json, Some("debug"))
        );
        for (args, setting, word) in [
            (
                ServeArgs {
                    log_level: Some("loud".into()),
                    ..Default::default()
                },
                "log_level",
                "neither a level",
            ),
            (
                ServeArgs {
                    log_level: Some("wavecast=loud".into()),
                    ..Default::default()
                },
                "log_level",
                "wavecast=loud",
            ),
            (
                ServeArgs {
                    log_summary_interval: Some(Duration::from_millis(10)),
                    ..Default::default()
                },
                "log_summary_interval",
                "1s",
            ),
        ] {
            match Config::load(&args) {
                Err(e @ ConfigError::Invalid { name, .. }) => {
                    assert_eq!(name, setting);
                    assert!(e.to_string().contains(word), "{e}");
                }
                other => panic!("{setting}: {other:?}"),
            }
        }
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

    #[test]
    fn outbound_settings_from_file_and_flags() {
        let d = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(d.token_jwks_url, None);
        assert_eq!(d.token_jwks_refresh, Duration::from_secs(600));
        assert_eq!(d.proxy_timeout, Duration::from_secs(1));
        assert_eq!(d.proxy_max_in_flight, 256);
        assert!(d.proxy_headers.is_empty());
        assert_eq!(d.proxies(), Proxies::default());
        let dir = std::env::temp_dir().join(format!("wavecast-config-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "token_jwks_url = \"https://id.example/jwks\"\ntoken_audience = \"me\"\n\
             token_jwks_refresh = \"1m\"\nconnect_proxy = \"http://10.0.0.1:8080/connect\"\n\
             publish_proxy = \"https://app.example/publish\"\nproxy_timeout = \"250ms\"\n\
             proxy_headers = [\"Cookie\", \"x-session\"]\nproxy_max_in_flight = 9\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            subscribe_proxy: Some("http://127.0.0.1:9/subscribe".into()),
            proxy_max_in_flight: Some(7),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(
            c.token_jwks_url.as_ref().map(Uri::to_string).as_deref(),
            Some("https://id.example/jwks")
        );
        assert!(c.tokens.jwks && c.verifier.is_some());
        assert_eq!(c.token_jwks_refresh, Duration::from_secs(60));
        assert_eq!(
            c.proxies(),
            Proxies {
                connect: true,
                refresh: false,
                subscribe: true,
                publish: true
            }
        );
        assert_eq!(
            c.proxy_url(ProxyKind::Subscribe)
                .map(Uri::to_string)
                .as_deref(),
            Some("http://127.0.0.1:9/subscribe")
        );
        assert_eq!(c.proxy_timeout, Duration::from_millis(250));
        assert_eq!(c.proxy_headers, ["cookie", "x-session"]);
        assert_eq!(c.proxy_max_in_flight, 7);
        // Authentication is configured: anonymous off, secured defaults.
        assert!(!c.allow_anonymous);
        assert_eq!(
            c.namespaces.default.allow_publish,
            NamespaceOptions::secured().allow_publish
        );
        args.proxy_max_in_flight = Some(0);
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::Invalid {
                name: "proxy_max_in_flight",
                ..
            })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_connect_proxy_counts_as_authentication_off_loopback() {
        let open = ServeArgs {
            listen: Some("0.0.0.0:0".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&open),
            Err(ConfigError::Invalid { name: "listen", .. })
        ));
        let proxied = ServeArgs {
            connect_proxy: Some("http://10.0.0.1/connect".into()),
            ..open.clone()
        };
        let c = Config::load(&proxied).unwrap();
        assert!(c.authenticates() && !c.allow_anonymous && c.verifier.is_none());
        // Other proxies are not authentication.
        let subscribe_only = ServeArgs {
            subscribe_proxy: Some("http://10.0.0.1/subscribe".into()),
            ..open
        };
        assert!(Config::load(&subscribe_only).is_err());
        let no_anonymous = ServeArgs {
            allow_anonymous: Some(false),
            connect_proxy: Some("http://127.0.0.1:1/connect".into()),
            ..Default::default()
        };
        assert!(Config::load(&no_anonymous).is_ok());
    }

    #[test]
    fn jwks_url_rules() {
        let jwks = |url: &str, audience: Option<&str>| {
            Config::load(&ServeArgs {
                token_jwks_url: Some(url.into()),
                token_audience: audience.map(str::to_owned),
                ..Default::default()
            })
        };
        let refused = |r: Result<Config, ConfigError>, word: &str| match r {
            Err(
                e @ ConfigError::Invalid {
                    name: "token_jwks_url",
                    ..
                },
            ) => assert!(e.to_string().contains(word), "{e}"),
            other => panic!("{other:?}"),
        };
        refused(jwks("https://id.example/jwks", None), "token_audience");
        refused(jwks("http://id.example/jwks", Some("me")), "https");
        refused(jwks("http://10.0.0.1/jwks", Some("me")), "loopback");
        refused(jwks("http://127.0.0.1.example/jwks", Some("me")), "https");
        refused(jwks("ftp://127.0.0.1/jwks", Some("me")), "http");
        refused(jwks("jwks.json", Some("me")), "http");
        for ok in [
            "https://id.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://[::1]:8080/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert!(jwks(ok, Some("me")).is_ok(), "{ok}");
        }
    }

    #[test]
    fn proxy_urls_and_headers_are_checked() {
        for (args, name) in [
            (
                ServeArgs {
                    connect_proxy: Some("ftp://127.0.0.1/c".into()),
                    ..Default::default()
                },
                "connect_proxy",
            ),
            (
                ServeArgs {
                    refresh_proxy: Some("http:///nohost".into()),
                    ..Default::default()
                },
                "refresh_proxy",
            ),
            (
                ServeArgs {
                    publish_proxy: Some("not a url".into()),
                    ..Default::default()
                },
                "publish_proxy",
            ),
            (
                ServeArgs {
                    proxy_headers: Some(vec!["cookie".into(), "Host".into()]),
                    ..Default::default()
                },
                "proxy_headers",
            ),
            (
                ServeArgs {
                    proxy_headers: Some(vec!["bad header".into()]),
                    ..Default::default()
                },
                "proxy_headers",
            ),
            (
                ServeArgs {
                    proxy_timeout: Some(Duration::ZERO),
                    ..Default::default()
                },
                "proxy_timeout",
            ),
        ] {
            assert!(
                matches!(Config::load(&args), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{name}: {:?}",
                Config::load(&args)
            );
        }
    }

    #[test]
    fn history_budget_from_file_and_flags() {
        let d = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(d.max_history_channels, 10_000);
        assert_eq!(d.max_history_bytes, 256 * 1024 * 1024);
        let dir = std::env::temp_dir().join(format!("wavecast-config-hist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "max_history_channels = 50\nmax_history_bytes = 1048576\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            max_history_bytes: Some(2 << 20),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!((c.max_history_channels, c.max_history_bytes), (50, 2 << 20));
        for (channels, bytes, name) in [
            (0, 2 << 20, "max_history_channels"),
            (50, 1000, "max_history_bytes"),
            (50, usize::MAX, "max_history_bytes"),
        ] {
            args.max_history_channels = Some(channels);
            args.max_history_bytes = Some(bytes);
            assert!(
                matches!(Config::load(&args), Err(ConfigError::Invalid { name: n, .. }) if n == name),
                "{channels} {bytes}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
