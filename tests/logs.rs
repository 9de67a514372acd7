//! The log, against the real binary: `--log-format json` writes one JSON
//! object per line with the startup facts as fields; the text log has no
//! colour codes when stderr is not a terminal, has them on a terminal, and
//! never with `NO_COLOR`; at debug each connection's open and close is
//! logged with its close code; slow-consumer and heartbeat closes are
//! summed up once per interval, not logged one by one; and with Redis,
//! whether Redis persists is checked at connect and warned about once when
//! it does not (snapshots alone included), and a Redis that refuses
//! `CONFIG` is noted at info without harm.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test logs`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use wavecast_core::frame::OpCode;
use wavecast_tests::pubsub::*;
use wavecast_tests::redis::Redis;
use wavecast_tests::{binary_path, RawClient, Server};

/// The server's stderr as JSON lines; panics on a line that is not one
/// object with the keys of tracing-subscriber's JSON format.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l:?}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key:?} in {l}");
            }
            assert!(v["fields"]["message"].is_string(), "no message in {l}");
            v
        })
        .collect()
}

/// The lines whose message starts with `prefix`.
fn with_message<'a>(lines: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
        })
        .collect()
}

/// Sends SIGTERM and waits for a clean exit.
fn stop(server: &mut Server) {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(T);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server exits cleanly after SIGTERM: {status:?}\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn json_lines_parse_and_the_startup_lines_say_where_to_connect() {
    let mut server = Server::start(&["--log-format", "json", "--api-key", KEY]);
    let addr = server.addr();
    let c = Client::connect(addr, Enc::Json).await;
    c.close().await;
    stop(&mut server);
    let lines = json_lines(&server.stderr());
    let listening = with_message(&lines, "listening on");
    assert_eq!(listening.len(), 1, "{lines:#?}");
    assert_eq!(listening[0]["level"], "INFO");
    assert_eq!(listening[0]["fields"]["addr"], addr.to_string());
    let url = with_message(&lines, "WebSocket URL");
    assert_eq!(url.len(), 1, "{lines:#?}");
    assert_eq!(url[0]["fields"]["url"], format!("ws://{addr}/ws"));
    let api = with_message(&lines, "HTTP API: on");
    assert_eq!(api.len(), 1, "{lines:#?}");
    assert_eq!(api[0]["fields"]["api"], true);
    assert_eq!(api[0]["fields"]["status_page"], false);
    assert_eq!(with_message(&lines, "authentication: none").len(), 1);
    assert_eq!(with_message(&lines, "config file: none").len(), 1);
    assert_eq!(with_message(&lines, "backbone: memory").len(), 1);
    // Shutdown progress, through to the last line.
    assert_eq!(
        with_message(&lines, "shutting down: ").len(),
        2,
        "{lines:#?}"
    );
    let last = lines.last().expect("lines");
    assert_eq!(last["fields"]["message"], "shut down", "{lines:#?}");
}

#[test]
fn the_startup_lines_name_the_config_file_the_auth_mode_and_the_backbone() {
    let config = TempFile::new("toml", "token_hmac_secret = \"s3cret\"\n");
    let path = config.path();
    let mut server = Server::start(&["--config", &path]);
    stop(&mut server);
    let text = server.stderr();
    assert!(text.contains(&format!("config file: {path}")), "{text}");
    assert!(
        text.contains("authentication: HMAC tokens (HS256/384/512), required"),
        "{text}"
    );
    assert!(text.contains("HTTP API: off"), "{text}");
    assert!(text.contains("status page: off"), "{text}");
    assert!(!text.contains("s3cret"), "the secret is not logged: {text}");
}

/// Not a terminal (a file): no escape codes, even at debug with
/// connections coming and going.
#[tokio::test]
async fn the_text_log_in_a_file_has_no_colour_codes() {
    let mut server = Server::start(&["--log-level", "debug"]);
    let c = Client::connect(server.addr(), Enc::Json).await;
    c.close().await;
    stop(&mut server);
    let text = server.stderr();
    assert!(text.contains("WebSocket URL: ws://"), "{text}");
    assert!(text.contains("connection closed"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "an escape code in a log file: {text:?}"
    );
}

/// Runs the server for four seconds on a pseudo-terminal (`script`), with
/// `NO_COLOR` set to `no_color` or unset; what the terminal showed.
fn on_a_terminal(no_color: Option<&str>) -> String {
    let inner = format!(
        "timeout -s TERM 4 {} serve --listen 127.0.0.1:0",
        binary_path().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &inner, "/dev/null"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WAVECAST_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    let out = cmd
        .output()
        .expect("run script(1) (util-linux) to give the server a terminal");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("WebSocket URL"), "the server ran: {text:?}");
    text
}

#[test]
fn colour_on_a_terminal_unless_no_color_is_set() {
    assert!(on_a_terminal(None).contains('\x1b'), "colour on a terminal");
    assert!(
        on_a_terminal(Some("")).contains('\x1b'),
        "an empty NO_COLOR counts as unset"
    );
    assert!(
        !on_a_terminal(Some("1")).contains('\x1b'),
        "NO_COLOR=1: no colour"
    );
}

#[tokio::test]
async fn at_debug_each_connection_open_and_close_is_logged_with_its_code() {
    let mut server = Server::start(&["--log-format", "json", "--log-level", "debug"]);
    let addr = server.addr();
    let c = Client::connect(addr, Enc::Json).await;
    c.close().await;
    // One the server closes: a bad command (a binary frame on JSON).
    let mut bad = Client::connect(addr, Enc::Json).await;
    bad.send_message(tokio_tungstenite::tungstenite::Message::binary(vec![1]))
        .await;
    assert_eq!(bad.close_code().await, Some(4500));
    let lines = eventually(T, "both closes logged", || {
        let lines = json_lines(&server.stderr());
        async move { (with_message(&lines, "connection closed").len() == 2).then_some(lines) }
    })
    .await;
    let opened = with_message(&lines, "connection opened");
    assert_eq!(opened.len(), 2, "{lines:#?}");
    for o in &opened {
        assert_eq!(o["level"], "DEBUG");
        assert_eq!(o["fields"]["peer"], "127.0.0.1");
        assert_eq!(o["fields"]["endpoint"], "websocket (json)");
    }
    let closed = with_message(&lines, "connection closed");
    let first = closed
        .iter()
        .find(|c| c["fields"]["client"] == opened[0]["fields"]["client"])
        .expect("the first connection's close, by its client id");
    // The test client's close frame has no code.
    assert_eq!(first["fields"]["code"], 1005, "{first}");
    assert_eq!(first["fields"]["reason"], "no status code");
    assert_eq!(first["fields"]["cause"], "closed by the client");
    let second = closed
        .iter()
        .find(|c| c["fields"]["client"] == opened[1]["fields"]["client"])
        .expect("the second connection's close");
    assert_eq!(second["fields"]["code"], 4500, "{second}");
    assert_eq!(second["fields"]["reason"], "bad command");
    stop(&mut server);
}

/// The same run at info says nothing per connection. (The level is given:
/// a `RUST_LOG` in the test's environment would apply otherwise.)
#[tokio::test]
async fn at_info_connections_are_not_logged_one_by_one() {
    let mut server = Server::start(&["--log-format", "json", "--log-level", "info"]);
    let c = Client::connect(server.addr(), Enc::Json).await;
    c.close().await;
    stop(&mut server);
    let lines = json_lines(&server.stderr());
    assert!(with_message(&lines, "connection opened").is_empty());
    assert!(with_message(&lines, "connection closed").is_empty());
}

/// A subscriber that never reads (nor answers pings).
fn raw_subscriber(addr: SocketAddr, channel: &str) -> RawClient {
    let mut c = RawClient::connect(addr, "/ws");
    let cmd = json!({"id": 1, "subscribe": {"channel": channel}}).to_string();
    c.send_frame(true, OpCode::Text, cmd.as_bytes())
        .expect("send subscribe");
    c
}

/// The summary lines so far, with their counts.
fn summaries(server: &Server) -> Vec<(u64, u64)> {
    json_lines(&server.stderr())
        .iter()
        .filter(|v| v["fields"]["slow_consumers"].is_u64())
        .map(|v| {
            assert_eq!(v["level"], "INFO", "{v}");
            (
                v["fields"]["slow_consumers"].as_u64().unwrap_or(0),
                v["fields"]["heartbeat_timeouts"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_consumers_closed_at_once_make_one_summary_line() {
    const SLOW: usize = 24;
    let ts = TestServer::start(&[
        "--log-format",
        "json",
        "--max-queued-bytes",
        "65536",
        "--heartbeat-interval",
        "1h",
        "--log-summary-interval",
        "5s",
    ]);
    let ch = "crowd";
    let addr = ts.addr();
    let slow: Vec<RawClient> =
        tokio::task::spawn_blocking(move || (0..SLOW).map(|_| raw_subscriber(addr, ch)).collect())
            .await
            .expect("subscribers");
    eventually(T, "every slow reader subscribed", || {
        let ts = &ts;
        async move {
            let r = ts.api_ok("/api/channels", &json!({})).await;
            (r["channels"][ch]["subscribers"] == SLOW).then_some(())
        }
    })
    .await;
    // Publish until the kernel buffers and every queue budget are full and
    // each reader is cut (the channel has no subscriber left).
    let pad = "x".repeat(32 * 1024);
    let mut api = ApiConn::open(addr).await;
    let mut cut = false;
    for i in 0..4000u64 {
        api.post_ok(
            "/api/publish",
            &json!({"channel": ch, "data": {"i": i, "pad": pad}}),
        )
        .await;
        if i % 50 == 49 {
            let r = ts.api_ok("/api/channels", &json!({})).await;
            if r["channels"][ch]["subscribers"].as_u64().unwrap_or(0) == 0 {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the slow readers were not all cut");
    let lines = eventually(
        Duration::from_secs(30),
        "the summary of every close",
        || {
            let got = summaries(&ts.server);
            async move { (got.iter().map(|(s, _)| s).sum::<u64>() == SLOW as u64).then_some(got) }
        },
    )
    .await;
    // One line for the crowd (two if the closes straddled the end of an
    // interval), not one per connection.
    assert!(
        (1..=2).contains(&lines.len()),
        "{SLOW} closes in {} summary lines: {lines:?}",
        lines.len()
    );
    let text = ts.server.stderr();
    assert!(
        text.contains("slow consumers (4002)"),
        "the line names them: {text}"
    );
    // Nothing else at info or above speaks of them one by one.
    let all = json_lines(&text);
    let about_slow = all
        .iter()
        .filter(|v| v["level"] != "DEBUG" && v["level"] != "TRACE")
        .filter(|v| v.to_string().contains("slow consumer") || v.to_string().contains("4002"))
        .count();
    assert_eq!(about_slow, lines.len(), "{all:#?}");
    drop(slow);
}

#[tokio::test]
async fn silent_connections_are_summed_up_as_heartbeat_closes() {
    const SILENT: usize = 6;
    let server = Server::start(&[
        "--log-format",
        "json",
        "--heartbeat-interval",
        "1s",
        "--heartbeat-timeout",
        "1s",
        "--log-summary-interval",
        "5s",
    ]);
    let addr = server.addr();
    let silent: Vec<RawClient> = tokio::task::spawn_blocking(move || {
        (0..SILENT)
            .map(|_| RawClient::connect(addr, "/ws"))
            .collect()
    })
    .await
    .expect("connections");
    let lines = eventually(T, "the summary of the heartbeat closes", || {
        let got = summaries(&server);
        async move { (got.iter().map(|(_, h)| h).sum::<u64>() == SILENT as u64).then_some(got) }
    })
    .await;
    assert!((1..=2).contains(&lines.len()), "{lines:?}");
    assert!(server
        .stderr()
        .contains("silent connections (4001, heartbeat timeout)"));
    drop(silent);
}

/// With Redis: the persistence warning appears once (at the first
/// connect) when Redis keeps nothing.
#[tokio::test]
async fn a_redis_without_persistence_is_warned_about_once() {
    let redis = Redis::start_with(&["--save", "", "--appendonly", "no"]);
    let url = redis.url();
    let mut server = Server::start(&["--log-format", "json", "--redis", &url]);
    let lines = eventually(T, "the persistence line", || {
        let lines = json_lines(&server.stderr());
        async move { (!with_message(&lines, "redis persists").is_empty()).then_some(lines) }
    })
    .await;
    let warned = with_message(&lines, "redis persists nothing");
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(warned[0]["fields"]["persistence"], "none");
    assert_eq!(
        with_message(&lines, "backbone: redis at redis://127.0.0.1:").len(),
        1
    );
    assert_eq!(
        with_message(&lines, "backbone link up").len(),
        1,
        "{lines:#?}"
    );
    // Cut the server's links (Redis closes its clients' connections): it
    // reconnects, checks again, and says nothing new about persistence.
    let port = url.rsplit(':').next().expect("a port in the URL");
    let killed = Command::new("redis-cli")
        .args(["-p", port, "CLIENT", "KILL", "TYPE", "pubsub"])
        .output()
        .expect("run redis-cli");
    assert!(killed.status.success(), "{killed:?}");
    let lines = eventually(T, "the link back up", || {
        let lines = json_lines(&server.stderr());
        async move { (!with_message(&lines, "backbone link up again").is_empty()).then_some(lines) }
    })
    .await;
    assert_eq!(
        with_message(&lines, "backbone link down").len(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        with_message(&lines, "redis persists nothing").len(),
        1,
        "warned once, not at every reconnect: {lines:#?}"
    );
    stop(&mut server);
}

#[tokio::test]
async fn a_redis_with_an_append_only_file_is_not_warned_about() {
    let redis = Redis::start_with(&["--save", "", "--appendonly", "yes"]);
    let url = redis.url();
    let mut server = Server::start(&["--log-format", "json", "--redis", &url]);
    let lines = eventually(T, "the persistence line", || {
        let lines = json_lines(&server.stderr());
        async move { (!with_message(&lines, "redis persists").is_empty()).then_some(lines) }
    })
    .await;
    let said = with_message(&lines, "redis persists");
    assert_eq!(said.len(), 1, "{lines:#?}");
    assert_eq!(said[0]["level"], "INFO");
    assert_eq!(said[0]["fields"]["persistence"], "appendonly");
    assert!(
        lines.iter().all(|l| l["level"] != "WARN"
            || !l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("persist")),
        "{lines:#?}"
    );
    stop(&mut server);
}

/// Snapshots alone rewind Redis with the same epoch: warned about too.
#[tokio::test]
async fn a_redis_on_snapshots_alone_is_warned_about() {
    let redis = Redis::start_with(&["--save", "3600 1", "--appendonly", "no"]);
    let url = redis.url();
    let mut server = Server::start(&["--log-format", "json", "--redis", &url]);
    let lines = eventually(T, "the persistence line", || {
        let lines = json_lines(&server.stderr());
        async move { (!with_message(&lines, "redis persists").is_empty()).then_some(lines) }
    })
    .await;
    let warned = with_message(&lines, "redis persists snapshots only");
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(warned[0]["fields"]["save"], "3600 1");
    stop(&mut server);
}

/// A Redis that refuses CONFIG (as managed services do): an info line,
/// no error, and the backbone works.
#[tokio::test]
async fn a_redis_that_refuses_config_is_noted_at_info_and_works() {
    let redis = Redis::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let url = redis.url();
    let ts = TestServer::start(&["--log-format", "json", "--redis", &url]);
    let lines = eventually(T, "the persistence line", || {
        let lines = json_lines(&ts.server.stderr());
        async move {
            (!with_message(&lines, "cannot tell whether redis persists").is_empty())
                .then_some(lines)
        }
    })
    .await;
    let noted = with_message(&lines, "cannot tell whether redis persists");
    assert_eq!(noted.len(), 1, "{lines:#?}");
    assert_eq!(noted[0]["level"], "INFO");
    assert!(
        lines.iter().all(|l| l["level"] != "ERROR"),
        "no error: {lines:#?}"
    );
    // The backbone works: a publication goes through Redis.
    let mut c = ts.client(Enc::Json).await;
    c.subscribe("news").await;
    let offset = ts.api_publish("news", &json!("hello")).await;
    assert_eq!(c.next_pub("news").await, (offset, json!("hello")));
}
