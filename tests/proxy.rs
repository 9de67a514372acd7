//! Backend proxies against the real binary (docs/OPERATIONS.md
//! "Authentication", "Backend proxies"): each proxy against a small
//! backend of the test's own (`wavecast_tests::backend`, hyper on
//! 127.0.0.1:0): a connect proxy saying who the user is, refusing with an
//! error or a disconnect, hanging past `proxy_timeout`, down; a subscribe
//! proxy refusing; a publish proxy rewriting the data; a refresh proxy
//! extending `expire_at` or ending the connection; the handshake headers
//! named in `proxy_headers` forwarded and no others; `proxy_max_in_flight`
//! answering error 100 at once; and the startup rules.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test proxy`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use wavecast_tests::backend::{closed_port, Backend, Recorded, Reply};
use wavecast_tests::pubsub::{eventually, presence_users, Client, Enc, TempFile, T};
use wavecast_tests::{refuses_to_start, Server};

const KEY: &str = "proxy-test-api-key";

const CONFIG: &str = r#"
[namespaces.chat]
allow_publish = "subscriber"
join_leave = true
"#;

/// Error 100: temporary, retry.
const E_INTERNAL: u64 = 100;
/// Error 112: unauthorized.
const E_UNAUTHORIZED: u64 = 112;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server with [`CONFIG`], the API key and `extra` flags (the proxy
/// URLs).
struct ProxyServer {
    server: Server,
    _config: TempFile,
}

impl ProxyServer {
    fn start(extra: &[&str]) -> ProxyServer {
        let config = TempFile::new("toml", CONFIG);
        let path = config.path();
        let mut args = vec![
            "--config",
            path.as_str(),
            "--api-key",
            KEY,
            "--client-command-rate",
            "0",
            "--client-publish-rate",
            "0",
        ];
        args.extend_from_slice(extra);
        ProxyServer {
            server: Server::start(&args),
            _config: config,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.server.addr(), Enc::Json).await
    }

    /// A client that connected through the connect proxy.
    async fn user(&self) -> Client {
        let mut c = self.client().await;
        let r = c.ok("connect", json!({})).await;
        assert!(r["client"].is_string(), "{r}");
        c
    }

    async fn presence_users(&self, channel: &str) -> Vec<String> {
        presence_users(self.server.addr(), KEY, channel).await
    }
}

/// A connect proxy answer for user 42 (who `data.user` names, if given).
fn connect_ok(r: &Recorded) -> Reply {
    let user = r.body["data"]["user"].as_str().unwrap_or("42").to_owned();
    Reply::Json(json!({"result": {"user": user, "info": {"name": "Ann"}}}))
}

#[tokio::test]
async fn a_connect_proxy_says_who_the_user_is() {
    let backend = Backend::start(connect_ok);
    let s = ProxyServer::start(&["--connect-proxy", &backend.url("/connect")]);
    let mut c = s.client().await;
    let r = c.ok("connect", json!({"data": {"user": "42"}})).await;
    assert_eq!(r["user"], "42", "{r}");
    let client = r["client"].as_str().unwrap().to_owned();
    c.subscribe("chat:lobby").await;
    let join = c.next_push().await;
    assert_eq!(join["join"]["user"], "42", "{join}");
    assert_eq!(s.presence_users("chat:lobby").await, vec!["42"]);
    // What the backend got: the shapes of Centrifugo's connect proxy.
    let asked = backend.requests_to("/connect");
    assert_eq!(asked.len(), 1, "{asked:?}");
    let req = &asked[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.body["client"], client.as_str(), "{}", req.body);
    assert_eq!(req.body["transport"], "websocket");
    assert_eq!(req.body["data"], json!({"user": "42"}));
    // A connect with a token-less body but no proxy answer cannot pass as
    // anonymous: a command before connect is still 112.
    let mut other = s.client().await;
    assert_eq!(
        other
            .err("subscribe", json!({"channel": "chat:lobby"}))
            .await,
        E_UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_backend_error_reaches_the_client_and_the_connection_stays() {
    let backend = Backend::start(|r| {
        if r.body["data"]["password"] == "right" {
            connect_ok(r)
        } else {
            Reply::Json(json!({"error": {"code": 1403, "message": "wrong password"}}))
        }
    });
    let s = ProxyServer::start(&["--connect-proxy", &backend.url("/connect")]);
    let mut c = s.client().await;
    let r = c
        .command("connect", json!({"data": {"password": "wrong"}}))
        .await;
    assert_eq!(r["error"]["code"], 1403, "{r}");
    assert_eq!(r["error"]["message"], "wrong password", "{r}");
    // Still open: another try with the right one succeeds.
    let r = c
        .ok("connect", json!({"data": {"password": "right"}}))
        .await;
    assert_eq!(r["user"], "42");
}

#[tokio::test]
async fn a_backend_disconnect_closes_with_its_code() {
    let backend =
        Backend::start(|_| Reply::Json(json!({"disconnect": {"code": 4600, "reason": "banned"}})));
    let s = ProxyServer::start(&["--connect-proxy", &backend.url("/connect")]);
    let mut c = s.client().await;
    c.send(&json!({"id": 1, "connect": {}})).await;
    assert_eq!(c.close_code().await, Some(4600));
}

#[tokio::test]
async fn a_backend_that_hangs_gives_error_100_after_the_timeout_and_the_connection_stays() {
    let slow = Arc::new(Mutex::new(true));
    let flag = slow.clone();
    let backend = Backend::start(move |r| {
        if *flag.lock().unwrap() {
            Reply::Hang(Duration::from_secs(30))
        } else {
            connect_ok(r)
        }
    });
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--proxy-timeout",
        "300ms",
    ]);
    let mut c = s.client().await;
    let started = Instant::now();
    assert_eq!(c.err("connect", json!({})).await, E_INTERNAL);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}, before proxy_timeout"
    );
    // The connection stays: the backend is back, the retry succeeds.
    *slow.lock().unwrap() = false;
    let r = c.ok("connect", json!({})).await;
    assert_eq!(r["user"], "42");
}

