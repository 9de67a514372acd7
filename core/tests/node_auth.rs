//! Authentication and permissions in the node, driven with the clock in
//! hand (docs/PROTOCOL.md "Authentication", docs/OPERATIONS.md
//! "Authentication"): `connect` and its codes, the connect timeout, token
//! expiry at `exp + refresh_grace` and never before, `refresh`, anonymous
//! connections where allowed, and every namespace permission through the
//! node's commands; nothing of a refused or closed connection stays behind.

mod common;

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_core::auth::{AuthConfig, TokenConfig, Verifier};
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::node::NodeConfig;
use wavecast_core::standalone::Standalone;

use common::harness::{at, Harness};

const SECRET: &[u8] = b"node auth test secret, 32 bytes!";
/// The Unix time of the node's `Timestamp::ZERO`, in seconds.
const ORIGIN: u64 = 1_800_000_000;

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// A connection token for `user` expiring `ttl` seconds after the origin.
fn user_token(user: &str, ttl: u64) -> String {
    token(json!({"sub": user, "exp": ORIGIN + ttl}))
}

fn namespaces() -> Namespaces {
    let mut n = Namespaces {
        default: NamespaceOptions::secured(),
        named: Default::default(),
    };
    n.named.insert("open".into(), NamespaceOptions::default());
    n.named.insert(
        "vip".into(),
        NamespaceOptions {
            allow_subscribe: Permission::Token,
            ..NamespaceOptions::secured()
        },
    );
    n.named.insert(
        "team".into(),
        NamespaceOptions {
            user_limited: true,
            ..NamespaceOptions::secured()
        },
    );
    n
}

fn node(allow_anonymous: bool) -> Standalone {
    let verifier = Verifier::new(TokenConfig {
        hmac_secret: Some(SECRET.to_vec()),
        leeway: Duration::ZERO,
        max_size: 8192,
        ..TokenConfig::default()
    })
    .unwrap();
    Standalone::new(config(allow_anonymous, verifier), 7)
}

/// The node's settings in these tests: `namespaces()`, a verifier, no
/// heartbeat closes.
pub fn config(allow_anonymous: bool, verifier: Verifier) -> NodeConfig {
    NodeConfig {
        namespaces: namespaces(),
        // No heartbeat closes during these tests' hours of node time
        // (the test clients do not answer pings).
        connection: ConnectionConfig {
            heartbeat_interval: Duration::from_secs(24 * 3600),
            ..ConnectionConfig::default()
        },
        auth: AuthConfig {
            verifier: Some(verifier),
            allow_anonymous,
            connect_timeout: Duration::from_secs(10),
            refresh_grace: Duration::from_secs(30),
            unix_origin_micros: ORIGIN * 1_000_000,
        },
        ..NodeConfig::default()
    }
}

#[test]
fn a_user_connects_with_a_token_and_presence_shows_the_user() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    let r = h.connect(at(0), c, &user_token("42", 600));
    assert_eq!(r["connect"]["user"], "42");
    assert_eq!(r["connect"]["expires"], true);
    assert_eq!(r["connect"]["ttl"], 600);
    assert_eq!(
        r["connect"]["client"],
        json!(h.core.node.client_id(c)),
        "{r}"
    );
    let r = h.ask(at(1), c, json!({"id": 2, "subscribe": {"channel": "news"}}));
    assert!(r["subscribe"]["epoch"].is_string(), "{r}");
    let r = h.ask(at(1), c, json!({"id": 3, "presence": {"channel": "news"}}));
    let clients = r["presence"]["clients"].as_object().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients.values().next().unwrap()["user"], "42");
    // A second connect is refused; the connection stays.
    assert_eq!(
        h.error_code(
            at(1),
            c,
            json!({"id": 4, "connect": {"token": user_token("42", 600)}})
        ),
        101
    );
    assert!(h.is_open(c));
}

