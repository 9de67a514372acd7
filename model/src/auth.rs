//! Authentication in the model ([`Config::auth`](crate::Config::auth)):
//! the nodes' `AuthConfig` and namespaces, the tokens clients hold (JWTs
//! signed once per process, not per step), and what the model expects of
//! them: who may subscribe where, and when an unrefreshed connection is
//! closed.

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use wavecast_core::auth::{
    AuthConfig, TokenConfig, Verifier, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_TOKEN_SIZE,
};
use wavecast_core::namespace::{NamespaceOptions, Namespaces, Permission};
use wavecast_core::node::NodeConfig;
use wavecast_core::Timestamp;

/// The HMAC secret the tokens are signed with and the nodes verify.
const SECRET: &[u8] = b"wavecast model secret, 32 bytes!";
/// The Unix time (seconds) of the nodes' `Timestamp::ZERO`.
const ORIGIN: u64 = 1_800_000_000;
/// A valid token's `exp`, in seconds after the origin.
const VALID_FOR: u64 = 10;
/// How long after `exp` an unrefreshed connection may stay.
const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// Index (into [`CHANNELS`](crate::CHANNELS)) of the channel only
/// authenticated connections may subscribe to: `priv:c`, in the `priv`
/// namespace (`NamespaceOptions::secured()`, but authenticated clients
/// may publish). Channels `a` and `b` are in the default namespace, open
/// to everyone.
pub const SECURED: u8 = 2;

/// When a connection authenticated with the valid token must be closed
/// (4005), in node time, unless refreshed: `exp` + refresh grace. The
/// model never refreshes.
pub const EXPIRY_CLOSE: Timestamp =
    Timestamp::from_micros(VALID_FOR * 1_000_000 + REFRESH_GRACE.as_secs() * 1_000_000);

/// What a client sends in its `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenKind {
    /// A token of user `u`, valid until [`EXPIRY_CLOSE`] minus the grace.
    Valid,
    /// A token of user `u` that expired before the origin (error 111; the
    /// connection stays and becomes anonymous with its next command).
    Expired,
    /// No token: an anonymous `connect`.
    Absent,
}

/// Whether a client holding `token` may subscribe to channel `ch` (`None`:
/// a client of an open topology, which sends no `connect`).
pub fn may_subscribe(token: Option<TokenKind>, ch: u8) -> bool {
    ch != SECURED || token == Some(TokenKind::Valid)
}

struct Setup {
    verifier: Verifier,
    valid: String,
    expired: String,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let sign = |exp: u64| {
            let key = EncodingKey::from_secret(SECRET).expect("an HMAC secret");
            encode(&Header::default(), &json!({"sub": "u", "exp": exp}), &key).expect("a JWT signs")
        };
        let verifier = Verifier::new(TokenConfig {
            hmac_secret: Some(SECRET.to_vec()),
            leeway: Duration::ZERO,
            max_size: DEFAULT_MAX_TOKEN_SIZE,
            ..TokenConfig::default()
        })
        .expect("an HMAC key");
        Setup {
            verifier,
            valid: sign(ORIGIN + VALID_FOR),
            expired: sign(ORIGIN - 60),
        }
    })
}

/// The token a `connect` carries.
pub(crate) fn token(kind: TokenKind) -> Option<String> {
    match kind {
        TokenKind::Valid => Some(setup().valid.clone()),
        TokenKind::Expired => Some(setup().expired.clone()),
        TokenKind::Absent => None,
    }
}

/// A node of the authenticating topology: tokens verified, anonymous
/// connections allowed, `priv:c` for authenticated connections only.
pub(crate) fn node_config(client_prefix: String) -> NodeConfig {
    let mut namespaces = Namespaces::default();
    namespaces.named.insert(
        "priv".into(),
        NamespaceOptions {
            allow_publish: Permission::Authenticated,
            ..NamespaceOptions::secured()
        },
    );
    NodeConfig {
        client_prefix,
        namespaces,
        auth: AuthConfig {
            verifier: Some(setup().verifier.clone()),
            allow_anonymous: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            refresh_grace: REFRESH_GRACE,
            unix_origin_micros: ORIGIN * 1_000_000,
        },
        ..NodeConfig::default()
    }
}
