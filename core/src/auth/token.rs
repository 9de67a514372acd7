//! Token verification: a connection or subscription JWT checked against the
//! configured keys and rules, with the time passed in.
//!
//! The signature and the `aud`/`iss` claims are checked by the
//! `jsonwebtoken` crate; `exp` and `nbf` are checked here against the
//! caller's `now` (jsonwebtoken's own time checks read the system clock and
//! are switched off), so verification is deterministic like the rest of
//! the core.
//!
//! The algorithm comes from the configured key, never from the token: an
//! HS token is checked only with the secret, an RS/PS token only with an
//! RSA key, ES256 only with a P-256 key, ES384 only with a P-384 key, EdDSA
//! only with an Ed25519 key. A token whose algorithm has no key is refused
//! (so an HMAC token signed with an RSA public key as its secret, the
//! classic confusion, never meets that key), and `alg: none` is not an
//! algorithm jsonwebtoken parses at all.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::{ErrorCode, Payload};

/// Default of [`TokenConfig::max_size`]: 8 KiB.
pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 * 1024;
/// Most bytes of a token's `info` claim (as JSON text).
pub const MAX_INFO_SIZE: usize = 1024;
/// Default of [`TokenConfig::leeway`].
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// What tokens are checked with (the settings `token_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenConfig {
    /// The shared secret of HS256/384/512 tokens.
    pub hmac_secret: Option<Vec<u8>>,
    /// A public key in PEM: RSA (RS*/PS*), EC P-256 (ES256), EC P-384
    /// (ES384) or Ed25519 (EdDSA).
    pub public_key_pem: Option<Vec<u8>>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accept tokens without `exp`.
    pub allow_no_exp: bool,
    /// Clock skew allowed when checking `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest token accepted, in bytes.
    pub max_size: usize,
    /// Keys also come from a key set (a JWKS URL, fetched by the driver
    /// and handed in with `Verifier::set_jwks`): a token naming a key id
    /// the set does not have is refused as an unknown `kid`.
    pub jwks: bool,
}

impl TokenConfig {
    /// Whether any key is configured (tokens can be verified at all).
    pub fn has_key(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key_pem.is_some() || self.jwks
    }
}

/// A configured key that cannot be used. The operator's fault: refused at
/// startup (or at a reload, keeping the old keys).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The HMAC secret is empty.
    #[error("token_hmac_secret is empty")]
    EmptySecret,
    /// The PEM is not an RSA, EC P-256/P-384 or Ed25519 public key.
    #[error("token_public_key is not an RSA, EC P-256, EC P-384 or Ed25519 public key in PEM")]
    BadPublicKey,
}

/// Why a token was refused. [`TokenError::code`] is the error code the
/// client gets: 111 for an expired token (get a new one and retry), 112 for
/// everything else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than the configured limit.
    #[error("token longer than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not a JWT (three base64url parts of JSON), or a claim of the wrong
    /// type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's algorithm has no configured key (or is not allowed).
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// The token names a key id the key set does not have.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// No `exp`, and tokens without expiry are not allowed.
    #[error("token has no exp")]
    MissingExp,
    /// `aud` missing or not the configured audience.
    #[error("token audience does not match")]
    Audience,
    /// `iss` missing or not the configured issuer.
    #[error("token issuer does not match")]
    Issuer,
    /// No `sub` (a string).
    #[error("token has no sub")]
    MissingSub,
    /// `info` is longer than [`MAX_INFO_SIZE`].
    #[error("token info longer than {MAX_INFO_SIZE} bytes")]
    InfoTooLarge,
    /// A subscription token without a `channel` claim (a connection token,
    /// most likely), or for another channel.
    #[error("token is not a subscription token for this channel")]
    WrongChannel,
    /// A subscription token for another user.
    #[error("token is for another user")]
    WrongUser,
    /// No key is configured at all.
    #[error("no token key is configured")]
    NoKey,
    /// No token where one is required.
    #[error("a token is required")]
    Missing,
}

