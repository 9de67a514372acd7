//! `Node::reconfigure`, the server's reload in the core: new rules judge
//! every command from then on, open connections keep their subscriptions
//! and authentication, new connections get the new connection settings,
//! and a fetched key set survives new token rules that still use one.

mod common;

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_core::auth::{AuthConfig, TokenConfig, Verifier};
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::node::{Ask, NodeConfig};
use wavecast_core::standalone::Standalone;

use common::harness::{at, Harness};
use common::keys::{jwks, with_kid};

const ORIGIN: u64 = 1_800_000_000;

fn token(secret: &[u8], user: &str) -> String {
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": ORIGIN + 3600}),
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// Open settings (anonymous, every permission), no heartbeat closes.
fn open() -> NodeConfig {
    NodeConfig {
        connection: ConnectionConfig {
            heartbeat_interval: Duration::from_secs(24 * 3600),
            ..ConnectionConfig::default()
        },
        client_prefix: "n0-".into(),
        ..NodeConfig::default()
    }
}

/// Token settings with `secret` (anonymous refused).
fn with_secret(secret: &[u8], jwks: bool) -> NodeConfig {
    let verifier = Verifier::new(TokenConfig {
        hmac_secret: Some(secret.to_vec()),
        leeway: Duration::ZERO,
        max_size: 8192,
        jwks,
        ..TokenConfig::default()
    })
    .unwrap();
    NodeConfig {
        auth: AuthConfig {
            verifier: Some(verifier),
            allow_anonymous: false,
            unix_origin_micros: ORIGIN * 1_000_000,
            ..AuthConfig::default()
        },
        ..open()
    }
}

fn publish(h: &mut Harness, t: u64, c: wavecast_core::node::ConnId, id: u64) -> Value {
    h.ask(
        at(t),
        c,
        json!({"id": id, "publish": {"channel": "news", "data": id}}),
    )
}

#[test]
fn new_permissions_judge_the_next_command_and_subscriptions_stay() {
    let mut h = Harness::new(Standalone::new(open(), 1));
    let c = h.open(at(0));
    h.ask(at(0), c, json!({"id": 1, "subscribe": {"channel": "news"}}));
    assert!(publish(&mut h, 0, c, 2)["publish"].is_object());
    let closed = NodeConfig {
        namespaces: Namespaces {
            default: NamespaceOptions {
                allow_publish: Permission::None,
                ..NamespaceOptions::default()
            },
            named: Default::default(),
        },
        ..open()
    };
    h.core.node.reconfigure(at(1), closed.clone());
    assert_eq!(h.core.node.config().namespaces, closed.namespaces);
    assert_eq!(publish(&mut h, 1, c, 3)["error"]["code"], 104);
    // The subscription made under the old rules stays.
    assert_eq!(h.core.node.subscribers("news"), 1);
    assert!(h.is_open(c));
    let d = h.open(at(1));
    assert_eq!(publish(&mut h, 1, d, 4)["error"]["code"], 104);
    // Back to open: the same connection may publish again, and its own
    // publication reaches it as a subscriber.
    h.core.node.reconfigure(at(2), open());
    h.send(
        at(2),
        c,
        json!({"id": 5, "publish": {"channel": "news", "data": 5}}),
    );
    let seen = h.seen(c).messages;
    assert!(
        seen.iter()
            .any(|m| m["id"] == 5 && m["publish"].is_object()),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m["push"]["pub"]["data"] == 5),
        "{seen:?}"
    );
}

