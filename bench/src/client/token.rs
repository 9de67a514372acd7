//! Connection tokens for `--token-hmac-secret`: one HS256 JWT per
//! connection, signed by the tool itself (as an application's backend
//! would), so that every connection of an authenticated run is its own
//! user.

use std::fmt;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::BenchError;

/// How long a bench token is valid: far longer than any run.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The user of the publisher's connection.
pub const PUBLISHER_USER: &str = "publisher";

/// The user of connection `index` (counted over the whole run, like the
/// URL and source address it gets): `u0`, `u1`, ...
pub fn user_for(index: usize) -> String {
    format!("u{index}")
}

/// What a connection authenticates with: its token and the user the
/// server must answer with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The token's `sub`.
    pub user: String,
    /// The signed token.
    pub token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The claims of a bench token: what a typical connection token carries
/// (a short `sub`, `iat`, `exp`; no `info`).
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs connection tokens with an HMAC secret (HS256).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for `secret`; an empty secret is a usage error (the server
    /// refuses one too).
    pub fn new(secret: &str) -> Result<TokenSigner, BenchError> {
        if secret.is_empty() {
            return Err(BenchError::Usage("--token-hmac-secret is empty".into()));
        }
        Ok(TokenSigner {
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// A token for `user`, issued at `now` (seconds since the Unix epoch)
    /// and expiring [`TOKEN_TTL`] later.
    pub fn sign_at(&self, user: &str, now: u64) -> Result<String, BenchError> {
        let key = EncodingKey::from_secret(&self.secret)
            .map_err(|e| BenchError::Usage(format!("--token-hmac-secret: {e}")))?;
        let claims = Claims {
            sub: user,
            iat: now,
            exp: now.saturating_add(TOKEN_TTL.as_secs()),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &key)
            .map_err(|e| BenchError::Usage(format!("cannot sign a token: {e}")))
    }

    /// A token for `user`, issued now.
    pub fn sign(&self, user: &str) -> Result<String, BenchError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sign_at(user, now)
    }

    /// The credentials of `user`: a token issued now.
    pub fn credentials(&self, user: String) -> Result<Credentials, BenchError> {
        let token = self.sign(&user)?;
        Ok(Credentials { user, token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavecast_core::auth::{TokenConfig, Verifier, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_SIZE};

    const NOW: u64 = 1_800_000_000;

    fn verifier(secret: &[u8]) -> Verifier {
        Verifier::new(TokenConfig {
            hmac_secret: Some(secret.to_vec()),
            public_key_pem: None,
            audience: None,
            issuer: None,
            allow_no_exp: false,
            leeway: DEFAULT_LEEWAY,
            max_size: DEFAULT_MAX_TOKEN_SIZE,
            jwks: false,
        })
        .unwrap()
    }

    #[test]
    fn tokens_verify_as_their_user_with_the_server_verifier() {
        let signer = TokenSigner::new("S").unwrap();
        for index in [0, 1, 9_999] {
            let user = user_for(index);
            let token = signer.sign_at(&user, NOW).unwrap();
            assert!(token.starts_with("eyJ"), "{token}");
            let claims = verifier(b"S").connection(&token, NOW).unwrap();
            assert_eq!(claims.user, user);
            assert_eq!(claims.expires, Some(NOW + 3600));
            assert_eq!(claims.info, None);
            assert!(claims.channels.is_empty());
        }
        assert_eq!(user_for(0), "u0");
        assert_eq!(user_for(42), "u42");
        // Distinct per connection.
        assert_ne!(
            signer.sign_at(&user_for(1), NOW).unwrap(),
            signer.sign_at(&user_for(2), NOW).unwrap()
        );
    }

    #[test]
    fn tokens_expire_after_an_hour_and_need_the_same_secret() {
        let token = TokenSigner::new("S").unwrap().sign_at("u0", NOW).unwrap();
        let v = verifier(b"S");
        assert!(v.connection(&token, NOW + 3600).is_ok());
        assert!(v.connection(&token, NOW + 3600 + 60).is_err());
        assert!(verifier(b"another").connection(&token, NOW).is_err());
        // Issued now: valid now.
        let fresh = TokenSigner::new("S").unwrap().sign("u0").unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(v.connection(&fresh, now).unwrap().user, "u0");
        let c = TokenSigner::new("S")
            .unwrap()
            .credentials(user_for(5))
            .unwrap();
        assert_eq!(v.connection(&c.token, now).unwrap().user, c.user);
        // The token is a credential: not in debug output.
        assert!(!format!("{c:?}").contains(&c.token));
    }

    #[test]
    fn an_empty_secret_is_a_usage_error_and_the_secret_is_not_printed() {
        assert_eq!(TokenSigner::new("").unwrap_err().exit_code(), 2);
        let debug = format!("{:?}", TokenSigner::new("hunter2").unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
