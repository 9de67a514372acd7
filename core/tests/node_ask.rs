//! What the node asks outside and what it does with the answers, driven
//! with the clock in hand (docs/PROTOCOL.md "Authentication",
//! docs/OPERATIONS.md "Backend proxies"): the connect, refresh, subscribe
//! and publish proxies with each answer shape, a connection held while it
//! waits (its pipelined commands run after the answer, as the user the
//! backend named), a token's `channels` subscribed by the server with the
//! same permission checks and listed in the connect reply before their
//! pushes, `info` shown in presence, and a token naming an unknown key id
//! held until the key set is fetched again.

mod common;

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wavecast_core::auth::{AuthConfig, TokenConfig, Verifier};
use wavecast_core::backbone::{BackboneCommand, NodeId};
use wavecast_core::connection::ConnectionConfig;
use wavecast_core::frame::OpCode;
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::node::{Ask, ConnId, NodeConfig};
use wavecast_core::protocol::Payload;
use wavecast_core::proxy::{AskId, Proxies, ProxyAnswer, ProxyKind};
use wavecast_core::standalone::Standalone;
use wavecast_core::Timestamp;

use common::harness::{at, Harness};
use common::keys::{jwks, with_kid};

const SECRET: &[u8] = b"node ask test secret, 32 bytes!!";
const ORIGIN: u64 = 1_800_000_000;

fn namespaces() -> Namespaces {
    let mut n = Namespaces {
        default: NamespaceOptions {
            presence: true,
            ..NamespaceOptions::secured()
        },
        named: Default::default(),
    };
    n.named.insert(
        "vip".into(),
        NamespaceOptions {
            allow_subscribe: Permission::Token,
            ..NamespaceOptions::secured()
        },
    );
    n.named.insert(
        "chat".into(),
        NamespaceOptions {
            presence: true,
            history_size: 10,
            history_ttl: Duration::from_secs(60),
            allow_publish: Permission::Subscriber,
            ..NamespaceOptions::secured()
        },
    );
    n
}

fn config(proxies: Proxies, token: TokenConfig) -> NodeConfig {
    NodeConfig {
        namespaces: namespaces(),
        connection: ConnectionConfig {
            heartbeat_interval: Duration::from_secs(24 * 3600),
            ..ConnectionConfig::default()
        },
        auth: AuthConfig {
            verifier: Some(Verifier::new(token).unwrap()),
            allow_anonymous: false,
            connect_timeout: Duration::from_secs(10),
            refresh_grace: Duration::from_secs(30),
            unix_origin_micros: ORIGIN * 1_000_000,
        },
        proxies,
        ..NodeConfig::default()
    }
}

fn hmac() -> TokenConfig {
    TokenConfig {
        hmac_secret: Some(SECRET.to_vec()),
        leeway: Duration::ZERO,
        max_size: 8192,
        ..TokenConfig::default()
    }
}

fn harness(proxies: Proxies) -> Harness {
    Harness::new(Standalone::new(config(proxies, hmac()), 3))
}

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// Every ask the node has queued.
fn asks(h: &mut Harness) -> Vec<Ask> {
    std::iter::from_fn(|| h.core.node.poll_ask()).collect()
}

/// The one proxy ask queued: its id, kind and request body as JSON.
fn one_proxy(h: &mut Harness) -> (AskId, ConnId, ProxyKind, Value) {
    match &asks(h)[..] {
        [Ask::Proxy {
            ask,
            conn,
            kind,
            request,
        }] => (
            *ask,
            *conn,
            *kind,
            serde_json::from_slice(&request.to_json()).unwrap(),
        ),
        other => panic!("expected one proxy ask, got {other:?}"),
    }
}

fn result(v: Value) -> ProxyAnswer {
    ProxyAnswer::Result(Payload::from_json(v.to_string().as_bytes()).unwrap())
}

fn answer(h: &mut Harness, now: Timestamp, ask: AskId, a: ProxyAnswer) {
    h.core.node.handle_proxy(now, ask, a);
    h.core.pump(now);
}

fn reply_to(messages: &[Value], id: u64) -> Value {
    messages
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no reply {id} in {messages:?}"))
        .clone()
}

const CONNECT_PROXY: Proxies = Proxies {
    connect: true,
    refresh: false,
    subscribe: false,
    publish: false,
};