#[tokio::test]
async fn a_backend_that_is_down_gives_error_100_and_the_connection_stays() {
    let down = closed_port();
    let s = ProxyServer::start(&["--connect-proxy", &format!("http://{down}/connect")]);
    let mut c = s.client().await;
    assert_eq!(c.err("connect", json!({})).await, E_INTERNAL);
    // Never an open door: still not connected, and still open.
    assert_eq!(
        c.err("subscribe", json!({"channel": "chat:x"})).await,
        E_UNAUTHORIZED
    );
    assert_eq!(c.err("connect", json!({})).await, E_INTERNAL);
}

#[tokio::test]
async fn a_non_2xx_answer_or_garbage_gives_error_100() {
    let backend = Backend::start(|r| match r.body["data"]["kind"].as_str() {
        Some("500") => Reply::Status(500, "oops".into()),
        Some("garbage") => Reply::Status(200, "not json".into()),
        _ => Reply::Json(json!({"nothing": true})),
    });
    let s = ProxyServer::start(&["--connect-proxy", &backend.url("/connect")]);
    let mut c = s.client().await;
    for kind in ["500", "garbage", "empty"] {
        assert_eq!(
            c.err("connect", json!({"data": {"kind": kind}})).await,
            E_INTERNAL,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_subscribe_proxy_may_refuse() {
    let backend = Backend::start(|r| match r.path.as_str() {
        "/connect" => connect_ok(r),
        _ if r.body["channel"] == "chat:secret" => {
            Reply::Json(json!({"error": {"code": 1403, "message": "not for you"}}))
        }
        _ => Reply::Json(json!({"result": {}})),
    });
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--subscribe-proxy",
        &backend.url("/subscribe"),
    ]);
    let mut c = s.user().await;
    c.subscribe("chat:open").await;
    assert_eq!(
        c.err("subscribe", json!({"channel": "chat:secret"})).await,
        1403
    );
    let asked = backend.requests_to("/subscribe");
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[1].body["channel"], "chat:secret");
    assert_eq!(asked[1].body["user"], "42");
    // Refused, so not subscribed: a publication there is not delivered
    // and presence does not list the connection.
    assert_eq!(s.presence_users("chat:secret").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_publish_proxy_may_rewrite_the_data_or_refuse() {
    let backend = Backend::start(|r| match r.path.as_str() {
        "/connect" => connect_ok(r),
        _ if r.body["data"]["text"] == "spam" => {
            Reply::Json(json!({"error": {"code": 1400, "message": "no spam"}}))
        }
        _ => Reply::Json(json!({"result": {"data": {
            "text": r.body["data"]["text"].as_str().unwrap_or("").to_uppercase(),
            "checked": true,
        }}})),
    });
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--publish-proxy",
        &backend.url("/publish"),
    ]);
    let mut c = s.user().await;
    c.subscribe("chat:room").await;
    c.publish("chat:room", &json!({"text": "hello"})).await;
    let data = loop {
        let p = c.next_push().await;
        if let Some(publication) = p.get("pub") {
            break publication["data"].clone();
        }
    };
    assert_eq!(data, json!({"text": "HELLO", "checked": true}));
    assert_eq!(
        c.err(
            "publish",
            json!({"channel": "chat:room", "data": {"text": "spam"}})
        )
        .await,
        1400
    );
    let asked = backend.requests_to("/publish");
    assert_eq!(asked[0].body["channel"], "chat:room");
    assert_eq!(asked[0].body["data"], json!({"text": "hello"}));
}

