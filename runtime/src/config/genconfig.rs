//! `wavecast genconfig`: a complete, commented configuration file.
//!
//! The settings and their descriptions come from the flags themselves
//! (clap's own list of `wavecast serve`'s arguments), so a new flag shows
//! up here without being listed twice; its default value comes from
//! [`Config::default`] through [`default_value`], which a new setting must
//! be added to (a test fails otherwise). Settings that are off by default,
//! or whose default depends on others (`allow_anonymous`, the namespaces'
//! permissions, `workers`), are written commented out with an example.

use std::fmt::Write;

use clap::Args;
use wavecast_core::namespace::NamespaceOptions;

use super::size::format_size;
use super::{Config, ServeArgs};

/// Flags that are not settings of the file (`config` names the file;
/// `insecure` is a flag only, on purpose).
const FLAG_ONLY: &[&str] = &["config", "insecure"];

/// The text of the file.
pub fn genconfig() -> String {
    let defaults = Config::default();
    let mut out = String::from(
        "# wavecast configuration (printed by `wavecast genconfig`; load it with\n\
         # `wavecast serve --config FILE`).\n\
         #\n\
         # Every key is also a flag of `wavecast serve` (--max-connections) and an\n\
         # environment variable (WAVECAST_MAX_CONNECTIONS); flags override the\n\
         # environment, which overrides this file. Uncommented lines hold the\n\
         # default; commented ones are off by default, or have a default that\n\
         # depends on other settings, and show an example. Sizes are bytes or\n\
         # have a unit (64KiB, 1MiB, 1GiB); durations look like 200ms, 25s, 10m.\n\
         # SIGHUP re-reads this file (docs/OPERATIONS.md, \"Signals and reload\").\n",
    );
    for (name, help) in settings() {
        out.push('\n');
        let value = default_value(&defaults, &name);
        // A set value says what the default is; an example does not, so
        // the flag's own `[default: ...]` note stays above it.
        let help = match value {
            Value::Default(_) => without_default_note(&help),
            Value::Example(_) => help,
        };
        for line in wrap(&help, 76) {
            let _ = writeln!(out, "# {line}");
        }
        match value {
            Value::Default(v) => {
                let _ = writeln!(out, "{name} = {v}");
            }
            Value::Example(v) => {
                let _ = writeln!(out, "# {name} = {v}");
            }
        }
    }
    out.push_str(&namespaces());
    out
}

/// Every setting of the file, with its flag's description, in the flags'
/// order.
pub(super) fn settings() -> Vec<(String, String)> {
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    command
        .get_arguments()
        .filter(|a| !FLAG_ONLY.contains(&a.get_id().as_str()))
        .map(|a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            (a.get_id().to_string(), help)
        })
        .collect()
}

/// A flag's description without its `[default: ...]` note.
fn without_default_note(help: &str) -> String {
    match help.find(" [default:") {
        Some(i) => {
            let rest = &help[i..];
            let end = rest.find(']').map_or(rest.len(), |e| e + 1);
            format!("{}{}", &help[..i], &rest[end..])
        }
        None => help.to_owned(),
    }
}

/// How a setting is written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// Set, to its default.
    Default(String),
    /// Commented out, with an example.
    Example(&'static str),
}

