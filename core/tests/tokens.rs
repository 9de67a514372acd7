//! Token verification (`wavecast_core::auth::token`) against the rules of
//! docs/OPERATIONS.md "Authentication": every algorithm with its own key
//! family only, every claim rule, clock skew by leeway, and bad input of
//! every kind refused with the documented code (111 for expired, 112 for
//! the rest), never a panic.
//!
//! The keys in `core/tests/keys/` were made with `openssl genpkey` for
//! these tests only.

mod common;

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{json, Value};
use wavecast_core::auth::{TokenConfig, TokenError, Verifier, DEFAULT_MAX_TOKEN_SIZE};
use wavecast_core::protocol::ErrorCode;

use common::keys::{
    self, jwks, with_kid, ED_KEY, ED_PUB, P256_KEY, P256_PUB, P384_PUB, RSA2_KEY, RSA_KEY, RSA_PUB,
};

const SECRET: &[u8] = b"a test secret of thirty-two bytes!";
const NOW: u64 = 1_800_000_000;

fn config() -> TokenConfig {
    TokenConfig {
        hmac_secret: Some(SECRET.to_vec()),
        public_key_pem: None,
        audience: None,
        issuer: None,
        allow_no_exp: false,
        leeway: Duration::from_secs(5),
        max_size: DEFAULT_MAX_TOKEN_SIZE,
        jwks: false,
    }
}

fn with_public(pem: &str) -> TokenConfig {
    TokenConfig {
        hmac_secret: None,
        public_key_pem: Some(pem.as_bytes().to_vec()),
        ..config()
    }
}

fn verifier(c: TokenConfig) -> Verifier {
    Verifier::new(c).expect("valid keys")
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET).unwrap(),
        claims,
    )
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("signs")
}

fn private_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET).unwrap()
        }
        _ => keys::private_key(alg),
    }
}

fn user(exp: u64) -> Value {
    json!({"sub": "42", "exp": exp})
}

fn code(e: &TokenError) -> u16 {
    e.code().code()
}

#[test]
fn every_algorithm_verifies_with_its_own_key_family() {
    let cases = [
        (Algorithm::HS256, config()),
        (Algorithm::HS384, config()),
        (Algorithm::HS512, config()),
        (Algorithm::RS256, with_public(RSA_PUB)),
        (Algorithm::RS384, with_public(RSA_PUB)),
        (Algorithm::RS512, with_public(RSA_PUB)),
        (Algorithm::PS256, with_public(RSA_PUB)),
        (Algorithm::PS384, with_public(RSA_PUB)),
        (Algorithm::PS512, with_public(RSA_PUB)),
        (Algorithm::ES256, with_public(P256_PUB)),
        (Algorithm::ES384, with_public(P384_PUB)),
        (Algorithm::EdDSA, with_public(ED_PUB)),
    ];
    for (alg, c) in cases {
        let token = sign(alg, &private_key(alg), &user(NOW + 60));
        let claims = verifier(c)
            .connection(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(claims.user, "42");
        assert_eq!(claims.expires, Some(NOW + 60));
    }
}

#[test]
fn a_token_whose_algorithm_has_no_configured_key_is_refused() {
    // Every public key refuses an HS token, whatever its secret: the
    // classic confusion signs HS256 with the RSA public key's PEM as the
    // secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUB.as_bytes()).unwrap(),
        &user(NOW + 60),
    );
    for pem in [RSA_PUB, P256_PUB, P384_PUB, ED_PUB] {
        let e = verifier(with_public(pem))
            .connection(&confused, NOW)
            .unwrap_err();
        assert!(matches!(e, TokenError::Algorithm(_)), "{e:?}");
        assert_eq!(code(&e), 112);
    }
    // A secret alone refuses RS, and each curve refuses the other's.
    let rs = sign(
        Algorithm::RS256,
        &private_key(Algorithm::RS256),
        &user(NOW + 60),
    );
    assert!(matches!(
        verifier(config()).connection(&rs, NOW),
        Err(TokenError::Algorithm(_))
    ));
    let es384 = sign(
        Algorithm::ES384,
        &private_key(Algorithm::ES384),
        &user(NOW + 60),
    );
    assert!(matches!(
        verifier(with_public(P256_PUB)).connection(&es384, NOW),
        Err(TokenError::Algorithm(_))
    ));
    let ed = sign(
        Algorithm::EdDSA,
        &private_key(Algorithm::EdDSA),
        &user(NOW + 60),
    );
    assert!(matches!(
        verifier(with_public(RSA_PUB)).connection(&ed, NOW),
        Err(TokenError::Algorithm(_))
    ));
}

