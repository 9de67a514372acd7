//! What a reload (SIGHUP) may change while the server runs.
//!
//! [`Config::reload`] loads the configuration again exactly as at start
//! (the same flags and environment over the file, the same validation),
//! compares it with the running one setting by setting, and builds the
//! configuration to apply: the new values of the settings in [`LIVE`], the
//! running values of those in [`RESTART`] (the listen address, the
//! workers, the backbone, the outbound client...), which it names as
//! needing a restart. The result is validated once more as a whole, so a
//! mix of new and running values is never applied unless it is a
//! configuration the server would start with. Nothing is applied on an
//! error: the caller keeps the running configuration.

use super::{build_verifier, Config, ConfigError, ServeArgs};

/// Settings a reload applies to the running server. Existing connections
/// keep what they were admitted with (their subscriptions, their
/// authentication, their message and queue sizes); what they send next is
/// judged by the new rules (permissions, rates, subscription limit), and
/// new connections get all of the new values.
pub const LIVE: &[&str] = &[
    "api_key",
    // Read by every request to `/status`: turning the page on or off, or
    // changing its password, takes effect at the next request.
    "status",
    "status_password",
    "max_connections",
    "max_connections_per_ip",
    "max_http_connections",
    "http_timeout",
    "max_message_size",
    "max_queued_bytes",
    "max_requests_in_flight",
    "allowed_origins",
    "namespaces",
    "token_hmac_secret",
    "token_public_key",
    "token_audience",
    "token_issuer",
    "token_allow_no_exp",
    "token_leeway",
    "token_max_size",
    "allow_anonymous",
    "connect_timeout",
    "refresh_grace",
    "client_command_rate",
    "client_publish_rate",
    "client_ping_rate",
    "max_subscriptions",
    "sse_max_channels",
    "sse_token_cookie",
    "sse_token_in_query",
    "sse_retry",
    "log_level",
    "compression",
    "compression_level",
    "compression_threshold",
    "tls_cert",
    "tls_key",
    "tls_handshake_timeout",
    "tls_max_handshakes",
];

/// Settings a reload reports as needing a restart, and keeps at their
/// running values.
pub const RESTART: &[&str] = &[
    "listen",
    "workers",
    "echo",
    "redis",
    "redis_presence_ttl",
    "backbone_queue",
    "max_history_channels",
    "max_history_bytes",
    "heartbeat_interval",
    "heartbeat_timeout",
    "token_jwks_url",
    "token_jwks_refresh",
    "connect_proxy",
    "refresh_proxy",
    "subscribe_proxy",
    "publish_proxy",
    "proxy_timeout",
    "proxy_headers",
    "proxy_max_in_flight",
    "log_format",
    "log_summary_interval",
];

/// A reloaded configuration, ready to apply.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration to run with from now on: the new values of the
    /// live settings, the running values of the others.
    pub config: Config,
    /// The live settings whose values changed (applied).
    pub changed: Vec<&'static str>,
    /// The settings that changed in the file (or environment) but need a
    /// restart to take effect (not applied).
    pub needs_restart: Vec<&'static str>,
}

impl Config {
    /// Loads the configuration again with `args` (the ones the server
    /// started with) and works out what of it applies to a server running
    /// with `self`. An error (the file's or the mix's) applies nothing.
    pub fn reload(&self, args: &ServeArgs) -> Result<Reload, ConfigError> {
        let new = Config::load(args)?;
        let mut changed = Vec::new();
        let mut needs_restart = Vec::new();
        for name in differences(self, &new) {
            // Turning the per-address limit on or off changes whether
            // shards keep connections' addresses at all: a restart. Between
            // two limits it applies live.
            let restart = RESTART.contains(&name)
                || (name == "max_connections_per_ip"
                    && (self.max_connections_per_ip == 0) != (new.max_connections_per_ip == 0))
                // A new certificate applies live; turning TLS on or off
                // changes the port's scheme under its clients: a restart.
                || (matches!(name, "tls_cert" | "tls_key")
                    && self.tls.is_some() != new.tls.is_some());
            if restart {
                needs_restart.push(name);
            } else {
                changed.push(name);
            }
        }
        let mut config = new.clone();
        config.keep_restart_settings(self, &needs_restart)?;
        // The namespaces' defaults and `allow_anonymous` follow whether
        // anything authenticates; a restart-only setting (a connect proxy,
        // a JWKS URL) that would change that cannot leave them half done.
        if config.authenticates() != new.authenticates() {
            return Err(ConfigError::Invalid {
                name: if needs_restart.contains(&"connect_proxy") {
                    "connect_proxy"
                } else {
                    "token_jwks_url"
                },
                reason: "this change turns authentication on or off, which needs a restart \
                         (nothing was applied)"
                    .into(),
            });
        }
        config.validate()?;
        Ok(Reload {
            config,
            changed,
            needs_restart,
        })
    }