#[test]
fn commands_before_connect_get_112_and_no_connect_closes_4502_at_the_timeout() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    assert_eq!(
        h.error_code(at(1), c, json!({"id": 1, "subscribe": {"channel": "news"}})),
        112
    );
    assert_eq!(h.core.node.subscribers("news"), 0);
    h.tick(at(10) - Duration::from_micros(1));
    assert!(h.is_open(c));
    assert_eq!(h.seen(c).close, None);
    h.tick(at(10));
    assert_eq!(h.seen(c).close, Some(4502));
    h.core.node.handle_eof(at(10), c);
    assert!(!h.is_open(c));
    assert_eq!(h.core.node.timers(), 0);
}

#[test]
fn an_expired_token_gets_111_and_may_be_followed_by_a_good_one() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(100));
    let r = h.connect(at(100), c, &user_token("42", 50));
    assert_eq!(r["error"]["code"], 111, "{r}");
    assert!(h.is_open(c));
    let r = h.connect(at(101), c, &user_token("42", 700));
    assert_eq!(r["connect"]["ttl"], 599, "{r}");
}

#[test]
fn bad_credentials_get_112_then_close_4503() {
    for bad in [
        json!({"token": "not a jwt"}),
        json!({"token": token(json!({"sub": "42"}))}),
        json!({"token": encode(
            &Header::default(),
            &json!({"sub": "42", "exp": ORIGIN + 60}),
            &EncodingKey::from_secret(b"another secret").unwrap(),
        ).unwrap()}),
        json!({}),
    ] {
        let mut h = Harness::new(node(false));
        let c = h.open(at(0));
        let r = h.ask(at(0), c, json!({"id": 1, "connect": bad}));
        assert_eq!(r["error"]["code"], 112, "{r}");
        assert_eq!(h.seen(c).close, Some(4503), "{bad}");
    }
    // A token of the wrong type is a malformed command: 101, still open.
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    assert_eq!(
        h.error_code(at(0), c, json!({"id": 1, "connect": {"token": null}})),
        101
    );
    assert!(h.is_open(c));
    assert_eq!(h.seen(c).close, None);
}

#[test]
fn an_unrefreshed_connection_closes_4005_at_exp_plus_grace_and_never_before() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    h.connect(at(0), c, &user_token("42", 60));
    h.tick(at(89));
    h.tick(at(90) - Duration::from_micros(1));
    assert!(h.is_open(c));
    assert_eq!(h.seen(c).close, None);
    h.tick(at(90));
    assert_eq!(h.seen(c).close, Some(4005));
}

#[test]
fn refresh_moves_the_expiry_and_refuses_another_user() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    h.connect(at(0), c, &user_token("42", 60));
    let r = h.ask(
        at(50),
        c,
        json!({"id": 2, "refresh": {"token": user_token("42", 120)}}),
    );
    assert_eq!(r["refresh"], json!({"expires": true, "ttl": 70}), "{r}");
    h.tick(at(100));
    assert!(h.is_open(c));
    h.tick(at(150) - Duration::from_micros(1));
    assert_eq!(h.seen(c).close, None);
    h.tick(at(150));
    assert_eq!(h.seen(c).close, Some(4005));

    let d = h.open(at(0));
    h.connect(at(0), d, &user_token("42", 60));
    let r = h.ask(
        at(1),
        d,
        json!({"id": 2, "refresh": {"token": user_token("17", 60)}}),
    );
    assert_eq!(r["error"]["code"], 112, "{r}");
    assert_eq!(h.seen(d).close, Some(4503));
    // An expired refresh token: 111, the connection stays.
    let e = h.open(at(0));
    h.connect(at(0), e, &user_token("42", 60));
    assert_eq!(
        h.error_code(
            at(30),
            e,
            json!({"id": 2, "refresh": {"token": user_token("42", 20)}})
        ),
        111
    );
    assert!(h.is_open(e));
}

