//! The lines the server logs once it listens (at info): where it listens,
//! the URL clients connect to, whether the HTTP API and the status page
//! are on, how connections authenticate and which requests the server
//! makes outside, the config file read, the backbone, and the log's own
//! settings. One line each, with the values also as fields (JSON log
//! shippers index them). Secrets never appear: the Redis URL's password
//! is replaced by `***`, keys and the API key are not shown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Config, LogFormat};

/// Logs the startup lines for a server listening on `addr` with
/// `workers` shards.
pub fn log_startup(c: &Config, addr: SocketAddr, workers: usize) {
    tracing::info!(%addr, workers, "listening on {addr} ({workers} shards)");
    let (mut ws, mut sse) = urls(addr);
    if let Some(tls) = &c.tls {
        ws = ws.replacen("ws://", "wss://", 1);
        sse = sse.replacen("http://", "https://", 1);
        tracing::info!(
            tls = true,
            cert = %tls.cert.display(),
            "TLS: on, certificate {} (TLS 1.2 and 1.3; re-read on SIGHUP)",
            tls.cert.display()
        );
    }
    let note = if addr.ip().is_unspecified() {
        " (listening on every interface: use this host's address)"
    } else {
        ""
    };
    tracing::info!(url = %ws, sse = %sse, "WebSocket URL: {ws}{note}; Server-Sent Events: {sse}");
    let api = c.api_key.is_some();
    let status = if !c.status {
        "off"
    } else if c.status_password.is_some() {
        "on (/status, HTTP Basic with status_password)"
    } else {
        "on (/status, HTTP Basic with the API key as password)"
    };
    tracing::info!(
        api,
        status_page = c.status,
        "HTTP API: {}; status page: {status}",
        if api {
            "on (/api/*, header Authorization: apikey KEY)"
        } else {
            "off (no api_key: /api/* answers 403)"
        }
    );
    log_authentication(c);
    match &c.config_file {
        Some(path) => tracing::info!(config = %path.display(), "config file: {}", path.display()),
        None => tracing::info!("config file: none (defaults, WAVECAST_* variables and flags)"),
    }
    match &c.redis {
        Some(url) => {
            let url = redact_url(url);
            tracing::info!(
                backbone = "redis",
                redis = %url,
                "backbone: redis at {url} (cluster; presence lease {})",
                humantime::format_duration(c.redis_presence_ttl)
            );
        }
        None => tracing::info!(
            backbone = "memory",
            "backbone: memory (this server only; history of at most {} channels, {} bytes)",
            c.max_history_channels,
            c.max_history_bytes
        ),
    }
    let format = match c.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let level = super::effective_level(
        c.log_level.as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    tracing::info!(
        format,
        level = %level,
        "log: {format}, level {level}; slow-consumer and heartbeat closes summed up every {}",
        humantime::format_duration(c.log_summary_interval)
    );
}

/// The WebSocket and SSE URLs of a server on `addr`. On an unspecified
/// address (every interface) the loopback one of its family stands in:
/// `ws://0.0.0.0:8000/ws` is not an address to connect to.
pub fn urls(addr: SocketAddr) -> (String, String) {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let host = SocketAddr::new(ip, addr.port());
    (format!("ws://{host}/ws"), format!("http://{host}/sse"))
}

/// The authentication mode: how connections authenticate (each way
/// configured), whether anonymous ones are allowed, and which requests
/// the server makes outside (JWKS, proxies).
fn log_authentication(c: &Config) {
    let mut ways: Vec<String> = Vec::new();
    if c.tokens.hmac_secret.is_some() {
        ways.push("HMAC tokens (HS256/384/512)".into());
    }
    if c.tokens.public_key_pem.is_some() {
        ways.push("public-key tokens (RSA, EC, Ed25519)".into());
    }
    if let Some(url) = &c.token_jwks_url {
        ways.push(format!("tokens signed by the keys of {url}"));
    }
    if let Some(url) = &c.connect_proxy {
        ways.push(format!("connect proxy {url}"));
    }
    let mode: Vec<&str> = [
        (c.tokens.hmac_secret.is_some(), "hmac"),
        (c.tokens.public_key_pem.is_some(), "public_key"),
        (c.token_jwks_url.is_some(), "jwks"),
        (c.connect_proxy.is_some(), "connect_proxy"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if ways.is_empty() {
        tracing::warn!(
            auth = "none",
            "authentication: none (no token key, no connect proxy); every client is anonymous and may use every channel"
        );
        return;
    }
    let auth = mode.join("+");
    let ways = ways.join(" or ");
    if c.allow_anonymous {
        tracing::info!(%auth, anonymous = true, "authentication: {ways}; anonymous connections allowed");
    } else {
        tracing::info!(%auth, anonymous = false, "authentication: {ways}, required");
    }
    let p = c.proxies();
    let on: Vec<&str> = [
        (p.connect, "connect"),
        (p.refresh, "refresh"),
        (p.subscribe, "subscribe"),
        (p.publish, "publish"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let jwks = match &c.token_jwks_url {
        Some(url) => format!(
            "token keys from {url} (every {})",
            humantime::format_duration(c.token_jwks_refresh)
        ),
        None => "no JWKS".to_owned(),
    };
    let proxies = if on.is_empty() {
        "no backend proxies".to_owned()
    } else {
        format!(
            "backend proxies: {} (timeout {}, at most {} in flight, forwarding headers: {})",
            on.join(", "),
            humantime::format_duration(c.proxy_timeout),
            c.proxy_max_in_flight,
            if c.proxy_headers.is_empty() {
                "none".to_owned()
            } else {
                c.proxy_headers.join(", ")
            }
        )
    };
    if c.token_jwks_url.is_some() || !on.is_empty() {
        tracing::info!("outbound: {jwks}; {proxies}");
    }
}

/// A Redis URL fit for a log: the user-info's password (or the whole
/// user-info when it has no `:`, since `redis://SECRET@host` is read as a
/// password by some clients) and any `password=`/`pass=` query value are
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_redacted() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://10.0.0.1:6379/2", "redis://10.0.0.1:6379/2"),
            (
                "redis://:hunter2@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            (
                "rediss://app:hunter2@redis.example:6380",
                "rediss://app:***@redis.example:6380",
            ),
            ("redis://hunter2@10.0.0.1", "redis://***@10.0.0.1"),
            ("redis://a:b@c@10.0.0.1", "redis://a:***@10.0.0.1"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis://10.0.0.1/?password=hunter2",
                "redis://10.0.0.1/?password=***",
            ),
            ("hunter2", "***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter2"));
        }
    }

    #[test]
    fn urls_name_a_connectable_host() {
        let (ws, sse) = urls("127.0.0.1:8000".parse().unwrap());
        assert_eq!(ws, "ws://127.0.0.1:8000/ws");
        assert_eq!(sse, "http://127.0.0.1:8000/sse");
        assert_eq!(
            urls("0.0.0.0:80".parse().unwrap()).0,
            "ws://127.0.0.1:80/ws"
        );
        assert_eq!(urls("[::]:8000".parse().unwrap()).0, "ws://[::1]:8000/ws");
        assert_eq!(
            urls("[2001:db8::1]:8000".parse().unwrap()).0,
            "ws://[2001:db8::1]:8000/ws"
        );
    }
}