    /// Puts back the running values (`running`'s) of the settings named in
    /// `names`.
    fn keep_restart_settings(
        &mut self,
        running: &Config,
        names: &[&'static str],
    ) -> Result<(), ConfigError> {
        let r = running;
        for name in names {
            match *name {
                "listen" => self.listen = r.listen,
                "workers" => self.workers = r.workers,
                "echo" => self.echo = r.echo,
                "redis" => self.redis = r.redis.clone(),
                "redis_presence_ttl" => self.redis_presence_ttl = r.redis_presence_ttl,
                "backbone_queue" => self.backbone_queue = r.backbone_queue,
                "max_history_channels" => self.max_history_channels = r.max_history_channels,
                "max_history_bytes" => self.max_history_bytes = r.max_history_bytes,
                "heartbeat_interval" => self.heartbeat_interval = r.heartbeat_interval,
                "heartbeat_timeout" => self.heartbeat_timeout = r.heartbeat_timeout,
                "token_jwks_url" => self.token_jwks_url = r.token_jwks_url.clone(),
                "token_jwks_refresh" => self.token_jwks_refresh = r.token_jwks_refresh,
                "connect_proxy" => self.connect_proxy = r.connect_proxy.clone(),
                "refresh_proxy" => self.refresh_proxy = r.refresh_proxy.clone(),
                "subscribe_proxy" => self.subscribe_proxy = r.subscribe_proxy.clone(),
                "publish_proxy" => self.publish_proxy = r.publish_proxy.clone(),
                "proxy_timeout" => self.proxy_timeout = r.proxy_timeout,
                "proxy_headers" => self.proxy_headers = r.proxy_headers.clone(),
                "proxy_max_in_flight" => self.proxy_max_in_flight = r.proxy_max_in_flight,
                "log_format" => self.log_format = r.log_format,
                "log_summary_interval" => self.log_summary_interval = r.log_summary_interval,
                "max_connections_per_ip" => self.max_connections_per_ip = r.max_connections_per_ip,
                "tls_cert" | "tls_key" => self.tls = r.tls.clone(),
                other => unreachable!("{other} is not a restart setting"),
            }
        }
        if names.contains(&"token_jwks_url") {
            // The key set is the running fetcher's: the verifier expects
            // one exactly when the running server fetches one.
            self.tokens.jwks = self.token_jwks_url.is_some();
            self.verifier = build_verifier(&self.tokens)?;
        }
        Ok(())
    }
}

/// The settings whose values differ between `a` and `b`, by name (the
/// flags' names; `namespaces` stands for `[channels]` and every
/// `[namespaces.NAME]`).
pub fn differences(a: &Config, b: &Config) -> Vec<&'static str> {
    comparisons(a, b)
        .into_iter()
        .filter_map(|(name, same)| (!same).then_some(name))
        .collect()
}