#[test]
fn a_proxied_connect_holds_pipelined_commands_until_the_backend_names_the_user() {
    let mut h = harness(CONNECT_PROXY);
    let c = h.open(at(0));
    // connect and subscribe in one read: the subscribe must be handled as
    // the user the backend names, so after its answer.
    h.send(
        at(0),
        c,
        json!({"id": 1, "connect": {"data": {"session": "s1"}}}),
    );
    h.send(at(0), c, json!({"id": 2, "subscribe": {"channel": "news"}}));
    assert!(h.seen(c).messages.is_empty(), "nothing answered yet");
    let (ask, conn, kind, body) = one_proxy(&mut h);
    assert_eq!((conn, kind), (c, ProxyKind::Connect));
    assert_eq!(body["client"], json!(h.core.node.client_id(c)));
    assert_eq!(body["data"], json!({"session": "s1"}));
    assert_eq!(body["transport"], "websocket");
    answer(
        &mut h,
        at(0),
        ask,
        result(json!({"user": "42", "info": {"name": "Ann"}, "data": {"hello": 1}})),
    );
    let seen = h.seen(c).messages;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["id"], 1, "the connect reply comes first: {seen:?}");
    assert_eq!(seen[0]["connect"]["user"], "42");
    assert_eq!(seen[0]["connect"]["expires"], false);
    assert_eq!(seen[0]["connect"]["data"], json!({"hello": 1}));
    assert!(seen[1]["subscribe"]["epoch"].is_string(), "{seen:?}");
    let r = h.ask(at(1), c, json!({"id": 3, "presence": {"channel": "news"}}));
    let me = r["presence"]["clients"][h.core.node.client_id(c)].clone();
    assert_eq!(me["user"], "42", "{r}");
    assert_eq!(me["conn_info"], json!({"name": "Ann"}), "{r}");
}