#[tokio::test]
async fn a_refresh_proxy_extends_expire_at_or_ends_the_connection() {
    // Users named "stays" are extended by ten minutes, others expired.
    let backend = Backend::start(|r| match r.path.as_str() {
        "/connect" => {
            let user = r.body["data"]["user"].as_str().unwrap_or("42").to_owned();
            Reply::Json(json!({"result": {"user": user, "expire_at": unix_now() + 2}}))
        }
        _ if r.body["user"] == "stays" => {
            Reply::Json(json!({"result": {"expired": false, "expire_at": unix_now() + 600}}))
        }
        _ => Reply::Json(json!({"result": {"expired": true}})),
    });
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--refresh-proxy",
        &backend.url("/refresh"),
        "--refresh-grace",
        "1s",
    ]);
    let mut stays = s.client().await;
    let r = stays
        .ok("connect", json!({"data": {"user": "stays"}}))
        .await;
    assert_eq!(r["expires"], true, "{r}");
    let mut goes = s.client().await;
    goes.ok("connect", json!({"data": {"user": "goes"}})).await;
    assert_eq!(goes.close_code().await, Some(4005));
    // Past the first expire_at and its grace, the extended one is served.
    eventually(T, "the refresh proxy asked for user stays", || async {
        backend
            .requests_to("/refresh")
            .iter()
            .any(|r| r.body["user"] == "stays")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stays.subscribe("chat:after").await;
}

#[tokio::test]
async fn only_the_headers_named_in_proxy_headers_are_forwarded() {
    let backend = Backend::start(connect_ok);
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--proxy-headers",
        "cookie,X-Session",
    ]);
    let mut c = Client::connect_with_headers(
        s.server.addr(),
        Enc::Json,
        &[
            ("cookie", "session=abc"),
            ("x-session", "s1"),
            ("authorization", "Bearer secret"),
            ("x-other", "no"),
        ],
    )
    .await;
    c.ok("connect", json!({})).await;
    let req = &backend.requests_to("/connect")[0];
    assert_eq!(req.header("cookie"), Some("session=abc"), "{req:?}");
    assert_eq!(req.header("x-session"), Some("s1"), "{req:?}");
    assert_eq!(req.header("authorization"), None, "{req:?}");
    assert_eq!(req.header("x-other"), None, "{req:?}");
    // A client without them: none are sent.
    let mut bare = s.client().await;
    bare.ok("connect", json!({})).await;
    let req = &backend.requests_to("/connect")[1];
    assert_eq!(req.header("cookie"), None, "{req:?}");
}

#[tokio::test]
async fn beyond_proxy_max_in_flight_a_connect_gets_100_at_once() {
    let backend = Backend::start(|_| Reply::Hang(Duration::from_secs(30)));
    let s = ProxyServer::start(&[
        "--connect-proxy",
        &backend.url("/connect"),
        "--proxy-timeout",
        "5s",
        "--proxy-max-in-flight",
        "1",
    ]);
    let mut first = s.client().await;
    first.send(&json!({"id": 1, "connect": {}})).await;
    eventually(T, "the first connect reached the backend", || async {
        (!backend.requests_to("/connect").is_empty()).then_some(())
    })
    .await;
    let mut second = s.client().await;
    let started = Instant::now();
    assert_eq!(second.err("connect", json!({})).await, E_INTERNAL);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the second connect waited {took:?}: it should not wait for a slot"
    );
    assert_eq!(backend.requests_to("/connect").len(), 1);
    // The first one gets its own 100 at its timeout.
    let r = first.reply_to(1).await;
    assert_eq!(r["error"]["code"], E_INTERNAL, "{r}");
}

#[test]
fn misconfigured_proxies_fail_at_startup_with_a_message() {
    refuses_to_start(
        &["--connect-proxy", "ftp://127.0.0.1/connect"],
        &["connect_proxy", "http"],
    );
    refuses_to_start(
        &["--publish-proxy", "not a url"],
        &["publish_proxy", "not a url"],
    );
    refuses_to_start(
        &["--subscribe-proxy", "/relative/path"],
        &["subscribe_proxy"],
    );
    refuses_to_start(
        &[
            "--connect-proxy",
            "http://127.0.0.1:1/c",
            "--proxy-max-in-flight",
            "0",
        ],
        &["proxy_max_in_flight"],
    );
    refuses_to_start(
        &[
            "--connect-proxy",
            "http://127.0.0.1:1/c",
            "--proxy-headers",
            "cookie,content-length",
        ],
        &["proxy_headers", "content-length"],
    );
    refuses_to_start(
        &[
            "--connect-proxy",
            "http://127.0.0.1:1/c",
            "--proxy-timeout",
            "0s",
        ],
        &["proxy_timeout"],
    );
}

#[tokio::test]
async fn a_connect_proxy_alone_is_authentication() {
    // With a connect proxy and no token key, anonymous connections are
    // off by default (as with a key) and the secured namespace defaults
    // apply: clients may not publish.
    let backend = Backend::start(connect_ok);
    let s = ProxyServer::start(&["--connect-proxy", &backend.url("/connect")]);
    let mut c = s.user().await;
    c.subscribe("news").await;
    assert_eq!(
        c.err("publish", json!({"channel": "news", "data": 1}))
            .await,
        104
    );
}