#[test]
fn new_token_keys_admit_new_connections_and_keep_the_open_ones() {
    let mut h = Harness::new(Standalone::new(
        with_secret(b"secret A, long enough to use", false),
        1,
    ));
    let old = h.open(at(0));
    let r = h.connect(at(0), old, &token(b"secret A, long enough to use", "42"));
    assert_eq!(r["connect"]["user"], "42", "{r}");
    h.ask(
        at(0),
        old,
        json!({"id": 2, "subscribe": {"channel": "news"}}),
    );
    h.core
        .node
        .reconfigure(at(1), with_secret(b"secret B, long enough to use", false));
    // A token signed with the old key is refused now...
    let a = h.open(at(1));
    let r = h.connect(at(1), a, &token(b"secret A, long enough to use", "43"));
    assert_eq!(r["error"]["code"], 112, "{r}");
    // ...one with the new key is accepted...
    let b = h.open(at(1));
    let r = h.connect(at(1), b, &token(b"secret B, long enough to use", "44"));
    assert_eq!(r["connect"]["user"], "44", "{r}");
    // ...and the connection admitted with the old key keeps going.
    assert!(h.is_open(old));
    assert_eq!(h.core.node.subscribers("news"), 1);
    let r = h.ask(
        at(1),
        old,
        json!({"id": 3, "presence": {"channel": "news"}}),
    );
    assert!(r["presence"].is_object(), "{r}");
}

#[test]
fn anonymous_connections_open_before_authentication_was_turned_on_stay() {
    let mut h = Harness::new(Standalone::new(open(), 1));
    let anon = h.open(at(0));
    h.ask(
        at(0),
        anon,
        json!({"id": 1, "subscribe": {"channel": "news"}}),
    );
    h.core
        .node
        .reconfigure(at(1), with_secret(b"secret B, long enough to use", false));
    assert!(h.is_open(anon));
    assert_eq!(h.core.node.subscribers("news"), 1);
    // A new connection must connect now.
    let c = h.open(at(1));
    let r = h.ask(
        at(1),
        c,
        json!({"id": 1, "subscribe": {"channel": "other"}}),
    );
    assert_eq!(r["error"]["code"], 112, "{r}");
}

#[test]
fn a_lower_subscription_limit_refuses_the_next_subscribe_only() {
    let mut h = Harness::new(Standalone::new(open(), 1));
    let c = h.open(at(0));
    for (i, ch) in ["a", "b", "c"].into_iter().enumerate() {
        h.ask(at(0), c, json!({"id": i + 1, "subscribe": {"channel": ch}}));
    }
    h.core.node.reconfigure(
        at(1),
        NodeConfig {
            max_subscriptions: 2,
            ..open()
        },
    );
    assert_eq!(h.core.node.subscriptions(c).len(), 3);
    let r = h.ask(at(1), c, json!({"id": 9, "subscribe": {"channel": "d"}}));
    assert_eq!(r["error"]["code"], 107, "{r}");
    assert_eq!(h.core.node.subscriptions(c).len(), 3);
}

#[test]
fn connection_settings_apply_to_new_connections_only() {
    let mut h = Harness::new(Standalone::new(open(), 1));
    let old = h.open(at(0));
    h.core.node.reconfigure(
        at(1),
        NodeConfig {
            connection: ConnectionConfig {
                max_message_size: 200,
                ..open().connection
            },
            ..open()
        },
    );
    let new = h.open(at(1));
    let big = json!({"id": 7, "publish": {"channel": "news", "data": "x".repeat(400)}});
    let r = h.ask(at(1), old, big.clone());
    assert!(r["publish"].is_object(), "{r}");
    h.send(at(1), new, big);
    assert_eq!(h.seen(new).close, Some(1009));
}

#[test]
fn a_fetched_key_set_survives_new_token_rules_that_use_one() {
    let mut core = Standalone::new(with_secret(b"secret A, long enough to use", true), 1);
    core.node
        .handle_keys(at(0), Some(&jwks(&[("k1", Algorithm::ES256)])));
    let mut h = Harness::new(core);
    h.core
        .node
        .reconfigure(at(1), with_secret(b"secret B, long enough to use", true));
    let c = h.open(at(1));
    let claims = json!({"sub": "42", "exp": ORIGIN + 600});
    let r = h.connect(at(1), c, &with_kid(Algorithm::ES256, "k1", &claims));
    assert_eq!(r["connect"]["user"], "42", "{r}");
    let asked: Vec<Ask> = std::iter::from_fn(|| h.core.node.poll_ask()).collect();
    assert!(
        asked.is_empty(),
        "the key set was not fetched again: {asked:?}"
    );
}