#[test]
fn where_anonymous_is_allowed_a_first_command_connects_anonymously() {
    let mut h = Harness::new(node(true));
    let c = h.open(at(0));
    let r = h.ask(
        at(0),
        c,
        json!({"id": 1, "subscribe": {"channel": "open:lobby"}}),
    );
    assert!(r["subscribe"].is_object(), "{r}");
    let r = h.ask(
        at(0),
        c,
        json!({"id": 2, "presence": {"channel": "open:lobby"}}),
    );
    let clients = r["presence"]["clients"].as_object().unwrap();
    assert_eq!(clients.values().next().unwrap()["user"], "");
    // No connect timeout for it any more.
    h.tick(at(60));
    assert!(h.is_open(c));
    // An explicit anonymous connect.
    let d = h.open(at(0));
    let r = h.ask(at(0), d, json!({"id": 1, "connect": {}}));
    assert_eq!(
        r["connect"],
        json!({"client": h.core.node.client_id(d), "user": "", "expires": false})
    );
}

#[test]
fn namespace_permissions_apply_to_every_command() {
    let mut h = Harness::new(node(true));
    let anon = h.open(at(0));
    let user = h.open(at(0));
    h.connect(at(0), user, &user_token("42", 600));
    // Secured defaults: subscribing needs a user.
    assert_eq!(
        h.error_code(
            at(1),
            anon,
            json!({"id": 1, "subscribe": {"channel": "news"}})
        ),
        104
    );
    // History and presence are for subscribers; publishing for the API.
    for cmd in [
        json!({"id": 2, "history": {"channel": "news"}}),
        json!({"id": 3, "presence": {"channel": "news"}}),
        json!({"id": 4, "publish": {"channel": "news", "data": 1}}),
    ] {
        assert_eq!(h.error_code(at(1), user, cmd.clone()), 104, "{cmd}");
    }
    h.ask(
        at(1),
        user,
        json!({"id": 5, "subscribe": {"channel": "news"}}),
    );
    assert!(h
        .ask(
            at(1),
            user,
            json!({"id": 6, "history": {"channel": "news"}})
        )
        .get("history")
        .is_some());
    assert_eq!(
        h.error_code(
            at(1),
            user,
            json!({"id": 7, "publish": {"channel": "news", "data": 1}})
        ),
        104
    );
    // A token namespace: no token 104; a token for it admits; one for
    // another channel or user is 112; an expired one 111.
    let sub_token = |channel: &str, user: &str, ttl: u64| {
        token(json!({"sub": user, "channel": channel, "exp": ORIGIN + ttl}))
    };
    assert_eq!(
        h.error_code(
            at(1),
            user,
            json!({"id": 8, "subscribe": {"channel": "vip:a"}})
        ),
        104
    );
    for (t, code) in [
        (sub_token("vip:b", "42", 600), 112),
        (sub_token("vip:a", "17", 600), 112),
        (user_token("42", 600), 112),
        (sub_token("vip:a", "42", 0), 111),
    ] {
        assert_eq!(
            h.error_code(
                at(1),
                user,
                json!({"id": 9, "subscribe": {"channel": "vip:a", "token": t}})
            ),
            code
        );
    }
    let r = h.ask(
        at(1),
        user,
        json!({"id": 10, "subscribe": {"channel": "vip:a", "token": sub_token("vip:a", "42", 600)}}),
    );
    assert!(r["subscribe"].is_object(), "{r}");
    // User-limited channels.
    let r = h.ask(
        at(1),
        user,
        json!({"id": 11, "subscribe": {"channel": "team:x#42,17"}}),
    );
    assert!(r["subscribe"].is_object(), "{r}");
    assert_eq!(
        h.error_code(
            at(1),
            user,
            json!({"id": 12, "subscribe": {"channel": "team:x#17"}})
        ),
        104
    );
    // Nothing was subscribed by a refused command.
    assert_eq!(h.core.node.subscriptions(anon), Vec::<String>::new());
    assert_eq!(h.core.node.subscribers("vip:b"), 0);
}

