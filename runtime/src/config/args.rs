//! The flags of `wavecast serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::listen::parse_listen;
use super::size::parse_size;
use super::LogFormat;

/// Flags of `wavecast serve`; each also reads `WAVECAST_<NAME>`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are these flags in snake case.
    #[arg(long, env = "WAVECAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, ADDRESS:PORT or HOST:PORT (`localhost` is 127.0.0.1; a name must resolve to exactly one address) [default: 127.0.0.1:8000]; port 0 picks a free one.
    #[arg(long, env = "WAVECAST_LISTEN", value_parser = parse_listen)]
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
    /// Largest message accepted from a client: bytes, or a size like 64KiB [default: 64KiB].
    #[arg(long, env = "WAVECAST_MAX_MESSAGE_SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,
    /// Bytes that may wait for a slow client before it is disconnected (a size like 1MiB) [default: 1MiB].
    #[arg(long, env = "WAVECAST_MAX_QUEUED_BYTES", value_parser = parse_size)]
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
    /// Most bytes of history kept, server-wide (payloads plus 128 bytes each; a size like 256MiB); beyond it the oldest history is evicted [default: 256MiB].
    #[arg(long, env = "WAVECAST_MAX_HISTORY_BYTES", value_parser = parse_size)]
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
    /// Serve the status page `GET /status` (off by default; behind HTTP Basic auth with the API key or `--status-password`).
    #[arg(long, env = "WAVECAST_STATUS", num_args = 0..=1, default_missing_value = "true")]
    pub status: Option<bool>,
    /// Password of the status page (any user name); without one the API key is the password.
    #[arg(long, env = "WAVECAST_STATUS_PASSWORD", hide_env_values = true)]
    pub status_password: Option<String>,
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
    /// Longest token accepted: bytes, or a size like 8KiB [default: 8KiB].
    #[arg(long, env = "WAVECAST_TOKEN_MAX_SIZE", value_parser = parse_size)]
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
    /// WebSocket pings per second one connection may send (bursts of twice that); the ones over it get no pong, and close 4504 (1008 on /echo) if it persists 5s; 0: no limit [default: 10].
    #[arg(long, env = "WAVECAST_CLIENT_PING_RATE")]
    pub client_ping_rate: Option<u32>,
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
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it, always without context takeover; publications at or over the threshold are compressed once per encoding [default: false].
    #[arg(long, env = "WAVECAST_COMPRESSION", num_args = 0..=1, default_missing_value = "true")]
    pub compression: Option<bool>,
    /// zlib level of permessage-deflate, 0 (store) to 9 (smallest) [default: 1].
    #[arg(long, env = "WAVECAST_COMPRESSION_LEVEL")]
    pub compression_level: Option<u32>,
    /// Publications shorter than this (encoded, a size like 1KiB) go uncompressed even to clients that negotiated compression [default: 1KiB].
    #[arg(long, env = "WAVECAST_COMPRESSION_THRESHOLD", value_parser = parse_size)]
    pub compression_threshold: Option<usize>,
    /// TLS on the port: the PEM certificate chain (leaf first); needs --tls-key; re-read on SIGHUP [default: none, plain TCP].
    #[arg(long, env = "WAVECAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); re-read on SIGHUP [default: none].
    #[arg(long, env = "WAVECAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Time a client has to complete its TLS handshake; then the connection is closed [default: 5s].
    #[arg(long, env = "WAVECAST_TLS_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    pub tls_handshake_timeout: Option<Duration>,
    /// Most TLS handshakes in progress per shard; a connection beyond it is closed at once [default: 256].
    #[arg(long, env = "WAVECAST_TLS_MAX_HANDSHAKES")]
    pub tls_max_handshakes: Option<usize>,
    /// Serve anonymous clients on a non-loopback address without any authentication (flag only).
    #[arg(long)]
    pub insecure: bool,
}

/// Parses a human duration (`200ms`, `25s`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}
