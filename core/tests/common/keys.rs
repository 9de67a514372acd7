//! The test key pairs in `core/tests/keys/` (made with `openssl genpkey`
//! for these tests only), tokens signed with them, and key sets (JWKS) of
//! their public halves.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;

pub const RSA_KEY: &str = include_str!("../keys/rsa.key");
pub const RSA_PUB: &str = include_str!("../keys/rsa.pub");
pub const RSA2_KEY: &str = include_str!("../keys/rsa2.key");
pub const P256_KEY: &str = include_str!("../keys/p256.key");
pub const P256_PUB: &str = include_str!("../keys/p256.pub");
pub const P384_KEY: &str = include_str!("../keys/p384.key");
pub const P384_PUB: &str = include_str!("../keys/p384.pub");
pub const ED_KEY: &str = include_str!("../keys/ed25519.key");
pub const ED_PUB: &str = include_str!("../keys/ed25519.pub");

/// The private key that signs `alg` (an asymmetric algorithm; RSA for
/// every RS/PS one).
pub fn private_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(P256_KEY.as_bytes()).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(P384_KEY.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_KEY.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
    }
}

/// A key set of the public keys of these algorithms, by these key ids.
pub fn jwks(keys: &[(&str, Algorithm)]) -> String {
    let keys = keys
        .iter()
        .map(|(kid, alg)| {
            let mut jwk = Jwk::from_encoding_key(&private_key(*alg), *alg).unwrap();
            jwk.common.key_id = Some((*kid).into());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// `claims` signed with `alg`'s key, naming key id `kid`.
pub fn with_kid(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, &private_key(alg)).unwrap()
}