#[test]
fn alg_none_and_a_wrong_key_are_refused() {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&user(NOW + 60))
    );
    let e = verifier(config()).connection(&none, NOW).unwrap_err();
    assert_eq!(code(&e), 112, "{e:?}");

    let other = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA2_KEY.as_bytes()).unwrap(),
        &user(NOW + 60),
    );
    assert_eq!(
        verifier(with_public(RSA_PUB)).connection(&other, NOW),
        Err(TokenError::BadSignature)
    );
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret").unwrap(),
        &user(NOW + 60),
    );
    assert_eq!(
        verifier(config()).connection(&forged, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn exp_and_nbf_are_checked_against_the_time_given_with_the_leeway() {
    let v = verifier(config());
    // Expired 5 s ago: within the 5 s leeway. 6 s ago: expired, code 111.
    assert!(v.connection(&hs(&user(NOW - 5)), NOW).is_ok());
    let e = v.connection(&hs(&user(NOW - 6)), NOW).unwrap_err();
    assert_eq!(e, TokenError::Expired);
    assert_eq!(e.code(), ErrorCode::TokenExpired);
    assert_eq!(code(&e), 111);
    // The same token at an earlier time is fine: time is an input.
    assert!(v.connection(&hs(&user(NOW - 6)), NOW - 100).is_ok());
    // nbf: up to the leeway ahead is fine.
    let nbf = |n: u64| hs(&json!({"sub": "42", "exp": NOW + 60, "nbf": n}));
    assert!(v.connection(&nbf(NOW + 5), NOW).is_ok());
    assert_eq!(
        v.connection(&nbf(NOW + 6), NOW),
        Err(TokenError::NotYetValid)
    );
    // Fractional NumericDates are seconds too.
    assert!(v
        .connection(&hs(&json!({"sub": "42", "exp": NOW as f64 + 0.5})), NOW)
        .is_ok());
}

#[test]
fn exp_is_required_unless_allowed() {
    let token = hs(&json!({"sub": "42"}));
    assert_eq!(
        verifier(config()).connection(&token, NOW),
        Err(TokenError::MissingExp)
    );
    let v = verifier(TokenConfig {
        allow_no_exp: true,
        ..config()
    });
    assert_eq!(v.connection(&token, NOW).unwrap().expires, None);
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let v = verifier(TokenConfig {
        audience: Some("chat".into()),
        issuer: Some("https://auth.example".into()),
        ..config()
    });
    let ok = json!({"sub": "42", "exp": NOW + 60, "aud": "chat", "iss": "https://auth.example"});
    assert!(v.connection(&hs(&ok), NOW).is_ok());
    let mut list_aud = ok.clone();
    list_aud["aud"] = json!(["other", "chat"]);
    assert!(v.connection(&hs(&list_aud), NOW).is_ok());
    for (field, value, err) in [
        ("aud", json!("other"), TokenError::Audience),
        ("aud", Value::Null, TokenError::Audience),
        ("iss", json!("https://evil.example"), TokenError::Issuer),
        ("iss", Value::Null, TokenError::Issuer),
    ] {
        let mut claims = ok.clone();
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(field);
        } else {
            claims[field] = value;
        }
        assert_eq!(v.connection(&hs(&claims), NOW), Err(err), "{claims}");
    }
    // Without configured audience, a token's aud is not checked.
    let plain = verifier(config());
    assert!(plain.connection(&hs(&ok), NOW).is_ok());
}

#[test]
fn claims_of_the_wrong_shape_and_garbage_are_refused_with_112() {
    let v = verifier(config());
    let cases: Vec<String> = vec![
        String::new(),
        "abc".into(),
        "a.b.c".into(),
        "!!!.???.***".into(),
        hs(&json!({"exp": NOW + 60})),
        hs(&json!({"sub": 42, "exp": NOW + 60})),
        hs(&json!({"sub": "42", "exp": "tomorrow"})),
        hs(&json!({"sub": "42", "exp": NOW + 60, "channels": "news"})),
    ];
    for token in cases {
        let e = v.connection(&token, NOW).unwrap_err();
        assert_eq!(code(&e), 112, "{token:?}: {e:?}");
    }
}

#[test]
fn size_limits_hold_for_the_token_and_its_info() {
    let v = verifier(TokenConfig {
        max_size: 512,
        ..config()
    });
    let big = hs(&json!({"sub": "42", "exp": NOW + 60, "pad": "x".repeat(600)}));
    assert_eq!(
        v.connection(&big, NOW),
        Err(TokenError::TooLarge { max: 512 })
    );
    let v = verifier(config());
    let info = json!({"name": "Ann", "avatar": "a.png"});
    let claims = v
        .connection(
            &hs(&json!({"sub": "42", "exp": NOW + 60, "info": info})),
            NOW,
        )
        .unwrap();
    let got: Value = serde_json::from_slice(claims.info.unwrap().as_json()).unwrap();
    assert_eq!(got, info);
    let huge = json!({"sub": "42", "exp": NOW + 60, "info": {"bio": "x".repeat(1100)}});
    assert_eq!(v.connection(&hs(&huge), NOW), Err(TokenError::InfoTooLarge));
}

#[test]
fn connection_tokens_carry_channels() {
    let v = verifier(config());
    let claims = v
        .connection(
            &hs(&json!({"sub": "42", "exp": NOW + 60, "channels": ["news", "chat:42"]})),
            NOW,
        )
        .unwrap();
    assert_eq!(claims.channels, vec!["news", "chat:42"]);
}

#[test]
fn a_subscription_token_is_for_one_channel_and_one_user() {
    let v = verifier(config());
    let token = hs(&json!({"sub": "42", "exp": NOW + 60, "channel": "vip:room"}));
    let claims = v.subscription(&token, NOW, "42", "vip:room").unwrap();
    assert_eq!(claims.expires, Some(NOW + 60));
    assert_eq!(
        v.subscription(&token, NOW, "42", "vip:other"),
        Err(TokenError::WrongChannel)
    );
    assert_eq!(
        v.subscription(&token, NOW, "17", "vip:room"),
        Err(TokenError::WrongUser)
    );
    // A connection token is not a subscription token.
    assert_eq!(
        v.subscription(&hs(&user(NOW + 60)), NOW, "42", "vip:room"),
        Err(TokenError::WrongChannel)
    );
    let expired = hs(&json!({"sub": "42", "exp": NOW - 60, "channel": "vip:room"}));
    assert_eq!(
        v.subscription(&expired, NOW, "42", "vip:room"),
        Err(TokenError::Expired)
    );
}

#[test]
fn a_key_set_verifies_by_kid_and_forgets_a_key_that_left_it() {
    let mut v = verifier(TokenConfig {
        hmac_secret: None,
        ..config()
    });
    assert_eq!(
        v.set_jwks(&jwks(&[("k1", Algorithm::RS256), ("k2", Algorithm::ES256)])),
        Ok(2)
    );
    let rs = with_kid(Algorithm::RS256, "k1", &user(NOW + 60));
    let es = with_kid(Algorithm::ES256, "k2", &user(NOW + 60));
    assert!(v.connection(&rs, NOW).is_ok());
    assert!(v.connection(&es, NOW).is_ok());
    // The right kid, the wrong family.
    let confused = with_kid(Algorithm::ES256, "k1", &user(NOW + 60));
    assert!(matches!(
        v.connection(&confused, NOW),
        Err(TokenError::Algorithm(_))
    ));
    assert_eq!(
        v.connection(&with_kid(Algorithm::RS256, "k9", &user(NOW + 60)), NOW),
        Err(TokenError::UnknownKid("k9".into()))
    );
    // Rotation: k1 leaves the set.
    assert_eq!(v.set_jwks(&jwks(&[("k2", Algorithm::ES256)])), Ok(1));
    assert_eq!(
        v.connection(&rs, NOW),
        Err(TokenError::UnknownKid("k1".into()))
    );
    // A document that is not a key set leaves the keys as they were.
    assert!(v.set_jwks("{\"keys\": 5}").is_err());
    assert!(v.connection(&es, NOW).is_ok());
    // A symmetric key in a public set is never used.
    let oct = json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}).to_string();
    assert_eq!(v.set_jwks(&oct), Ok(0));
}

