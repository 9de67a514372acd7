//! Reloading the configuration on SIGHUP, against the real binary
//! (docs/OPERATIONS.md, "Signals and reload"): the new API key, namespace
//! permissions and connection limit apply while an open WebSocket
//! connection stays open and subscribed; a broken file is refused with a
//! log line naming the error and the old configuration stays in force; a
//! changed listen address is reported as needing a restart; without a
//! config file SIGHUP changes nothing; SIGTERM after a SIGHUP is still
//! graceful. Also: `wavecast genconfig` output starts a server, and
//! `--listen localhost:0` listens on 127.0.0.1.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test reload`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wavecast_tests::pubsub::{api, Client, Enc, TempFile};
use wavecast_tests::{binary_path, http_exchange, Request, Server};

const T: Duration = Duration::from_secs(10);
/// How long a handler may take to be installed after the listening line.
const HANDLER_WAIT: Duration = Duration::from_secs(5);
const SHUTDOWN: u16 = wavecast_core::protocol::close::SHUTDOWN.0;

/// Waits until the server's stderr holds `needle` `times` times; returns
/// the stderr.
fn wait_log(server: &Server, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + T;
    loop {
        let err = server.stderr();
        if err.matches(needle).count() >= times {
            return err;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {times} times within {T:?}:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrites the config file and sends SIGHUP.
fn reload(server: &Server, file: &TempFile, text: &str) {
    std::fs::write(file.as_path(), text).unwrap();
    server.wait_catches_signal(libc::SIGHUP, HANDLER_WAIT);
    server.signal(libc::SIGHUP);
}

async fn api_status(server: &Server, key: &str) -> u16 {
    let body = json!({"channel": "news", "data": "from the api"}).to_string();
    api(server.addr(), Some(key), "/api/publish", body.as_bytes())
        .await
        .status
}

fn upgrade_status(server: &Server) -> u16 {
    let req = Request::upgrade(server.addr(), "/ws").to_bytes();
    http_exchange(server.addr(), &req, T).unwrap().status
}

#[tokio::test]
async fn sighup_applies_the_new_rules_and_keeps_open_connections() {
    let file = TempFile::new("toml", "api_key = \"key-a\"\nmax_connections = 100\n");
    let mut server = Server::start(&["--config", &file.path()]);
    let mut c = Client::connect(server.addr(), Enc::Json).await;
    c.subscribe("news").await;
    c.publish("news", &json!(1)).await;
    let _ = c.next_pub("news").await;
    assert_eq!(api_status(&server, "key-a").await, 200);
    assert_eq!(api_status(&server, "key-b").await, 401);
    let _ = c.next_pub("news").await;

    reload(
        &server,
        &file,
        "api_key = \"key-b\"\nmax_connections = 1\n[channels]\nallow_publish = \"none\"\n",
    );
    let err = wait_log(&server, "config reloaded from", 1);
    assert!(
        err.contains("changed max_connections, api_key, namespaces"),
        "{err}"
    );
    // The new API key, and only it.
    assert_eq!(api_status(&server, "key-a").await, 401);
    assert_eq!(api_status(&server, "key-b").await, 200);
    // The open connection is still subscribed: the API's publication
    // reaches it; its own publish is judged by the new permission.
    let (_, data) = c.next_pub("news").await;
    assert_eq!(data, json!("from the api"));
    assert_eq!(
        c.err("publish", json!({"channel": "news", "data": 2}))
            .await,
        104
    );
    // It holds the one connection now allowed: a new one is refused.
    assert_eq!(upgrade_status(&server), 503);

    // SIGTERM is still graceful after a reload.
    server.wait_catches_signal(libc::SIGTERM, HANDLER_WAIT);
    server.signal(libc::SIGTERM);
    assert_eq!(c.close_code().await, Some(SHUTDOWN));
    let status = server.wait_exit(Duration::from_secs(8)).expect("exited");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_running_config_stays() {
    let file = TempFile::new("toml", "api_key = \"key-a\"\n");
    let server = Server::start(&["--config", &file.path()]);
    let mut c = Client::connect(server.addr(), Enc::Json).await;
    c.subscribe("news").await;
    reload(&server, &file, "api_key = \"key-b\"\nmax_conections = 3\n");
    let err = wait_log(&server, "config reload refused", 1);
    // The loader's message: the file, the line, the caret, the key.
    let line = err
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap();
    assert!(line.contains(&file.path()), "{line}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("max_conections"), "{err}");
    assert!(err.contains('^'), "{err}");
    assert_eq!(api_status(&server, "key-a").await, 200);
    assert_eq!(api_status(&server, "key-b").await, 401);
    // A value out of range is refused whole too: not even the valid key
    // of the same file applies.
    reload(
        &server,
        &file,
        "api_key = \"key-b\"\nmax_subscriptions = 0\n",
    );
    let err = wait_log(&server, "config reload refused", 2);
    assert!(err.contains("max_subscriptions"), "{err}");
    assert_eq!(api_status(&server, "key-a").await, 200);
    // The connection never noticed; a good file applies afterwards.
    let _ = c.next_pub("news").await;
    let _ = c.next_pub("news").await;
    reload(&server, &file, "api_key = \"key-b\"\n");
    wait_log(&server, "config reloaded from", 1);
    assert_eq!(api_status(&server, "key-b").await, 200);
    let _ = c.next_pub("news").await;
}

#[tokio::test]
async fn a_changed_listen_address_is_reported_as_needing_a_restart() {
    let file = TempFile::new("toml", "listen = \"127.0.0.1:0\"\napi_key = \"key-a\"\n");
    let server = Server::start_exactly(&["--config", &file.path()]);
    reload(
        &server,
        &file,
        "listen = \"127.0.0.1:1\"\napi_key = \"key-b\"\necho = true\n",
    );
    let err = wait_log(&server, "needs a restart", 1);
    let line = err.lines().find(|l| l.contains("needs a restart")).unwrap();
    assert!(line.contains("listen, echo"), "{line}");
    assert!(err.contains("changed api_key"), "{err}");
    // Still on the first address, with the new key.
    assert_eq!(api_status(&server, "key-b").await, 200);
}

#[tokio::test]
async fn sighup_without_a_config_file_changes_nothing() {
    let server = Server::start(&["--api-key", "key-a"]);
    server.wait_catches_signal(libc::SIGHUP, HANDLER_WAIT);
    server.signal(libc::SIGHUP);
    wait_log(&server, "no config file to re-read", 1);
    assert_eq!(api_status(&server, "key-a").await, 200);
}

#[test]
fn genconfig_prints_a_file_the_server_starts_with() {
    let out = Command::new(binary_path())
        .arg("genconfig")
        .output()
        .expect("run wavecast genconfig");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_message_size = \"64KiB\""), "{text}");
    let file = TempFile::new("toml", &text);
    let server = Server::start(&["--config", &file.path()]);
    assert!(server.addr().ip().is_loopback());
}

#[test]
fn listen_accepts_localhost() {
    let server = Server::start_exactly(&["--listen", "localhost:0"]);
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
}

#[tokio::test]
async fn allowed_origins_change_for_new_handshakes() {
    let file = TempFile::new("toml", "allowed_origins = [\"https://a.example\"]\n");
    let server = Server::start(&["--config", &file.path()]);
    let with_origin = |origin: &str| {
        let req = Request::upgrade(server.addr(), "/ws")
            .set("Origin", origin)
            .to_bytes();
        http_exchange(server.addr(), &req, T).unwrap().status
    };
    assert_eq!(with_origin("https://a.example"), 101);
    assert_eq!(with_origin("https://b.example"), 403);
    reload(
        &server,
        &file,
        "allowed_origins = [\"https://b.example\"]\n",
    );
    let err = wait_log(&server, "config reloaded from", 1);
    assert!(err.contains("changed allowed_origins"), "{err}");
    // Every shard took the new list (each handshake may land on any).
    for _ in 0..8 {
        assert_eq!(with_origin("https://a.example"), 403);
        assert_eq!(with_origin("https://b.example"), 101);
    }
}

#[tokio::test]
async fn sizes_with_units_and_a_host_name_work_from_the_environment() {
    let server = Server::start_with_env(
        &[],
        &[
            ("WAVECAST_LISTEN", "localhost:0"),
            ("WAVECAST_MAX_MESSAGE_SIZE", "1KiB"),
        ],
    );
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    let mut c = Client::connect(server.addr(), Enc::Json).await;
    c.subscribe("news").await;
    // Under 1 KiB passes; over it closes 1009 (message too big).
    c.publish("news", &json!("x".repeat(500))).await;
    c.send(&json!({"id": 99, "publish": {"channel": "news", "data": "x".repeat(2000)}}))
        .await;
    assert_eq!(c.close_code().await, Some(1009));
}

#[tokio::test]
async fn the_log_level_changes_at_once() {
    let file = TempFile::new("toml", "log_level = \"info\"\n");
    let server = Server::start_exactly(&["--listen", "127.0.0.1:0", "--config", &file.path()]);
    let open_and_close = || async {
        let c = Client::connect(server.addr(), Enc::Json).await;
        c.close().await;
    };
    open_and_close().await;
    reload(&server, &file, "log_level = \"wavecast=debug,info\"\n");
    wait_log(&server, "changed log_level", 1);
    assert!(
        !server.stderr().contains("connection opened"),
        "at info, no connection is logged"
    );
    open_and_close().await;
    let err = wait_log(&server, "connection opened", 1);
    wait_log(&server, "connection closed", 1);
    // An invalid level is refused by the loader; the debug level stays.
    reload(&server, &file, "log_level = \"loud\"\n");
    wait_log(&server, "config reload refused", 1);
    open_and_close().await;
    wait_log(&server, "connection opened", 2);
    let _ = err;
}
