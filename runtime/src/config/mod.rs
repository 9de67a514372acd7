//! Configuration: defaults, then a TOML file, then `WAVECAST_*` environment
//! variables, then flags, each overriding the one before.
//!
//! Every setting is a flag of `wavecast serve` (clap, which also reads the
//! environment variable of the same name) and a key of the TOML file with
//! the flag's name in snake case. Durations are human (`200ms`, `25s`).
//!
//! Files: `args.rs` (the flags), `file.rs` (the TOML file), `size.rs`
//! (byte sizes with units), `listen.rs` (the listen address, by address or
//! host name), `validate.rs` (the rules every resolved configuration
//! obeys), `reload.rs` (what SIGHUP may change live), `genconfig.rs` (the
//! commented file `wavecast genconfig` prints), and this file: the
//! resolved [`Config`] and [`Config::load`].

mod args;
mod file;
mod genconfig;
mod listen;
mod reload;
mod size;
mod tls;
mod validate;

#[cfg(test)]
mod tests;

pub use args::{parse_duration, ServeArgs};
pub use file::{FileConfig, NamespaceFile};
pub use genconfig::genconfig;
pub use listen::parse_listen;
pub use reload::{Reload, LIVE, RESTART};
pub use size::{parse_size, SizeError};
pub use tls::Tls;
pub use validate::parse_log_level;

use file::read_file;
use validate::parse_url;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;
use wavecast_core::auth::{
    AuthConfig, TokenConfig, Verifier, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEEWAY,
    DEFAULT_MAX_TOKEN_SIZE, DEFAULT_REFRESH_GRACE,
};
use wavecast_core::hub::HistoryBudget;
use wavecast_core::namespace::{NamespaceOptions, Namespaces};
use wavecast_core::proxy::{Proxies, ProxyKind};

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
    /// Serve the status page (`/status`, `/status/data`).
    pub status: bool,
    /// The status page's password; `None`: the API key is its password.
    pub status_password: Option<String>,
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
    /// WebSocket pings per second per connection (0: no limit).
    pub client_ping_rate: u32,
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
    /// `tls_cert` and `tls_key`, loaded; `None`: plain TCP.
    pub tls: Option<Tls>,
    /// Time a client has for its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes in progress per shard (more are closed at once).
    pub tls_max_handshakes: usize,
    /// The config file read, if any (for the startup lines).
    pub config_file: Option<PathBuf>,
    /// permessage-deflate offered to clients.
    pub compression: bool,
    /// Its zlib level.
    pub compression_level: u32,
    /// Publications shorter than this go uncompressed.
    pub compression_threshold: usize,
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
            status: false,
            status_password: None,
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
            // A browser or client library pings every few seconds at most.
            client_ping_rate: 10,
            max_subscriptions: wavecast_core::node::MAX_SUBSCRIPTIONS,
            sse_max_channels: wavecast_core::sse::MAX_CHANNELS,
            sse_token_cookie: wavecast_core::sse::TOKEN_COOKIE.to_owned(),
            sse_token_in_query: false,
            sse_retry: Duration::from_secs(2),
            log_format: LogFormat::Text,
            log_level: None,
            log_summary_interval: Duration::from_secs(10),
            tls: None,
            tls_handshake_timeout: Duration::from_secs(5),
            tls_max_handshakes: 256,
            config_file: None,
            compression: false,
            compression_level: wavecast_core::deflate::DEFAULT_LEVEL,
            compression_threshold: wavecast_core::deflate::DEFAULT_THRESHOLD,
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
        let verifier = build_verifier(&tokens)?;
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
            status: args.status.or(file.status).unwrap_or(d.status),
            status_password: args
                .status_password
                .clone()
                .or(file.status_password)
                .filter(|p| !p.is_empty()),
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
            client_ping_rate: args
                .client_ping_rate
                .or(file.client_ping_rate)
                .unwrap_or(d.client_ping_rate),
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
            tls: Tls::resolve(
                args.tls_cert.as_deref().or(file.tls_cert.as_deref()),
                args.tls_key.as_deref().or(file.tls_key.as_deref()),
            )?,
            tls_handshake_timeout: args
                .tls_handshake_timeout
                .or(file.tls_handshake_timeout)
                .unwrap_or(d.tls_handshake_timeout),
            tls_max_handshakes: args
                .tls_max_handshakes
                .or(file.tls_max_handshakes)
                .unwrap_or(d.tls_max_handshakes),
            config_file: args.config.clone(),
            compression: args
                .compression
                .or(file.compression)
                .unwrap_or(d.compression),
            compression_level: args
                .compression_level
                .or(file.compression_level)
                .unwrap_or(d.compression_level),
            compression_threshold: args
                .compression_threshold
                .or(file.compression_threshold)
                .unwrap_or(d.compression_threshold),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The verifier of `tokens`' keys, if it has any.
fn build_verifier(tokens: &TokenConfig) -> Result<Option<Verifier>, ConfigError> {
    if !tokens.has_key() {
        return Ok(None);
    }
    Verifier::new(tokens.clone())
        .map(Some)
        .map_err(|e| ConfigError::Invalid {
            name: if tokens.public_key_pem.is_some() {
                "token_public_key"
            } else {
                "token_hmac_secret"
            },
            reason: e.to_string(),
        })
}
