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
            "[channels]\nhistory_size = 7\n[namespaces.chat]\njoin_leave = true\nhistory_ttl = \"1m\"\n[namespaces.raw]\ncompression = false\n",
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
    assert!(chat.compression, "compression on by default in a namespace");
    assert!(!c.namespaces.resolve("raw:1").unwrap().compression);
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
    let dir = std::env::temp_dir().join(format!("wavecast-config-redis-{}", std::process::id()));
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

#[test]
fn sizes_take_units_in_the_file_and_the_flags() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let dir = std::env::temp_dir().join(format!("wavecast-config-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(
        &path,
        "max_message_size = \"32KiB\"\nmax_queued_bytes = 2048\nmax_history_bytes = \"1GiB\"\n\
         token_max_size = \"16 kib\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let c = Config::load(&args).unwrap();
    assert_eq!(
        (
            c.max_message_size,
            c.max_queued_bytes,
            c.max_history_bytes,
            c.tokens.max_size
        ),
        (32 << 10, 2048, 1 << 30, 16 << 10)
    );
    let cli = Cli::try_parse_from([
        "x",
        "--max-message-size",
        "1MiB",
        "--max-queued-bytes=64kB",
        "--max-history-bytes",
        "512MiB",
        "--token-max-size",
        "4096",
    ])
    .unwrap();
    let c = Config::load(&cli.serve).unwrap();
    assert_eq!(
        (
            c.max_message_size,
            c.max_queued_bytes,
            c.max_history_bytes,
            c.tokens.max_size
        ),
        (1 << 20, 64_000, 512 << 20, 4096)
    );
    let e = Cli::try_parse_from(["x", "--max-message-size", "64 parsecs"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected a size like 64KiB"), "{e}");
    // A bad size in the file: the line, the caret, and what is expected.
    std::fs::write(&path, "max_connections = 5\nmax_queued_bytes = \"1 MeB\"\n").unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains('^'), "{e}");
    assert!(e.contains("expected a size like 64KiB"), "{e}");
    std::fs::write(&path, "max_queued_bytes = -5\n").unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("negative"), "{e}");
    std::fs::write(&path, "max_queued_bytes = true\n").unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("a size like 64KiB"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listen_takes_host_names_and_keeps_the_loopback_rule() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cli = Cli::try_parse_from(["x", "--listen", "localhost:8000"]).unwrap();
    assert_eq!(
        Config::load(&cli.serve).unwrap().listen,
        "127.0.0.1:8000".parse().unwrap()
    );
    let e = Cli::try_parse_from(["x", "--listen", "localhost"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no port"), "{e}");
    let dir = std::env::temp_dir().join(format!("wavecast-config-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(&path, "listen = \"localhost:0\"\n").unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    assert_eq!(
        Config::load(&args).unwrap().listen,
        "127.0.0.1:0".parse().unwrap()
    );
    std::fs::write(&path, "listen = \"localhost:99999\"\n").unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("not a port"), "{e}");
    // A name is resolved first; the rule about authentication then applies
    // to the address it names, as to an address given as such.
    let open = ServeArgs {
        listen: Some(parse_listen("0.0.0.0:0").unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        Config::load(&open),
        Err(ConfigError::Invalid { name: "listen", .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_misspelt_key_is_shown_with_its_line_a_caret_and_the_valid_keys() {
    let dir = std::env::temp_dir().join(format!("wavecast-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.toml");
    std::fs::write(&path, "api_key = \"k\"\nmax_conections = 3\n").unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("line 2"), "{e}");
    assert!(e.contains("max_conections = 3\n  | ^"), "{e}");
    assert!(e.contains("unknown field `max_conections`"), "{e}");
    assert!(
        e.contains("expected one of") && e.contains("`max_connections`"),
        "{e}"
    );
    std::fs::write(&path, "[namespaces.chat]\nprecense = true\n").unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("`presence`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
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
fn the_status_page_needs_a_credential() {
    let args = ServeArgs {
        status: Some(true),
        ..Default::default()
    };
    match Config::load(&args) {
        Err(ConfigError::Invalid { name, reason }) => {
            assert_eq!(name, "status");
            assert!(reason.contains("status_password"), "{reason}");
        }
        other => panic!("status without a credential was accepted: {other:?}"),
    }
    for args in [
        ServeArgs {
            status: Some(true),
            api_key: Some("k".into()),
            ..Default::default()
        },
        ServeArgs {
            status: Some(true),
            status_password: Some("p".into()),
            ..Default::default()
        },
    ] {
        let c = Config::load(&args).expect("a credential is enough");
        assert!(c.status);
    }
    assert!(
        !Config::load(&ServeArgs::default()).unwrap().status,
        "off by default"
    );
}

#[test]
fn compression_settings_from_file_and_flags() {
    let d = Config::default();
    assert_eq!(
        (d.compression, d.compression_level, d.compression_threshold),
        (false, 1, 1024),
        "off by default, level 1, 1 KiB"
    );
    let file: FileConfig = toml::from_str(
        "compression = true\ncompression_level = 6\ncompression_threshold = \"4KiB\"\n",
    )
    .unwrap();
    assert_eq!(file.compression, Some(true));
    assert_eq!(file.compression_level, Some(6));
    assert_eq!(file.compression_threshold, Some(4096));
    let args = ServeArgs {
        compression: Some(true),
        compression_threshold: Some(0),
        ..Default::default()
    };
    let c = Config::load(&args).unwrap();
    assert_eq!((c.compression, c.compression_threshold), (true, 0));
    let bad = ServeArgs {
        compression_level: Some(10),
        ..Default::default()
    };
    match Config::load(&bad) {
        Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, "compression_level"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_ping_rate_from_file_and_flags_within_its_bound() {
    assert_eq!(
        Config::default().client_ping_rate,
        10,
        "the server's default: a client library pings every few seconds at most"
    );
    let file: FileConfig = toml::from_str("client_ping_rate = 3\n").unwrap();
    assert_eq!(file.client_ping_rate, Some(3));
    let args = ServeArgs {
        client_ping_rate: Some(0),
        ..Default::default()
    };
    assert_eq!(Config::load(&args).unwrap().client_ping_rate, 0, "no limit");
    let args = ServeArgs {
        client_ping_rate: Some(1_000_001),
        ..Default::default()
    };
    match Config::load(&args) {
        Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, "client_ping_rate"),
        other => panic!("{other:?}"),
    }
}