/// Every setting by name, and whether `a` and `b` agree on it.
fn comparisons(a: &Config, b: &Config) -> Vec<(&'static str, bool)> {
    let (ta, tb) = (&a.tokens, &b.tokens);
    vec![
        ("listen", a.listen == b.listen),
        (
            "heartbeat_interval",
            a.heartbeat_interval == b.heartbeat_interval,
        ),
        (
            "heartbeat_timeout",
            a.heartbeat_timeout == b.heartbeat_timeout,
        ),
        ("max_connections", a.max_connections == b.max_connections),
        (
            "max_connections_per_ip",
            a.max_connections_per_ip == b.max_connections_per_ip,
        ),
        (
            "max_http_connections",
            a.max_http_connections == b.max_http_connections,
        ),
        ("http_timeout", a.http_timeout == b.http_timeout),
        ("max_message_size", a.max_message_size == b.max_message_size),
        ("max_queued_bytes", a.max_queued_bytes == b.max_queued_bytes),
        (
            "max_requests_in_flight",
            a.max_requests_in_flight == b.max_requests_in_flight,
        ),
        ("backbone_queue", a.backbone_queue == b.backbone_queue),
        (
            "max_history_channels",
            a.max_history_channels == b.max_history_channels,
        ),
        (
            "max_history_bytes",
            a.max_history_bytes == b.max_history_bytes,
        ),
        ("echo", a.echo == b.echo),
        ("workers", a.workers == b.workers),
        ("allowed_origins", a.allowed_origins == b.allowed_origins),
        ("api_key", a.api_key == b.api_key),
        ("status", a.status == b.status),
        ("status_password", a.status_password == b.status_password),
        ("redis", a.redis == b.redis),
        (
            "redis_presence_ttl",
            a.redis_presence_ttl == b.redis_presence_ttl,
        ),
        ("namespaces", a.namespaces == b.namespaces),
        ("token_hmac_secret", ta.hmac_secret == tb.hmac_secret),
        ("token_public_key", ta.public_key_pem == tb.public_key_pem),
        ("token_audience", ta.audience == tb.audience),
        ("token_issuer", ta.issuer == tb.issuer),
        ("token_allow_no_exp", ta.allow_no_exp == tb.allow_no_exp),
        ("token_leeway", ta.leeway == tb.leeway),
        ("token_max_size", ta.max_size == tb.max_size),
        ("token_jwks_url", a.token_jwks_url == b.token_jwks_url),
        (
            "token_jwks_refresh",
            a.token_jwks_refresh == b.token_jwks_refresh,
        ),
        ("connect_proxy", a.connect_proxy == b.connect_proxy),
        ("refresh_proxy", a.refresh_proxy == b.refresh_proxy),
        ("subscribe_proxy", a.subscribe_proxy == b.subscribe_proxy),
        ("publish_proxy", a.publish_proxy == b.publish_proxy),
        ("proxy_timeout", a.proxy_timeout == b.proxy_timeout),
        ("proxy_headers", a.proxy_headers == b.proxy_headers),
        (
            "proxy_max_in_flight",
            a.proxy_max_in_flight == b.proxy_max_in_flight,
        ),
        ("allow_anonymous", a.allow_anonymous == b.allow_anonymous),
        ("connect_timeout", a.connect_timeout == b.connect_timeout),
        ("refresh_grace", a.refresh_grace == b.refresh_grace),
        (
            "client_command_rate",
            a.client_command_rate == b.client_command_rate,
        ),
        (
            "client_publish_rate",
            a.client_publish_rate == b.client_publish_rate,
        ),
        ("client_ping_rate", a.client_ping_rate == b.client_ping_rate),
        (
            "max_subscriptions",
            a.max_subscriptions == b.max_subscriptions,
        ),
        ("sse_max_channels", a.sse_max_channels == b.sse_max_channels),
        ("sse_token_cookie", a.sse_token_cookie == b.sse_token_cookie),
        (
            "sse_token_in_query",
            a.sse_token_in_query == b.sse_token_in_query,
        ),
        ("sse_retry", a.sse_retry == b.sse_retry),
        ("log_level", a.log_level == b.log_level),
        ("log_format", a.log_format == b.log_format),
        (
            "log_summary_interval",
            a.log_summary_interval == b.log_summary_interval,
        ),
        ("compression", a.compression == b.compression),
        (
            "compression_level",
            a.compression_level == b.compression_level,
        ),
        (
            "compression_threshold",
            a.compression_threshold == b.compression_threshold,
        ),
        (
            "tls_cert",
            match (&a.tls, &b.tls) {
                (Some(x), Some(y)) => !x.cert_differs(y),
                (x, y) => x.is_none() && y.is_none(),
            },
        ),
        (
            "tls_key",
            match (&a.tls, &b.tls) {
                (Some(x), Some(y)) => !x.key_differs(y),
                (x, y) => x.is_none() && y.is_none(),
            },
        ),
        (
            "tls_handshake_timeout",
            a.tls_handshake_timeout == b.tls_handshake_timeout,
        ),
        (
            "tls_max_handshakes",
            a.tls_max_handshakes == b.tls_max_handshakes,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;
    use wavecast_core::namespace::Permission;

    struct File(PathBuf);

    impl File {
        fn new(tag: &str, text: &str) -> File {
            let dir =
                std::env::temp_dir().join(format!("wavecast-reload-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let f = File(dir.join("w.toml"));
            f.write(text);
            f
        }
        fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }
        fn args(&self) -> ServeArgs {
            ServeArgs {
                config: Some(self.0.clone()),
                ..Default::default()
            }
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn every_setting_is_either_live_or_needs_a_restart() {
        let mut names: Vec<String> = super::super::genconfig::settings()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.push("namespaces".into());
        for n in &names {
            let live = LIVE.contains(&n.as_str());
            let restart = RESTART.contains(&n.as_str());
            assert!(live != restart, "{n}: live {live}, restart {restart}");
        }
        assert_eq!(LIVE.len() + RESTART.len(), names.len());
        // And every one of them is compared, once.
        let d = Config::default();
        let mut compared: Vec<&str> = comparisons(&d, &d).into_iter().map(|(n, _)| n).collect();
        compared.sort_unstable();
        let mut all: Vec<&str> = LIVE.iter().chain(RESTART).copied().collect();
        all.sort_unstable();
        assert_eq!(compared, all);
    }

    #[test]
    fn live_settings_apply_and_restart_ones_keep_their_running_value() {
        let f = File::new(
            "mix",
            "api_key = \"a\"\nmax_connections = 10\n[channels]\nallow_publish = \"anonymous\"\n",
        );
        let args = f.args();
        let running = Config::load(&args).unwrap();
        f.write(
            "api_key = \"b\"\nmax_connections = 5\nlisten = \"127.0.0.1:9999\"\n\
             max_message_size = \"1MiB\"\nredis = \"redis://127.0.0.1:1\"\n\
             [channels]\nallow_publish = \"none\"\n",
        );
        let r = running.reload(&args).unwrap();
        assert_eq!(
            r.changed,
            [
                "max_connections",
                "max_message_size",
                "api_key",
                "namespaces"
            ]
        );
        assert_eq!(r.needs_restart, ["listen", "redis"]);
        assert_eq!(r.config.api_key.as_deref(), Some("b"));
        assert_eq!(r.config.max_connections, 5);
        assert_eq!(r.config.max_message_size, 1 << 20);
        assert_eq!(r.config.namespaces.default.allow_publish, Permission::None);
        assert_eq!(r.config.listen, running.listen);
        assert_eq!(r.config.redis, None);
    }

    #[test]
    fn the_ping_rate_is_live() {
        let f = File::new("ping", "client_ping_rate = 10\n");
        let running = Config::load(&f.args()).unwrap();
        f.write("client_ping_rate = 2\n");
        let r = running.reload(&f.args()).unwrap();
        assert_eq!(r.changed, ["client_ping_rate"]);
        assert!(r.needs_restart.is_empty());
        assert_eq!(r.config.client_ping_rate, 2);
    }

    #[test]
    fn flags_still_override_the_reloaded_file() {
        let f = File::new("flags", "max_connections = 10\nhttp_timeout = \"3s\"\n");
        let args = ServeArgs {
            max_connections: Some(7),
            ..f.args()
        };
        let running = Config::load(&args).unwrap();
        f.write("max_connections = 20\nhttp_timeout = \"4s\"\n");
        let r = running.reload(&args).unwrap();
        assert_eq!(r.config.max_connections, 7);
        assert_eq!(r.config.http_timeout, Duration::from_secs(4));
        assert_eq!(r.changed, ["http_timeout"]);
    }

    #[test]
    fn a_bad_file_or_mix_is_refused_whole() {
        let f = File::new("bad", "max_connections = 10\n");
        let args = f.args();
        let running = Config::load(&args).unwrap();
        f.write("max_connections = 5\nmax_subscriptions = 0\n");
        assert!(matches!(
            running.reload(&args),
            Err(ConfigError::Invalid {
                name: "max_subscriptions",
                ..
            })
        ));
        f.write("max_connections = 5\nmax_conections = 3\n");
        let e = running.reload(&args).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        assert!(e.to_string().contains("max_conections"), "{e}");
        // The file alone is valid, but with the running listen address (a
        // network one, which needs authentication) it is not.
        let f = File::new(
            "mix-bad",
            "listen = \"0.0.0.0:0\"\ntoken_hmac_secret = \"s\"\n",
        );
        let args = f.args();
        let running = Config::load(&args).unwrap();
        f.write("listen = \"127.0.0.1:0\"\n");
        match running.reload(&args) {
            Err(ConfigError::Invalid { name: "listen", .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn turning_authentication_on_through_a_restart_setting_is_refused() {
        let f = File::new("auth", "max_connections = 10\n");
        let args = f.args();
        let running = Config::load(&args).unwrap();
        f.write("connect_proxy = \"http://127.0.0.1:1/connect\"\n");
        match running.reload(&args) {
            Err(
                e @ ConfigError::Invalid {
                    name: "connect_proxy",
                    ..
                },
            ) => assert!(e.to_string().contains("restart"), "{e}"),
            other => panic!("{other:?}"),
        }
        // A token key turns it on live.
        f.write("token_hmac_secret = \"s\"\n");
        let r = running.reload(&args).unwrap();
        assert!(r.config.verifier.is_some() && !r.config.allow_anonymous);
        assert!(r.changed.contains(&"token_hmac_secret"));
    }

    #[test]
    fn the_per_address_limit_changes_live_but_is_not_switched_on_or_off() {
        let f = File::new("perip", "max_connections_per_ip = 4\n");
        let args = f.args();
        let running = Config::load(&args).unwrap();
        f.write("max_connections_per_ip = 2\n");
        let r = running.reload(&args).unwrap();
        assert_eq!(
            (r.changed.as_slice(), r.config.max_connections_per_ip),
            (&["max_connections_per_ip"][..], 2)
        );
        f.write("max_connections_per_ip = 0\n");
        let r = running.reload(&args).unwrap();
        assert_eq!(r.needs_restart, ["max_connections_per_ip"]);
        assert_eq!(r.config.max_connections_per_ip, 4);
    }
}