impl TokenError {
    /// The error code of the reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// What a valid connection token says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionClaims {
    /// `sub`: the user.
    pub user: String,
    /// `exp`, in seconds since the Unix epoch.
    pub expires: Option<u64>,
    /// `info`: public data about the connection.
    pub info: Option<Payload>,
    /// `channels`: subscribed by the server on connect.
    pub channels: Vec<String>,
}

/// What a valid subscription token says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionClaims {
    /// `exp`, in seconds since the Unix epoch.
    pub expires: Option<u64>,
    /// `info`: public data about the subscription.
    pub info: Option<Payload>,
}

/// The claims wavecast reads; others are ignored.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
}

/// A public key and the algorithms it admits.
#[derive(Clone)]
struct PublicKey {
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Checks tokens: the keys (parsed once) and the rules.
#[derive(Clone)]
pub struct Verifier {
    config: TokenConfig,
    hmac: Option<DecodingKey>,
    public: Option<PublicKey>,
    /// Keys of the fetched key set, by `kid`.
    jwks: BTreeMap<String, PublicKey>,
    /// The key set's JSON as handed in (for equality and hashing).
    jwks_source: String,
}

impl Verifier {
    /// Parses the configured keys.
    pub fn new(config: TokenConfig) -> Result<Verifier, KeyError> {
        let hmac = match &config.hmac_secret {
            Some(s) if s.is_empty() => return Err(KeyError::EmptySecret),
            Some(s) => Some(DecodingKey::from_secret(s).map_err(|_| KeyError::EmptySecret)?),
            None => None,
        };
        let public = match &config.public_key_pem {
            Some(pem) => Some(public_key_from_pem(pem)?),
            None => None,
        };
        Ok(Verifier {
            config,
            hmac,
            public,
            jwks: BTreeMap::new(),
            jwks_source: String::new(),
        })
    }

    /// The rules and keys it was made from.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// Takes over `old`'s fetched key set (a reload's new rules keep the
    /// keys the running fetcher brought).
    pub fn keep_key_set(&mut self, old: &Verifier) {
        self.jwks = old.jwks.clone();
        self.jwks_source = old.jwks_source.clone();
    }