#[test]
fn a_backend_error_reaches_the_client_and_a_down_backend_is_a_temporary_error() {
    let mut h = harness(CONNECT_PROXY);
    let c = h.open(at(0));
    h.send(at(0), c, json!({"id": 1, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    answer(
        &mut h,
        at(0),
        ask,
        ProxyAnswer::Error {
            code: 1001,
            message: "no session".into(),
        },
    );
    let r = reply_to(&h.seen(c).messages, 1);
    assert_eq!(r["error"], json!({"code": 1001, "message": "no session"}));
    assert!(h.is_open(c), "an error leaves the connection open");
    // Down, timed out, or not one of the three shapes: 100, retry.
    h.send(at(1), c, json!({"id": 2, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    answer(
        &mut h,
        at(1),
        ask,
        ProxyAnswer::Unavailable("timeout".into()),
    );
    let r = reply_to(&h.seen(c).messages, 2);
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert!(h.is_open(c));
    // A code of wavecast's own range is not the backend's to send.
    h.send(at(2), c, json!({"id": 3, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    let code = 112;
    let message = "x".into();
    answer(&mut h, at(2), ask, ProxyAnswer::Error { code, message });
    assert_eq!(reply_to(&h.seen(c).messages, 3)["error"]["code"], 100);
    // Still not connected: other commands get 112.
    assert_eq!(
        h.error_code(at(3), c, json!({"id": 4, "subscribe": {"channel": "news"}})),
        112
    );
    // A disconnect closes with the backend's code.
    h.send(at(4), c, json!({"id": 5, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    let reason = "banned".into();
    answer(
        &mut h,
        at(4),
        ask,
        ProxyAnswer::Disconnect { code: 4600, reason },
    );
    assert_eq!(h.seen(c).close, Some(4600));
}

#[test]
fn a_token_still_connects_beside_the_connect_proxy_and_no_answer_is_lost_on_close() {
    let mut h = harness(CONNECT_PROXY);
    let c = h.open(at(0));
    let t = token(json!({"sub": "7", "exp": ORIGIN + 600}));
    assert_eq!(h.connect(at(0), c, &t)["connect"]["user"], "7");
    assert!(asks(&mut h).is_empty(), "a token needs no backend");
    // A connection that ends while waiting: the late answer is dropped.
    let d = h.open(at(0));
    h.send(at(0), d, json!({"id": 1, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    h.core.node.handle_eof(at(1), d);
    h.core.pump(at(1));
    assert!(!h.is_open(d));
    answer(&mut h, at(2), ask, result(json!({"user": "9"})));
    assert_eq!(h.core.node.connections(), 1);
}

#[test]
fn the_refresh_proxy_extends_a_connection_and_a_failing_one_ends_it_after_the_grace() {
    let proxies = Proxies {
        refresh: true,
        ..CONNECT_PROXY
    };
    let mut h = harness(proxies);
    let c = h.open(at(0));
    h.send(at(0), c, json!({"id": 1, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    let expire_at = ORIGIN + 60;
    answer(
        &mut h,
        at(0),
        ask,
        result(json!({"user": "42", "expire_at": expire_at})),
    );
    assert_eq!(reply_to(&h.seen(c).messages, 1)["connect"]["ttl"], 60);
    h.tick(at(59));
    assert!(asks(&mut h).is_empty(), "not before the expiry");
    h.tick(at(60));
    let (ask, _, kind, body) = one_proxy(&mut h);
    assert_eq!(kind, ProxyKind::Refresh);
    assert_eq!(body["user"], "42");
    answer(
        &mut h,
        at(61),
        ask,
        result(json!({"expired": false, "expire_at": ORIGIN + 120})),
    );
    h.tick(at(95));
    assert!(h.is_open(c), "extended past 60 + 30");
    assert!(asks(&mut h).is_empty());
    // At 120 it is asked again; a backend that keeps failing is asked
    // every 5 s, and the connection closes 4005 at 120 + 30, not before.
    h.tick(at(120));
    let (ask, ..) = one_proxy(&mut h);
    answer(
        &mut h,
        at(120),
        ask,
        ProxyAnswer::Unavailable("down".into()),
    );
    for t in [125, 130, 135, 140, 145] {
        h.tick(at(t));
        let (ask, ..) = one_proxy(&mut h);
        answer(&mut h, at(t), ask, ProxyAnswer::Unavailable("down".into()));
        assert!(h.is_open(c));
        assert_eq!(h.seen(c).close, None, "at {t}");
    }
    h.tick(at(150) - Duration::from_micros(1));
    assert_eq!(h.seen(c).close, None);
    h.tick(at(150));
    assert_eq!(h.seen(c).close, Some(4005));
}

#[test]
fn the_refresh_proxy_may_end_a_connection_at_once() {
    let proxies = Proxies {
        refresh: true,
        ..CONNECT_PROXY
    };
    let mut h = harness(proxies);
    let c = h.open(at(0));
    h.send(at(0), c, json!({"id": 1, "connect": {}}));
    let (ask, ..) = one_proxy(&mut h);
    answer(
        &mut h,
        at(0),
        ask,
        result(json!({"user": "42", "expire_at": ORIGIN + 10})),
    );
    h.tick(at(10));
    let (ask, ..) = one_proxy(&mut h);
    answer(&mut h, at(10), ask, result(json!({"expired": true})));
    assert_eq!(h.seen(c).close, Some(4005));
}

#[test]
fn the_subscribe_and_publish_proxies_may_refuse_and_rewrite() {
    let proxies = Proxies {
        connect: false,
        refresh: false,
        subscribe: true,
        publish: true,
    };
    let mut h = harness(proxies);
    let c = h.open(at(0));
    let t = token(json!({"sub": "42", "exp": ORIGIN + 600}));
    h.connect(at(0), c, &t);
    // Refused by policy first: no backend call for what the namespace
    // forbids (vip needs a subscription token).
    assert_eq!(
        h.error_code(
            at(0),
            c,
            json!({"id": 2, "subscribe": {"channel": "vip:a"}})
        ),
        104
    );
    assert!(asks(&mut h).is_empty());
    h.send(
        at(0),
        c,
        json!({"id": 3, "subscribe": {"channel": "chat:a"}}),
    );
    let (ask, _, kind, body) = one_proxy(&mut h);
    assert_eq!(kind, ProxyKind::Subscribe);
    assert_eq!(
        (body["channel"].clone(), body["user"].clone()),
        (json!("chat:a"), json!("42"))
    );
    answer(
        &mut h,
        at(0),
        ask,
        ProxyAnswer::Error {
            code: 403,
            message: "not a member".into(),
        },
    );
    assert_eq!(reply_to(&h.seen(c).messages, 3)["error"]["code"], 403);
    assert_eq!(h.core.node.subscribers("chat:a"), 0);
    h.send(
        at(1),
        c,
        json!({"id": 4, "subscribe": {"channel": "chat:a"}}),
    );
    let (ask, ..) = one_proxy(&mut h);
    answer(&mut h, at(1), ask, result(json!({})));
    assert!(reply_to(&h.seen(c).messages, 4)["subscribe"]["epoch"].is_string());
    h.send(
        at(2),
        c,
        json!({"id": 5, "publish": {"channel": "chat:a", "data": {"text": "hi"}}}),
    );
    let (ask, _, kind, body) = one_proxy(&mut h);
    assert_eq!(kind, ProxyKind::Publish);
    assert_eq!(body["data"], json!({"text": "hi"}));
    answer(
        &mut h,
        at(2),
        ask,
        result(json!({"data": {"text": "hi", "checked": true}})),
    );
    let seen = h.seen(c).messages;
    assert_eq!(reply_to(&seen, 5)["publish"]["offset"], 1);
    let push = seen.iter().find(|m| m["push"]["pub"].is_object()).unwrap();
    assert_eq!(
        push["push"]["pub"]["data"],
        json!({"text": "hi", "checked": true})
    );
    assert_eq!(push["push"]["pub"]["info"]["user"], "42");
}

/// A connection of user 42 whose token claims `channels`, with `info`.
fn connect_with_channels(h: &mut Harness, c: ConnId, channels: &[&str]) -> Vec<Value> {
    let t = token(json!({
        "sub": "42", "exp": ORIGIN + 600, "channels": channels, "info": {"name": "Ann"}
    }));
    h.send(at(0), c, json!({"id": 1, "connect": {"token": t}}));
    h.seen(c).messages
}

#[test]
fn a_tokens_channels_are_subscribed_by_the_server_with_the_same_permission_checks() {
    let mut h = harness(Proxies::default());
    // Something to recover in chat:a: the API publishes twice first.
    let api = h.open(at(0));
    let t = token(json!({"sub": "1", "exp": ORIGIN + 600}));
    h.connect(at(0), api, &t);
    h.ask(
        at(0),
        api,
        json!({"id": 2, "subscribe": {"channel": "chat:a"}}),
    );
    h.ask(
        at(0),
        api,
        json!({"id": 3, "publish": {"channel": "chat:a", "data": 1}}),
    );
    let c = h.open(at(0));
    // vip:x needs a subscription token and chat:a#9 names no user: both left
    // out; the connect succeeds.
    let seen = connect_with_channels(&mut h, c, &["news", "vip:x", "chat:a", "news"]);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let subs = seen[0]["connect"]["subs"].as_object().unwrap().clone();
    assert_eq!(
        subs.keys().collect::<Vec<_>>(),
        ["chat:a", "news"],
        "{seen:?}"
    );
    assert_eq!(subs["chat:a"]["offset"], 1);
    let mut mine = h.core.node.subscriptions(c);
    mine.sort();
    assert_eq!(mine, ["chat:a", "news"]);
    // Its pushes follow, and presence shows it with its info.
    h.ask(
        at(1),
        api,
        json!({"id": 4, "publish": {"channel": "chat:a", "data": 2}}),
    );
    let seen = h.seen(c).messages;
    assert_eq!(seen[0]["push"]["pub"]["offset"], 2, "{seen:?}");
    let r = h.ask(at(1), c, json!({"id": 5, "presence": {"channel": "news"}}));
    let me = r["presence"]["clients"][h.core.node.client_id(c)].clone();
    assert_eq!(me["conn_info"], json!({"name": "Ann"}), "{r}");
}

#[test]
fn publications_while_the_connect_reply_waits_come_after_it() {
    let mut h = harness(Proxies::default());
    let api = h.open(at(0));
    let t = token(json!({"sub": "1", "exp": ORIGIN + 600}));
    h.connect(at(0), api, &t);
    h.ask(
        at(0),
        api,
        json!({"id": 2, "subscribe": {"channel": "chat:a"}}),
    );
    let c = h.open(at(0));
    let t = token(json!({"sub": "42", "exp": ORIGIN + 600, "channels": ["chat:a", "news"]}));
    // The hub is driven by hand: chat:a's position is answered, then a
    // publication to chat:a arrives, then news's position: the publication
    // reaches the node while the connect reply still waits.
    let frame =
        |v: Value| common::masked(true, OpCode::Text, v.to_string().as_bytes(), [1, 2, 3, 4]);
    h.core
        .node
        .handle_read(at(0), c, &frame(json!({"id": 1, "connect": {"token": t}})));
    let asked: Vec<_> = std::iter::from_fn(|| h.core.node.poll_backbone()).collect();
    let publish = json!({"id": 3, "publish": {"channel": "chat:a", "data": 1}});
    h.core.node.handle_read(at(0), api, &frame(publish));
    let published: Vec<_> = std::iter::from_fn(|| h.core.node.poll_backbone()).collect();
    let (chat, news): (Vec<_>, Vec<_>) = asked.into_iter().partition(
        |cmd| matches!(cmd, BackboneCommand::History { channel, .. } if channel == "chat:a"),
    );
    for cmd in chat.into_iter().chain(published).chain(news) {
        h.core.hub.handle_command(at(0), NodeId(0), cmd);
        while let Some((_, ev)) = h.core.hub.poll_event() {
            h.core.node.handle_backbone(at(0), ev);
        }
    }
    h.core.pump(at(0));
    let seen = h.seen(c).messages;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["id"], 1, "the connect reply first: {seen:?}");
    assert_eq!(
        seen[0]["connect"]["subs"]["chat:a"]["offset"], 0,
        "{seen:?}"
    );
    assert_eq!(
        seen[1]["push"]["pub"]["offset"], 1,
        "then the publication: {seen:?}"
    );
}

/// Whether a connection whose token claims a channel it may not subscribe
/// to is kept out of it.
fn forbidden_claim_is_left_out(h: &mut Harness) -> bool {
    let c = h.open(at(0));
    let seen = connect_with_channels(h, c, &["vip:x"]);
    assert!(seen[0]["connect"].is_object(), "{seen:?}");
    h.core.node.subscriptions(c).is_empty() && seen[0]["connect"].get("subs").is_none()
}

#[test]
fn a_claimed_channel_without_permission_is_left_out() {
    assert!(forbidden_claim_is_left_out(
        &mut harness(Proxies::default())
    ));
}

#[cfg(feature = "mutations")]
#[test]
fn mutation_skip_server_subscribe_permission_is_caught() {
    let mut h = harness(Proxies::default());
    h.core
        .node
        .set_mutation(wavecast_core::node::Mutation::SkipServerSubscribePermission);
    assert!(!forbidden_claim_is_left_out(&mut h));
}

#[test]
fn an_unknown_key_id_holds_the_connect_until_the_key_set_is_fetched_again() {
    let token_config = TokenConfig {
        jwks: true,
        ..hmac()
    };
    let mut core = Standalone::new(config(Proxies::default(), token_config), 3);
    core.node
        .handle_keys(at(0), Some(&jwks(&[("k1", Algorithm::ES256)])));
    let mut h = Harness::new(core);
    let claims = json!({"sub": "42", "exp": ORIGIN + 600});
    let c = h.open(at(0));
    let r = h.connect(at(0), c, &with_kid(Algorithm::ES256, "k1", &claims));
    assert_eq!(r["connect"]["user"], "42", "{r}");
    assert!(asks(&mut h).is_empty());
    // k2 is not in the set: the node asks for the set again and holds the
    // connect (and what follows it).
    let d = h.open(at(1));
    let t2 = with_kid(Algorithm::ES384, "k2", &claims);
    h.send(at(1), d, json!({"id": 1, "connect": {"token": t2}}));
    h.send(at(1), d, json!({"id": 2, "subscribe": {"channel": "news"}}));
    assert_eq!(asks(&mut h), [Ask::Keys]);
    assert!(h.seen(d).messages.is_empty());
    // A second connection with an unknown kid waits for the same fetch.
    let e = h.open(at(1));
    let t3 = with_kid(Algorithm::ES256, "k3", &claims);
    h.send(at(1), e, json!({"id": 1, "connect": {"token": t3}}));
    assert!(asks(&mut h).is_empty(), "one fetch asked for all");
    let rotated = jwks(&[("k2", Algorithm::ES384)]);
    h.core.node.handle_keys(at(2), Some(&rotated));
    h.core.pump(at(2));
    let seen = h.seen(d).messages;
    assert_eq!(reply_to(&seen, 1)["connect"]["user"], "42", "{seen:?}");
    assert!(reply_to(&seen, 2)["subscribe"].is_object(), "{seen:?}");
    // k3 is in no set: refused now, 112 then 4503.
    let seen = h.seen(e);
    assert_eq!(reply_to(&seen.messages, 1)["error"]["code"], 112);
    assert_eq!(seen.close, Some(4503));
    // k1 left the set: refused (after asking once more, with no new set).
    let f = h.open(at(3));
    h.send(
        at(3),
        f,
        json!({"id": 1, "connect": {"token": with_kid(Algorithm::ES256, "k1", &claims)}}),
    );
    assert_eq!(asks(&mut h), [Ask::Keys]);
    h.core.node.handle_keys(at(3), None);
    h.core.pump(at(3));
    assert_eq!(h.seen(f).close, Some(4503));
}

#[test]
fn a_subscription_tokens_info_shows_in_presence_and_a_refresh_replaces_it() {
    let mut h = harness(Proxies::default());
    let c = h.open(at(0));
    h.connect(at(0), c, &token(json!({"sub": "42", "exp": ORIGIN + 600})));
    let sub = |info: Value| {
        token(json!({"sub": "42", "exp": ORIGIN + 600, "channel": "vip:x", "info": info}))
    };
    let r = h.ask(
        at(0),
        c,
        json!({"id": 2, "subscribe": {"channel": "vip:x", "token": sub(json!({"seat": 1}))}}),
    );
    assert!(r["subscribe"].is_object(), "{r}");
    let me = h.core.node.client_id(c);
    let r = h.ask(at(1), c, json!({"id": 3, "presence": {"channel": "vip:x"}}));
    assert_eq!(
        r["presence"]["clients"][&me]["chan_info"],
        json!({"seat": 1}),
        "{r}"
    );
    let t = sub(json!({"seat": 2}));
    let r = h.ask(
        at(2),
        c,
        json!({"id": 4, "sub_refresh": {"channel": "vip:x", "token": t}}),
    );
    assert!(r["sub_refresh"].is_object(), "{r}");
    let r = h.ask(at(3), c, json!({"id": 5, "presence": {"channel": "vip:x"}}));
    assert_eq!(
        r["presence"]["clients"][&me]["chan_info"],
        json!({"seat": 2}),
        "{r}"
    );
}

#[test]
fn an_sse_stream_with_an_unknown_key_id_waits_for_the_key_set() {
    let token_config = TokenConfig {
        jwks: true,
        ..hmac()
    };
    let mut core = Standalone::new(config(Proxies::default(), token_config), 3);
    core.node
        .handle_keys(at(0), Some(&jwks(&[("k1", Algorithm::ES256)])));
    let mut h = Harness::new(core);
    let claims = json!({"sub": "42", "exp": ORIGIN + 600});
    let stream = |token: String| wavecast_core::sse::SseRequest {
        channels: vec!["news".into()],
        positions: vec![None],
        token: Some(token),
        origin: None,
    };
    let retry = Duration::from_secs(2);
    let written = |h: &mut Harness, id: ConnId| -> String {
        while h.core.node.poll_transmit().is_some() {}
        let q = h.core.node.queue(id).unwrap();
        String::from_utf8(common::take_queued(q)).unwrap()
    };
    // k2 and k3 are not in the set: both wait, for one fetch.
    let s2 = h.core.node.handle_sse(
        at(1),
        stream(with_kid(Algorithm::ES384, "k2", &claims)),
        retry,
    );
    let s3 = h.core.node.handle_sse(
        at(1),
        stream(with_kid(Algorithm::ES256, "k3", &claims)),
        retry,
    );
    h.core.pump(at(1));
    assert_eq!(asks(&mut h), [Ask::Keys], "one fetch asked for all");
    assert_eq!(written(&mut h, s2), "", "nothing before the keys");
    let rotated = jwks(&[("k2", Algorithm::ES384)]);
    h.core.node.handle_keys(at(2), Some(&rotated));
    h.core.pump(at(2));
    let text = written(&mut h, s2);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\"user\":\"42\""), "{text}");
    // k3 is in no set: refused now.
    let text = written(&mut h, s3);
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(text.contains("\"code\":112"), "{text}");
}
