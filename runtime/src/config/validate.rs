//! The rules every resolved configuration obeys, and URL settings.

use std::time::Duration;

use hyper::Uri;

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.tls_handshake_timeout.is_zero() {
            return invalid("tls_handshake_timeout", "must be more than zero");
        }
        if self.tls_max_handshakes == 0 || self.tls_max_handshakes > 1_000_000 {
            return invalid("tls_max_handshakes", "must be between 1 and 1000000");
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
        // The status page shows every server's clients and users: it is
        // never served open, so turning it on without a credential is a
        // mistake to name at startup (and a reload that did so is refused).
        if self.status && self.status_password.is_none() && self.api_key.is_none() {
            return invalid(
                "status",
                "the status page needs a credential: set status_password or api_key",
            );
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
            ("client_ping_rate", self.client_ping_rate),
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
        if self.compression_level > 9 {
            return invalid("compression_level", "must be between 0 and 9");
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
pub(super) fn parse_url(name: &'static str, value: &str) -> Result<Uri, ConfigError> {
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
