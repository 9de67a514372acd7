//! `wavecast token`: mints a connection or subscription token signed with
//! the configured HMAC secret (HS256), for trying authentication out and
//! for tests, as `centrifugo gentoken` does. The server itself never signs
//! tokens; the application's backend does.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::Config;

/// Why no token could be made; the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// No `token_hmac_secret` in the configuration.
    #[error("no token_hmac_secret is configured (flag --token-hmac-secret, WAVECAST_TOKEN_HMAC_SECRET or the config file)")]
    NoSecret,
    /// `--info` is not a JSON value.
    #[error("--info is not valid JSON: {0}")]
    Info(serde_json::Error),
    /// The signer failed.
    #[error("cannot sign: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// What to put in the token.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `sub`.
    pub user: String,
    /// Lifetime from now (`exp = now + ttl`).
    pub ttl: Duration,
    /// For a subscription token: the channel.
    pub channel: Option<String>,
    /// `info`, as JSON text.
    pub info: Option<String>,
    /// `channels`: subscribed by the server on connect (connection tokens;
    /// none: no claim).
    pub channels: Vec<String>,
}

/// Signs `claims` with the configured secret at `now`; `aud` and `iss` are
/// added when the server checks them.
pub fn mint(config: &Config, claims: &Claims, now: SystemTime) -> Result<String, MintError> {
    let secret = config
        .tokens
        .hmac_secret
        .as_deref()
        .ok_or(MintError::NoSecret)?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut body = Map::new();
    body.insert("sub".into(), json!(claims.user));
    body.insert("iat".into(), json!(now));
    body.insert("exp".into(), json!(now + claims.ttl.as_secs()));
    if let Some(channel) = &claims.channel {
        body.insert("channel".into(), json!(channel));
    }
    if !claims.channels.is_empty() {
        body.insert("channels".into(), json!(claims.channels));
    }
    if let Some(info) = &claims.info {
        let info: Value = serde_json::from_str(info).map_err(MintError::Info)?;
        body.insert("info".into(), info);
    }
    if let Some(aud) = &config.tokens.audience {
        body.insert("aud".into(), json!(aud));
    }
    if let Some(iss) = &config.tokens.issuer {
        body.insert("iss".into(), json!(iss));
    }
    let key = EncodingKey::from_secret(secret).map_err(MintError::Sign)?;
    encode(&Header::default(), &Value::Object(body), &key).map_err(MintError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavecast_core::auth::Verifier;

    fn config() -> Config {
        let mut c = Config::default();
        c.tokens.hmac_secret = Some(b"0123456789abcdef0123456789abcdef".to_vec());
        c.tokens.audience = Some("chat".into());
        c
    }

    #[test]
    fn a_minted_token_verifies_with_the_same_configuration() {
        let c = config();
        let v = Verifier::new(c.tokens.clone()).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let claims = Claims {
            user: "42".into(),
            ttl: Duration::from_secs(3600),
            channel: None,
            info: Some(r#"{"name":"Ann"}"#.into()),
            channels: vec!["news".into(), "chat:a".into()],
        };
        let token = mint(&c, &claims, at).unwrap();
        let got = v.connection(&token, 1_800_000_000).unwrap();
        assert_eq!(got.user, "42");
        assert_eq!(got.expires, Some(1_800_003_600));
        assert_eq!(got.channels, ["news", "chat:a"]);
        assert_eq!(got.info.unwrap().as_json(), br#"{"name":"Ann"}"#);
        let sub = mint(
            &c,
            &Claims {
                channel: Some("vip:room".into()),
                channels: Vec::new(),
                ..claims
            },
            at,
        )
        .unwrap();
        assert!(v
            .subscription(&sub, 1_800_000_000, "42", "vip:room")
            .is_ok());
    }

    #[test]
    fn no_secret_or_bad_info_is_an_error() {
        let claims = Claims {
            user: "1".into(),
            ttl: Duration::from_secs(60),
            channel: None,
            info: None,
            channels: Vec::new(),
        };
        assert!(matches!(
            mint(&Config::default(), &claims, SystemTime::now()),
            Err(MintError::NoSecret)
        ));
        let bad = Claims {
            info: Some("{nope".into()),
            ..claims
        };
        assert!(matches!(
            mint(&config(), &bad, SystemTime::now()),
            Err(MintError::Info(_))
        ));
    }
}