#[test]
fn nothing_of_an_authenticated_connection_outlives_it() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    assert_eq!(h.core.node.timers(), 2, "heartbeat and connect timeout");
    h.connect(at(0), c, &user_token("42", 600));
    h.ask(at(0), c, json!({"id": 2, "subscribe": {"channel": "news"}}));
    h.core.node.handle_eof(at(1), c);
    h.core.pump(at(1));
    while h.core.node.poll_finished().is_some() {}
    assert_eq!(h.core.node.connections(), 0);
    assert_eq!(h.core.node.timers(), 0);
    assert_eq!(h.core.node.requests_in_flight(), 0);
    assert_eq!(h.core.node.subscribers("news"), 0);
}

#[test]
fn a_subscription_token_ends_its_subscription_at_exp_plus_grace_unless_refreshed() {
    let mut h = Harness::new(node(false));
    let c = h.open(at(0));
    h.connect(at(0), c, &user_token("42", 3600));
    let sub = |channel: &str, ttl: u64| {
        token(json!({"sub": "42", "channel": channel, "exp": ORIGIN + ttl}))
    };
    for (i, ch) in ["vip:a", "vip:b"].into_iter().enumerate() {
        let r = h.ask(
            at(0),
            c,
            json!({"id": 10 + i, "subscribe": {"channel": ch, "token": sub(ch, 60)}}),
        );
        assert!(r["subscribe"].is_object(), "{r}");
    }
    // vip:b is refreshed; a token for another channel is refused (112) and
    // changes nothing; not subscribed is 106.
    let r = h.ask(
        at(50),
        c,
        json!({"id": 20, "sub_refresh": {"channel": "vip:b", "token": sub("vip:b", 600)}}),
    );
    assert_eq!(
        r["sub_refresh"],
        json!({"expires": true, "ttl": 550}),
        "{r}"
    );
    assert_eq!(
        h.error_code(
            at(50),
            c,
            json!({"id": 21, "sub_refresh": {"channel": "vip:a", "token": sub("vip:b", 600)}})
        ),
        112
    );
    assert_eq!(
        h.error_code(
            at(50),
            c,
            json!({"id": 22, "sub_refresh": {"channel": "vip:c", "token": sub("vip:c", 600)}})
        ),
        106
    );
    h.tick(at(90) - Duration::from_micros(1));
    assert!(h.seen(c).messages.is_empty());
    h.tick(at(90));
    let seen = h.seen(c);
    assert_eq!(
        seen.messages,
        vec![json!({"push": {"channel": "vip:a", "unsubscribe":
            {"code": 2501, "reason": "subscription token expired"}}})]
    );
    assert_eq!(h.core.node.subscriptions(c), vec!["vip:b".to_string()]);
    assert!(h.is_open(c), "only the subscription ends");
    // Unsubscribing clears its deadline.
    h.ask(
        at(91),
        c,
        json!({"id": 30, "unsubscribe": {"channel": "vip:b"}}),
    );
    h.tick(at(700));
    assert!(h.seen(c).messages.is_empty());
}

#[test]
fn on_an_open_server_connect_is_optional_and_answers_the_client_id() {
    let mut h = Harness::new(node(true));
    h.core = Standalone::new(NodeConfig::default(), 3);
    let c = h.open(at(0));
    let r = h.ask(at(0), c, json!({"id": 1, "connect": {}}));
    assert_eq!(
        r["connect"],
        json!({"client": h.core.node.client_id(c), "user": "", "expires": false})
    );
    assert_eq!(
        h.error_code(at(0), c, json!({"id": 2, "connect": {}})),
        101,
        "already connected"
    );
    // Without connect, commands work at once, and then connect is late.
    let d = h.open(at(0));
    let r = h.ask(at(0), d, json!({"id": 1, "subscribe": {"channel": "news"}}));
    assert!(r["subscribe"].is_object(), "{r}");
    assert_eq!(h.error_code(at(0), d, json!({"id": 2, "connect": {}})), 101);
    assert_eq!(
        h.core.node.timers(),
        2,
        "heartbeats only: no connect timeout"
    );
}