/// The default of setting `name` in `d` (TOML), or the example written
/// for a setting that is off by default.
pub(super) fn default_value(d: &Config, name: &str) -> Value {
    use Value::{Default as V, Example as E};
    let dur = |t: std::time::Duration| V(format!("\"{}\"", humantime::format_duration(t)));
    let size = |n: usize| V(format!("\"{}\"", format_size(n)));
    let num = |n: u64| V(n.to_string());
    let flag = |b: bool| V(b.to_string());
    match name {
        "listen" => V(format!("\"{}\"", d.listen)),
        "heartbeat_interval" => dur(d.heartbeat_interval),
        "heartbeat_timeout" => dur(d.heartbeat_timeout),
        "max_connections" => num(d.max_connections as u64),
        "max_connections_per_ip" => num(d.max_connections_per_ip as u64),
        "max_http_connections" => num(d.max_http_connections as u64),
        "http_timeout" => dur(d.http_timeout),
        "max_message_size" => size(d.max_message_size),
        "max_queued_bytes" => size(d.max_queued_bytes),
        "max_requests_in_flight" => num(d.max_requests_in_flight as u64),
        "backbone_queue" => num(d.backbone_queue as u64),
        "max_history_channels" => num(d.max_history_channels as u64),
        "max_history_bytes" => size(d.max_history_bytes),
        "echo" => flag(d.echo),
        // The default is the machine's core count.
        "workers" => E("4"),
        "allowed_origins" => E("[\"https://app.example\"]"),
        "api_key" => E("\"a long random string\""),
        "status" => flag(d.status),
        "status_password" => E("\"a long random string\""),
        "redis" => E("\"redis://127.0.0.1:6379\""),
        "redis_presence_ttl" => dur(d.redis_presence_ttl),
        "token_hmac_secret" => E("\"a long random string\""),
        "token_public_key" => E("\"/etc/wavecast/token-key.pem\""),
        "token_audience" => E("\"wavecast\""),
        "token_issuer" => E("\"https://id.example\""),
        "token_allow_no_exp" => flag(d.tokens.allow_no_exp),
        "token_leeway" => dur(d.tokens.leeway),
        "token_max_size" => size(d.tokens.max_size),
        "token_jwks_url" => E("\"https://id.example/.well-known/jwks.json\""),
        "token_jwks_refresh" => dur(d.token_jwks_refresh),
        "connect_proxy" => E("\"http://127.0.0.1:3000/wavecast/connect\""),
        "refresh_proxy" => E("\"http://127.0.0.1:3000/wavecast/refresh\""),
        "subscribe_proxy" => E("\"http://127.0.0.1:3000/wavecast/subscribe\""),
        "publish_proxy" => E("\"http://127.0.0.1:3000/wavecast/publish\""),
        "proxy_timeout" => dur(d.proxy_timeout),
        "proxy_headers" => E("[\"cookie\"]"),
        "proxy_max_in_flight" => num(d.proxy_max_in_flight as u64),
        // true without authentication, false with it.
        "allow_anonymous" => E("true"),
        "connect_timeout" => dur(d.connect_timeout),
        "refresh_grace" => dur(d.refresh_grace),
        "client_command_rate" => num(d.client_command_rate.into()),
        "client_publish_rate" => num(d.client_publish_rate.into()),
        "client_ping_rate" => num(d.client_ping_rate.into()),
        "max_subscriptions" => num(d.max_subscriptions as u64),
        "sse_max_channels" => num(d.sse_max_channels as u64),
        "sse_token_cookie" => V(format!("\"{}\"", d.sse_token_cookie)),
        "sse_token_in_query" => flag(d.sse_token_in_query),
        "sse_retry" => dur(d.sse_retry),
        "log_format" => V("\"text\"".into()),
        // RUST_LOG when it is set, else info.
        "log_level" => E("\"info\""),
        "log_summary_interval" => dur(d.log_summary_interval),
        "compression" => flag(d.compression),
        "compression_level" => num(d.compression_level.into()),
        "compression_threshold" => size(d.compression_threshold),
        "tls_cert" => E("\"/etc/wavecast/cert.pem\""),
        "tls_key" => E("\"/etc/wavecast/key.pem\""),
        "tls_handshake_timeout" => dur(d.tls_handshake_timeout),
        "tls_max_handshakes" => num(d.tls_max_handshakes as u64),
        other => panic!("genconfig: no default written for setting {other}"),
    }
}

/// The `[channels]` and `[namespaces.NAME]` tables, commented out: their
/// defaults depend on whether authentication is configured.
fn namespaces() -> String {
    let open = NamespaceOptions::default();
    let secured = NamespaceOptions::secured();
    let perm = |a: wavecast_core::namespace::Permission,
                b: wavecast_core::namespace::Permission| {
        format!(
            "\"{}\"    # with authentication configured: \"{}\"",
            a.name(),
            b.name()
        )
    };
    let mut out = String::from(
        "\n# Options of channels without a namespace (\"room1\"). A table\n\
         # [namespaces.NAME] has the same keys for the channels \"NAME:...\"; a\n\
         # channel of a namespace that is not configured is refused. Unset keys\n\
         # take the defaults below, which close when authentication (a token key\n\
         # or a connect proxy) is configured. Permissions: anonymous,\n\
         # authenticated, subscriber (publish, history, presence), token\n\
         # (subscribe: a subscription token), none.\n\
         #\n\
         # [channels]\n",
    );
    let _ = writeln!(
        out,
        "# Publications kept for history and recovery (0: none).\n# history_size = {}",
        open.history_size
    );
    let _ = writeln!(
        out,
        "# How long a publication is kept.\n# history_ttl = \"{}\"",
        humantime::format_duration(open.history_ttl)
    );
    let _ = writeln!(
        out,
        "# Track which clients are subscribed (the presence command).\n# presence = {}",
        open.presence
    );
    let _ = writeln!(
        out,
        "# Push join and leave to subscribers (needs presence).\n# join_leave = {}",
        open.join_leave
    );
    let _ = writeln!(
        out,
        "# Who may subscribe.\n# allow_subscribe = {}",
        perm(open.allow_subscribe, secured.allow_subscribe)
    );
    let _ = writeln!(
        out,
        "# Which clients may publish (the HTTP API always may).\n# allow_publish = {}",
        perm(open.allow_publish, secured.allow_publish)
    );
    let _ = writeln!(
        out,
        "# Which clients may read history.\n# allow_history = {}",
        perm(open.allow_history, secured.allow_history)
    );
    let _ = writeln!(
        out,
        "# Which clients may ask for presence.\n# allow_presence = {}",
        perm(open.allow_presence, secured.allow_presence)
    );
    let _ = writeln!(
        out,
        "# Channels \"name#u1,u2\" may be used only by the users listed after #.\n# user_limited = {}",
        open.user_limited
    );
    let _ = writeln!(
        out,
        "# Compress publications for clients that negotiated permessage-deflate (with --compression).\n# compression = {}",
        open.compression
    );
    out.push_str("#\n# [namespaces.chat]\n# presence = true\n# join_leave = true\n");
    out
}