    /// Replaces the key set (a JWKS document, as fetched). Keys it cannot
    /// use (symmetric ones, which a public document must not hold, unknown
    /// types, no `kid`) are skipped; returns how many it kept. A document
    /// that is not a JWKS leaves the old keys in place.
    pub fn set_jwks(&mut self, json: &str) -> Result<usize, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = BTreeMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithms = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA,
                AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256][..],
                    EllipticCurve::P384 => &[Algorithm::ES384][..],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    &[Algorithm::EdDSA][..]
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            keys.insert(kid, PublicKey { key, algorithms });
        }
        let kept = keys.len();
        self.jwks = keys;
        self.jwks_source = json.to_owned();
        Ok(kept)
    }

    /// Verifies a connection token at `now` (seconds since the Unix epoch).
    pub fn connection(&self, token: &str, now: u64) -> Result<ConnectionClaims, TokenError> {
        let claims = self.verify(token, now)?;
        let user = claims.sub.ok_or(TokenError::MissingSub)?;
        Ok(ConnectionClaims {
            user,
            expires: number_secs(claims.exp.as_ref()),
            info: info(claims.info)?,
            channels: claims.channels.unwrap_or_default(),
        })
    }

    /// Verifies a subscription token for `channel` of `user` at `now`.
    pub fn subscription(
        &self,
        token: &str,
        now: u64,
        user: &str,
        channel: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let claims = self.verify(token, now)?;
        if claims.channel.as_deref() != Some(channel) {
            return Err(TokenError::WrongChannel);
        }
        if claims.sub.as_deref() != Some(user) {
            return Err(TokenError::WrongUser);
        }
        Ok(SubscriptionClaims {
            expires: number_secs(claims.exp.as_ref()),
            info: info(claims.info)?,
        })
    }

    fn verify(&self, token: &str, now: u64) -> Result<RawClaims, TokenError> {
        if token.len() > self.config.max_size {
            return Err(TokenError::TooLarge {
                max: self.config.max_size,
            });
        }
        let header = jsonwebtoken::decode_header(token).map_err(map_error)?;
        let alg = header.alg;
        let key = if HMAC.contains(&alg) {
            self.hmac.as_ref()
        } else {
            let set = self.config.jwks || !self.jwks.is_empty();
            let by_kid = match (&header.kid, set) {
                (Some(kid), true) => Some(
                    self.jwks
                        .get(kid)
                        .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?,
                ),
                _ => None,
            };
            by_kid
                .or(self.public.as_ref())
                .filter(|k| k.algorithms.contains(&alg))
                .map(|k| &k.key)
        };
        let key = match key {
            Some(k) => k,
            None if !self.config.has_key() && self.jwks.is_empty() => {
                return Err(TokenError::NoKey)
            }
            None => return Err(TokenError::Algorithm(format!("{alg:?}"))),
        };
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        if let Some(aud) = &self.config.audience {
            validation.validate_aud = true;
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, key, &validation).map_err(map_error)?;
        let claims = data.claims;
        let leeway = self.config.leeway.as_secs();
        match claims.exp.as_ref() {
            None if !self.config.allow_no_exp => return Err(TokenError::MissingExp),
            None => {}
            Some(exp) => {
                let exp = number_secs(Some(exp))
                    .ok_or_else(|| TokenError::Malformed("exp is not a time".into()))?;
                if exp.saturating_add(leeway) < now {
                    return Err(TokenError::Expired);
                }
            }
        }
        if let Some(nbf) = claims.nbf.as_ref() {
            let nbf = number_secs(Some(nbf))
                .ok_or_else(|| TokenError::Malformed("nbf is not a time".into()))?;
            if nbf > now.saturating_add(leeway) {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(claims)
    }
}

/// A NumericDate (RFC 7519: seconds, possibly fractional) as whole seconds;
/// `None` for negative or non-numbers.
fn number_secs(n: Option<&serde_json::Number>) -> Option<u64> {
    let n = n?;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(|f| f as u64)
    })
}

fn info(raw: Option<Box<RawValue>>) -> Result<Option<Payload>, TokenError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get();
    if text.len() > MAX_INFO_SIZE {
        return Err(TokenError::InfoTooLarge);
    }
    Payload::from_json(text.as_bytes())
        .map(Some)
        .map_err(|e| TokenError::Malformed(format!("info: {e}")))
}

fn public_key_from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
    // Only public keys: jsonwebtoken would also take a private key's PEM,
    // and a private key does not belong on the server.
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::BadPublicKey)?;
    let label = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"));
    if !matches!(label, Some("PUBLIC KEY" | "RSA PUBLIC KEY")) {
        return Err(KeyError::BadPublicKey);
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(PublicKey {
            key,
            algorithms: RSA,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // The SEC1 point: 65 bytes on P-256, 97 on P-384.
        let algorithms: &'static [Algorithm] = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => &[Algorithm::ES256],
            Ok(97) => &[Algorithm::ES384],
            _ => return Err(KeyError::BadPublicKey),
        };
        return Ok(PublicKey { key, algorithms });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(PublicKey {
            key,
            algorithms: &[Algorithm::EdDSA],
        });
    }
    Err(KeyError::BadPublicKey)
}

fn map_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => TokenError::Algorithm(e.to_string()),
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::Issuer,
        _ => TokenError::Malformed(e.to_string()),
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.is_some())
            .field("jwks", &self.jwks.keys().collect::<Vec<_>>())
            .finish()
    }
}

// Equality and hashing by what the verifier was made from: the same
// configuration and key set verify the same way (the model hashes nodes).
impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.jwks_source == other.jwks_source
    }
}

impl Eq for Verifier {}

impl std::hash::Hash for Verifier {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.config.hash(state);
        self.jwks_source.hash(state);
    }
}
