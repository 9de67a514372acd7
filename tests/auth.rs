//! Authentication against the real binary (docs/PROTOCOL.md
//! "Authentication", docs/OPERATIONS.md "Authentication"): a token minted
//! with `wavecast token` connects as its user and shows in presence;
//! commands before `connect` and a missing `connect`; every bad credential
//! with its code; expiry and refresh over real time with short lifetimes;
//! namespace permissions on every action; and the startup rules (no
//! authentication off loopback, a boolean permission, a key file that is
//! not a public key).
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test auth`.

use std::process::Command;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_tests::pubsub::{api, presence_users, Client, Enc, TempFile};
use wavecast_tests::{binary_path, refuses_to_start, Server};

const SECRET: &str = "integration test secret of 32 bytes";
const KEY: &str = "auth-test-api-key";

const CONFIG: &str = r#"
[namespaces.open]
allow_subscribe = "anonymous"
allow_publish = "anonymous"
allow_history = "anonymous"
allow_presence = "anonymous"

[namespaces.chat]
allow_publish = "subscriber"
join_leave = true

[namespaces.vip]
allow_subscribe = "token"

[namespaces.team]
user_limited = true

[namespaces.closed]
allow_subscribe = "none"
"#;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn token(user: &str, ttl: i64) -> String {
    sign(json!({"sub": user, "exp": unix_now() as i64 + ttl}), SECRET)
}

/// `wavecast token ARGS --token-hmac-secret SECRET`, its stdout.
fn mint(args: &[&str]) -> String {
    let out = Command::new(binary_path())
        .arg("token")
        .args(args)
        .args(["--token-hmac-secret", SECRET])
        .output()
        .expect("run wavecast token");
    assert!(
        out.status.success(),
        "wavecast token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct AuthServer {
    server: Server,
    _config: TempFile,
}

impl AuthServer {
    fn start(extra: &[&str]) -> AuthServer {
        let config = TempFile::new("toml", CONFIG);
        let path = config.path();
        let mut args = vec![
            "--config",
            path.as_str(),
            "--api-key",
            KEY,
            "--token-hmac-secret",
            SECRET,
        ];
        args.extend_from_slice(extra);
        AuthServer {
            server: Server::start(&args),
            _config: config,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(self.server.addr(), Enc::Json).await
    }

    async fn user(&self, token: &str) -> Client {
        let mut c = self.client().await;
        let r = c.ok("connect", json!({"token": token})).await;
        assert!(r["client"].is_string(), "{r}");
        c
    }

    async fn presence_users(&self, channel: &str) -> Vec<String> {
        presence_users(self.server.addr(), KEY, channel).await
    }
}

#[tokio::test]
async fn a_minted_token_connects_as_its_user_who_shows_in_presence() {
    let s = AuthServer::start(&[]);
    let minted = mint(&["--user", "42", "--ttl", "1h"]);
    let mut c = s.client().await;
    let r = c.ok("connect", json!({"token": minted})).await;
    assert_eq!(r["user"], "42");
    assert_eq!(r["expires"], true);
    let ttl = r["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    c.subscribe("chat:lobby").await;
    let mut other = s.user(&token("17", 600)).await;
    other.subscribe("chat:lobby").await;
    // The first one is told who joined (itself, then the other), with the
    // user from each token.
    let joins = [c.next_push().await, c.next_push().await];
    assert_eq!(joins[0]["join"]["user"], "42", "{joins:?}");
    assert_eq!(joins[1]["join"]["user"], "17", "{joins:?}");
    assert_eq!(s.presence_users("chat:lobby").await, vec!["17", "42"]);
    // Presence from a subscriber, over the WebSocket.
    let r = c.ok("presence", json!({"channel": "chat:lobby"})).await;
    assert_eq!(r["clients"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn commands_before_connect_get_112_and_no_connect_closes_4502() {
    let s = AuthServer::start(&["--connect-timeout", "1s"]);
    let mut c = s.client().await;
    assert_eq!(c.err("subscribe", json!({"channel": "news"})).await, 112);
    assert_eq!(c.close_code().await, Some(4502));
}

#[tokio::test]
async fn every_bad_credential_gets_its_code() {
    let s = AuthServer::start(&[]);
    let now = unix_now() as i64;
    // Expired: 111, and the connection stays for another try.
    let mut c = s.client().await;
    assert_eq!(
        c.err("connect", json!({"token": token("42", -60)})).await,
        111
    );
    c.ok("connect", json!({"token": token("42", 60)})).await;
    // Everything else: 112, then close 4503.
    let bad = [
        sign(json!({"sub": "42", "exp": now + 60}), "another secret"),
        sign(
            json!({"sub": "42", "exp": now + 60, "nbf": now + 600}),
            SECRET,
        ),
        sign(json!({"sub": "42"}), SECRET),
        sign(json!({"exp": now + 60}), SECRET),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.".to_owned(),
        "garbage".to_owned(),
        "x".repeat(9000),
    ];
    for t in bad {
        let mut c = s.client().await;
        assert_eq!(c.err("connect", json!({"token": t})).await, 112, "{t:.40}");
        assert_eq!(c.close_code().await, Some(4503), "{t:.40}");
    }
    // No token where one is required.
    let mut c = s.client().await;
    assert_eq!(c.err("connect", json!({})).await, 112);
    assert_eq!(c.close_code().await, Some(4503));
    // A token of the wrong type: 101, still open.
    let mut c = s.client().await;
    assert_eq!(c.err("connect", json!({"token": 5})).await, 101);
    c.ok("connect", json!({"token": token("42", 60)})).await;
}

#[tokio::test]
async fn an_unrefreshed_connection_closes_4005_after_exp_plus_grace_and_a_refreshed_one_stays() {
    let s = AuthServer::start(&["--token-leeway", "0s", "--refresh-grace", "1s"]);
    let exp = unix_now() + 2;
    let short = sign(json!({"sub": "42", "exp": exp}), SECRET);
    let mut stays = s.user(&short).await;
    let goes = s.user(&short).await;
    let r = stays
        .ok("refresh", json!({"token": token("42", 600)}))
        .await;
    assert_eq!(r["expires"], true, "{r}");
    // Another user's token on refresh: 112 and close 4503.
    let mut wrong = s.user(&token("42", 600)).await;
    assert_eq!(
        wrong
            .err("refresh", json!({"token": token("17", 600)}))
            .await,
        112
    );
    assert_eq!(wrong.close_code().await, Some(4503));

    assert_eq!(goes.close_code().await, Some(4005));
    let closed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    // Never before exp + grace (exp is whole seconds; the server closes at
    // exp + grace by its clock, read here a moment later).
    assert!(
        closed_at >= Duration::from_secs(exp + 1),
        "closed at {closed_at:?}, before exp + grace = {}",
        exp + 1
    );
    // The refreshed one is still served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stays.subscribe("chat:after").await;
}

#[tokio::test]
async fn namespace_permissions_apply_on_every_action() {
    let s = AuthServer::start(&["--allow-anonymous"]);
    let mut anon = s.client().await;
    let mut user = s.user(&token("42", 600)).await;
    // Anonymous: only the open namespace.
    anon.subscribe("open:lobby").await;
    anon.publish("open:lobby", &json!(1)).await;
    assert_eq!(
        anon.err("subscribe", json!({"channel": "chat:lobby"}))
            .await,
        104
    );
    // Secured defaults for channels without a namespace: publishing is
    // for the API, history and presence for subscribers.
    assert_eq!(
        user.err("publish", json!({"channel": "news", "data": 1}))
            .await,
        104
    );
    assert_eq!(user.err("history", json!({"channel": "news"})).await, 104);
    assert_eq!(user.err("presence", json!({"channel": "news"})).await, 104);
    user.subscribe("news").await;
    user.ok("history", json!({"channel": "news"})).await;
    user.ok("presence", json!({"channel": "news"})).await;
    let r = api(
        s.server.addr(),
        Some(KEY),
        "/api/publish",
        json!({"channel": "news", "data": {"from": "backend"}})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, data) = user.next_pub("news").await;
    assert_eq!(data, json!({"from": "backend"}));
    // chat: subscribers may publish.
    assert_eq!(
        user.err("publish", json!({"channel": "chat:x", "data": 1}))
            .await,
        104
    );
    user.subscribe("chat:x").await;
    user.publish("chat:x", &json!("hi")).await;
    // vip: a subscription token.
    assert_eq!(
        user.err("subscribe", json!({"channel": "vip:a"})).await,
        104
    );
    let other_channel = mint(&["--user", "42", "--channel", "vip:b"]);
    assert_eq!(
        user.err(
            "subscribe",
            json!({"channel": "vip:a", "token": other_channel})
        )
        .await,
        112
    );
    let sub = mint(&["--user", "42", "--channel", "vip:a"]);
    user.ok("subscribe", json!({"channel": "vip:a", "token": sub}))
        .await;
    // team: only the listed users.
    user.subscribe("team:room#42,17").await;
    assert_eq!(
        user.err("subscribe", json!({"channel": "team:room#17"}))
            .await,
        104
    );
    // closed: nobody.
    assert_eq!(
        user.err("subscribe", json!({"channel": "closed:x"})).await,
        104
    );
}

#[test]
fn misconfigurations_fail_at_startup_with_a_message() {
    // No authentication on a network address. (The config is refused
    // before anything binds: no traffic leaves loopback.)
    refuses_to_start(
        &["--listen", "0.0.0.0:0"],
        &["0.0.0.0:0", "token_hmac_secret", "--insecure"],
    );
    let boolean = TempFile::new("toml", "[namespaces.chat]\nallow_publish = true\n");
    refuses_to_start(
        &["--config", &boolean.path()],
        &["allow_publish", "\"anonymous\""],
    );
    let unknown = TempFile::new("toml", "[channels]\nallow_history = \"friends\"\n");
    refuses_to_start(
        &["--config", &unknown.path()],
        &["allow_history", "friends"],
    );
    refuses_to_start(&["--allow-anonymous=false"], &["allow_anonymous"]);
    let not_a_key = TempFile::new(
        "pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    refuses_to_start(
        &["--token-public-key", &not_a_key.path()],
        &["token_public_key"],
    );
}

/// The next `pub` push (join and leave pushes before it are skipped).
async fn next_pub_push(c: &mut Client) -> Value {
    loop {
        let p = c.next_push().await;
        if p.get("pub").is_some() {
            return p;
        }
    }
}

#[tokio::test]
async fn a_client_publication_names_its_sender_and_an_api_one_does_not() {
    let s = AuthServer::start(&[]);
    let mut ann = s.user(&token("42", 600)).await;
    ann.subscribe("chat:room").await;
    // The data may claim anything; the server says who spoke.
    ann.publish("chat:room", &json!({"text": "hi", "user": "bob"}))
        .await;
    let p = next_pub_push(&mut ann).await;
    assert_eq!(p["pub"]["info"]["user"], "42", "{p}");
    assert!(p["pub"]["info"]["client"].is_string(), "{p}");
    assert_eq!(p["pub"]["data"]["user"], "bob");
    let r = api(
        s.server.addr(),
        Some(KEY),
        "/api/publish",
        json!({"channel": "chat:room", "data": "from the backend"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = next_pub_push(&mut ann).await;
    assert!(p["pub"].get("info").is_none(), "{p}");
    // History keeps the sender.
    let h = ann.ok("history", json!({"channel": "chat:room"})).await;
    let pubs = h["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2, "{h}");
    assert_eq!(pubs[0]["info"]["user"], "42", "{h}");
    assert!(pubs[1].get("info").is_none(), "{h}");
}

#[tokio::test]
async fn a_tokens_channels_are_subscribed_on_connect_and_its_info_shows_in_presence() {
    let s = AuthServer::start(&[]);
    // vip needs a subscription token and closed admits nobody: both are
    // left out, the connect succeeds.
    let minted = mint(&[
        "--user",
        "42",
        "--channels",
        "chat:lobby,vip:x,closed:a",
        "--info",
        r#"{"name":"Ann"}"#,
    ]);
    let mut c = s.client().await;
    let r = c.ok("connect", json!({"token": minted})).await;
    let subs = r["subs"].as_object().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(subs.keys().collect::<Vec<_>>(), ["chat:lobby"], "{r}");
    assert_eq!(subs["chat:lobby"]["offset"], 0, "{r}");
    // Its own join, with the token's info, then the publications.
    let join = c.next_push().await;
    assert_eq!(join["join"]["user"], "42", "{join}");
    assert_eq!(join["join"]["conn_info"], json!({"name": "Ann"}), "{join}");
    let body = json!({"channel": "chat:lobby", "data": {"n": 1}});
    let r = api(
        s.server.addr(),
        Some(KEY),
        "/api/publish",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.next_pub("chat:lobby").await, (1, json!({"n": 1})));
    let r = api(
        s.server.addr(),
        Some(KEY),
        "/api/presence",
        json!({"channel": "chat:lobby"}).to_string().as_bytes(),
    )
    .await;
    let clients = r.json()["clients"].clone();
    let me = clients
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(me["conn_info"], json!({"name": "Ann"}), "{clients}");
    // The client may not subscribe to vip:x itself either.
    assert_eq!(c.err("subscribe", json!({"channel": "vip:x"})).await, 104);
}