#[test]
fn bad_key_configuration_fails_at_startup() {
    assert!(Verifier::new(with_public("not a key")).is_err());
    // A private key where the public key belongs: refused, not silently
    // used (a private key must not sit on the server).
    for private in [RSA_KEY, P256_KEY, ED_KEY] {
        assert!(Verifier::new(with_public(private)).is_err(), "{private}");
    }
    assert!(Verifier::new(TokenConfig {
        hmac_secret: Some(Vec::new()),
        ..config()
    })
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any string is answered with an error, never a panic, and every
    /// error maps to 111 or 112.
    #[test]
    fn any_input_is_refused_not_a_panic(token in "\\PC{0,300}") {
        let v = verifier(config());
        if let Err(e) = v.connection(&token, NOW) {
            prop_assert!(matches!(code(&e), 111 | 112));
        }
    }

    /// A signed token with any one byte changed never verifies.
    #[test]
    fn a_changed_byte_never_verifies(at in 0usize..200, to in any::<u8>()) {
        let v = verifier(config());
        let token = hs(&user(NOW + 60));
        let mut bytes = token.clone().into_bytes();
        let i = at % bytes.len();
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        if let Ok(s) = String::from_utf8(bytes) {
            // A change in base64 padding bits can decode to the same bytes;
            // anything that verifies must then carry the same claims.
            if let Ok(claims) = v.connection(&s, NOW) {
                prop_assert_eq!(claims.user, "42");
            }
        }
    }
}