/// `text` in lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(tag: &str, text: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wavecast-genconfig-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wavecast.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_printed_file_loads_back_to_the_defaults() {
        let path = temp_file("defaults", &genconfig());
        let from_file = Config::load(&ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        let defaults = Config {
            // Which file was read is not a setting.
            config_file: Some(path.clone()),
            ..Config::load(&ServeArgs::default()).unwrap()
        };
        assert_eq!(from_file, defaults);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn every_setting_is_in_the_printed_file() {
        let text = genconfig();
        let names = settings();
        assert!(names.len() > 40, "{}", names.len());
        for (name, help) in &names {
            assert!(!help.is_empty(), "{name} has no description");
            let set = text.lines().any(|l| l.starts_with(&format!("{name} = ")));
            let example = text.lines().any(|l| l.starts_with(&format!("# {name} = ")));
            assert!(set || example, "{name} is missing from genconfig");
        }
        // The file's keys are the flags': a key of FileConfig that is no
        // flag would be missing above; this one proves the file has them.
        for key in ["listen", "max_message_size", "namespaces", "channels"] {
            assert!(text.contains(key), "{key}");
        }
    }

    /// The keys serde accepts in a table, from its "unknown field" error
    /// ("expected one of `a`, `b`").
    fn accepted_keys(toml_text: &str) -> Vec<String> {
        let e = toml::from_str::<super::super::FileConfig>(toml_text)
            .unwrap_err()
            .to_string();
        let list = e.split("expected one of").nth(1).expect("a list of keys");
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_key_the_file_accepts_is_in_the_printed_file() {
        let text = genconfig();
        let top = accepted_keys("no_such_key = 1\n");
        assert!(top.len() > 40, "{top:?}");
        for key in &top {
            let found = match key.as_str() {
                "channels" => text.contains("# [channels]"),
                "namespaces" => text.contains("# [namespaces."),
                k => text.lines().any(|l| {
                    l.starts_with(&format!("{k} = ")) || l.starts_with(&format!("# {k} = "))
                }),
            };
            assert!(
                found,
                "{key} is accepted in the file but missing from genconfig"
            );
        }
        let table = accepted_keys("[channels]\nno_such_key = 1\n");
        assert!(table.len() >= 9, "{table:?}");
        for key in &table {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("# {key} = "))),
                "namespace key {key} is missing from genconfig"
            );
        }
    }

    #[test]
    fn the_examples_and_namespace_keys_are_valid_when_uncommented() {
        // Uncomment every example and the [channels] keys (not the
        // [namespaces.chat] example, which needs its table header too).
        let mut text = String::new();
        for line in genconfig().lines() {
            if line == "# [namespaces.chat]" {
                break;
            }
            let uncommented = line.strip_prefix("# ").filter(|l| {
                l.contains(" = ")
                    && !l.starts_with("token_jwks_url")
                    && !l.starts_with("redis ")
                    && !l.starts_with("token_public_key")
                    && !l.starts_with("tls_cert")
                    && !l.starts_with("tls_key")
            });
            match uncommented {
                // Drop the trailing note after a permission.
                Some(l) => {
                    text.push_str(l.split("    #").next().unwrap());
                    text.push('\n');
                }
                None if line == "# [channels]" => text.push_str("[channels]\n"),
                None => {}
            }
        }
        let path = temp_file("examples", &text);
        let c = Config::load(&ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.workers, 4);
        assert!(c.api_key.is_some() && c.verifier.is_some() && c.connect_proxy.is_some());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
