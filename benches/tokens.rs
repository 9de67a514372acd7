//! Criterion bench of connection-token verification (issue 11): the work
//! the server does once per `connect` with a token,
//! `Verifier::connection(token, now)`, for an HS256, an RS256 (2048-bit
//! key) and an ES256 (P-256) token. Each token is signed once, with
//! jsonwebtoken and the test keys of `core/tests/keys/`; its claims are
//! what a typical connection token carries: a short `sub`, `iat` and `exp`,
//! no `info`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use wavecast_core::auth::{TokenConfig, Verifier, DEFAULT_MAX_TOKEN_SIZE};

const SECRET: &[u8] = b"a bench secret of thirty-two bytes";
const RSA_KEY: &str = include_str!("../core/tests/keys/rsa.key");
const RSA_PUB: &str = include_str!("../core/tests/keys/rsa.pub");
const P256_KEY: &str = include_str!("../core/tests/keys/p256.key");
const P256_PUB: &str = include_str!("../core/tests/keys/p256.pub");

/// The time the tokens are checked at (seconds since the Unix epoch).
const NOW: u64 = 1_800_000_000;

fn config(secret: Option<&[u8]>, public_pem: Option<&str>) -> TokenConfig {
    TokenConfig {
        hmac_secret: secret.map(<[u8]>::to_vec),
        public_key_pem: public_pem.map(|p| p.as_bytes().to_vec()),
        audience: None,
        issuer: None,
        allow_no_exp: false,
        leeway: Duration::from_secs(5),
        max_size: DEFAULT_MAX_TOKEN_SIZE,
        jwks: false,
    }
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = json!({"sub": "u42", "iat": NOW, "exp": NOW + 3600});
    encode(&Header::new(alg), &claims, key).expect("the bench token signs")
}

fn bench_tokens(c: &mut Criterion) {
    let cases = [
        (
            "HS256",
            config(Some(SECRET), None),
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET).expect("secret"),
            ),
        ),
        (
            "RS256",
            config(None, Some(RSA_PUB)),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("RSA key"),
            ),
        ),
        (
            "ES256",
            config(None, Some(P256_PUB)),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(P256_KEY.as_bytes()).expect("P-256 key"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("token");
    for (name, config, token) in cases {
        let verifier = Verifier::new(config).expect("the bench keys are valid");
        // The token verifies: the bench measures the accepting path.
        let claims = verifier
            .connection(&token, NOW)
            .expect("the token verifies");
        assert_eq!(claims.user, "u42");
        group.bench_function(format!("connection/{name}"), |b| {
            b.iter(|| verifier.connection(black_box(&token), black_box(NOW)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tokens);
criterion_main!(benches);
