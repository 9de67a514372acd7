//! Token keys from a JWKS URL against the real binary (docs/OPERATIONS.md
//! "Authentication"): a local HTTP server (`wavecast_tests::backend`)
//! serves a key set the test rotates; a token is verified by its `kid`; a
//! new `kid` makes the server fetch the set again at once, but at most
//! every 30 s; a `kid` that left the set is refused after the next fetch;
//! a failed fetch keeps the old keys; the startup rules (an audience is
//! required, https unless the host is loopback).
//!
//! The keys are the core's test keys (`core/tests/keys/`): A is RSA
//! (RS256), B P-256 (ES256), C another RSA key.
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test jwks`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use wavecast_tests::backend::{closed_port, Backend, Reply};
use wavecast_tests::pubsub::{eventually, Client, Enc, T};
use wavecast_tests::{refuses_to_start, Server};

const RSA_KEY: &str = include_str!("../core/tests/keys/rsa.key");
const RSA2_KEY: &str = include_str!("../core/tests/keys/rsa2.key");
const P256_KEY: &str = include_str!("../core/tests/keys/p256.key");

const AUDIENCE: &str = "wavecast-jwks-test";

/// Error 112: unauthorized (then close 4503).
const E_UNAUTHORIZED: u64 = 112;

/// The private key and algorithm of a test key id.
fn key(kid: &str) -> (EncodingKey, Algorithm) {
    match kid {
        "a" => (
            EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
            Algorithm::RS256,
        ),
        "b" => (
            EncodingKey::from_ec_pem(P256_KEY.as_bytes()).unwrap(),
            Algorithm::ES256,
        ),
        "c" => (
            EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).unwrap(),
            Algorithm::RS256,
        ),
        _ => panic!("no test key {kid}"),
    }
}

/// The public key set of these key ids.
fn jwks(kids: &[&str]) -> String {
    let keys = kids
        .iter()
        .map(|kid| {
            let (k, alg) = key(kid);
            let mut jwk = Jwk::from_encoding_key(&k, alg).unwrap();
            jwk.common.key_id = Some((*kid).into());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// A connection token of user `user` signed with key `kid`.
fn token(kid: &str, user: &str) -> String {
    let (k, alg) = key(kid);
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &header,
        &json!({"sub": user, "exp": exp, "aud": AUDIENCE}),
        &k,
    )
    .unwrap()
}

/// What the key-set server answers: the set of these ids, or a failure.
#[derive(Clone)]
enum Serving {
    Keys(Vec<&'static str>),
    Failing,
}

/// A key-set server the test rotates.
struct KeyServer {
    backend: Backend,
    serving: Arc<Mutex<Serving>>,
}

impl KeyServer {
    fn start(kids: &[&'static str]) -> KeyServer {
        let serving = Arc::new(Mutex::new(Serving::Keys(kids.to_vec())));
        let now = serving.clone();
        let backend = Backend::start(move |_| match &*now.lock().unwrap() {
            Serving::Keys(kids) => Reply::Status(200, jwks(kids)),
            Serving::Failing => Reply::Status(500, "down for maintenance".into()),
        });
        KeyServer { backend, serving }
    }

    fn serve(&self, s: Serving) {
        *self.serving.lock().unwrap() = s;
    }

    fn fetches(&self) -> usize {
        self.backend.requests_to("/jwks").len()
    }

    fn url(&self) -> String {
        self.backend.url("/jwks")
    }
}

fn server(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--token-jwks-url", url, "--token-audience", AUDIENCE];
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn connects(s: &Server, token: &str) -> bool {
    let mut c = Client::connect(s.addr(), Enc::Json).await;
    let r = c.command("connect", json!({"token": token})).await;
    if r.get("error").is_none() {
        assert_eq!(r["connect"]["user"], "42", "{r}");
        return true;
    }
    assert_eq!(r["error"]["code"], E_UNAUTHORIZED, "{r}");
    assert_eq!(c.close_code().await, Some(4503));
    false
}

#[tokio::test]
async fn keys_rotate_an_unknown_kid_fetches_again_and_a_kid_that_left_is_refused() {
    let keys = KeyServer::start(&["a"]);
    let s = server(&keys.url(), &["--token-jwks-refresh", "1h"]);
    // The set fetched at start verifies a token of A.
    eventually(T, "the key set fetched at start", || async {
        (keys.fetches() >= 1).then_some(())
    })
    .await;
    assert!(connects(&s, &token("a", "42")).await);
    let at_start = keys.fetches();
    // The issuer rotates to B: a token of B makes the server fetch again
    // at once, and connects.
    keys.serve(Serving::Keys(vec!["b"]));
    assert!(connects(&s, &token("b", "42")).await);
    assert_eq!(keys.fetches(), at_start + 1, "one fetch for the new kid");
    // A left the set with that fetch: refused.
    assert!(!connects(&s, &token("a", "42")).await);
    // C appears, but the last fetch for an unknown kid was under 30 s ago:
    // no new fetch, refused.
    keys.serve(Serving::Keys(vec!["b", "c"]));
    assert!(!connects(&s, &token("c", "42")).await);
    assert_eq!(keys.fetches(), at_start + 1, "at most one fetch per 30 s");
    // B still works from the keys the server has.
    assert!(connects(&s, &token("b", "42")).await);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_old_keys_and_a_later_one_brings_new_ones() {
    let keys = KeyServer::start(&["a"]);
    let s = server(&keys.url(), &["--token-jwks-refresh", "1s"]);
    eventually(T, "the key set fetched at start", || async {
        (keys.fetches() >= 1).then_some(())
    })
    .await;
    assert!(connects(&s, &token("a", "42")).await);
    keys.serve(Serving::Failing);
    let before = keys.fetches();
    eventually(T, "two periodic fetches that fail", || async {
        (keys.fetches() >= before + 2).then_some(())
    })
    .await;
    // The keys fetched before stay.
    assert!(connects(&s, &token("a", "42")).await);
    // An unknown kid while the set cannot be fetched: refused.
    assert!(!connects(&s, &token("c", "42")).await);
    // Back, with C: the periodic fetch installs it.
    keys.serve(Serving::Keys(vec!["a", "c"]));
    let back = keys.fetches();
    eventually(T, "a periodic fetch that succeeds", || async {
        (keys.fetches() > back).then_some(())
    })
    .await;
    // The node may get the set a moment after the backend answered.
    eventually(T, "a token of C connects", || async {
        connects(&s, &token("c", "42")).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_server_whose_first_fetch_fails_runs_and_refuses_tokens_with_a_kid() {
    let down = closed_port();
    let s = server(&format!("http://{down}/jwks"), &[]);
    assert!(!connects(&s, &token("a", "42")).await);
}

#[tokio::test]
async fn a_set_without_a_usable_key_is_a_failed_fetch() {
    let backend = Backend::start(|r| {
        if r.path == "/jwks" {
            Reply::Status(
                200,
                json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}).to_string(),
            )
        } else {
            Reply::Status(404, String::new())
        }
    });
    let s = server(&backend.url("/jwks"), &[]);
    assert!(!connects(&s, &token("a", "42")).await);
}

#[test]
fn misconfigured_jwks_fails_at_startup_with_a_message() {
    // The config is refused before anything is fetched or bound: no
    // traffic leaves loopback.
    refuses_to_start(
        &["--token-jwks-url", "https://id.example/jwks"],
        &["token_jwks_url", "token_audience"],
    );
    refuses_to_start(
        &[
            "--token-jwks-url",
            "http://id.example/jwks",
            "--token-audience",
            AUDIENCE,
        ],
        &["token_jwks_url", "https", "loopback"],
    );
    refuses_to_start(
        &[
            "--token-jwks-url",
            "http://127.0.0.1:1/jwks",
            "--token-audience",
            AUDIENCE,
            "--token-jwks-refresh",
            "10ms",
        ],
        &["token_jwks_refresh"],
    );
}

#[tokio::test]
async fn http_to_loopback_names_is_allowed() {
    let keys = KeyServer::start(&["b"]);
    let url = format!("http://localhost:{}/jwks", keys.backend.addr().port());
    let s = server(&url, &[]);
    eventually(T, "a token of B connects", || async {
        connects(&s, &token("b", "42")).await.then_some(())
    })
    .await;
}
