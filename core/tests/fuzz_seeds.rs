//! Replays the committed fuzz seeds (`fuzz/seeds/TARGET/*`) through the same
//! entry points the cargo-fuzz targets call, on stable, as an ordinary test.
//! A crash the fuzzer found is committed as a seed and stays fixed.

// Reading the seed files is the test's job; the core itself does no I/O.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| f(&data));
        assert!(result.is_ok(), "seed {} failed", path.display());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn deflate_seeds() {
    replay("deflate", wavecast_core::fuzzing::deflate);
}

#[test]
fn frame_seeds() {
    replay("frame", wavecast_core::fuzzing::frame);
}

#[test]
fn handshake_seeds() {
    replay("handshake", wavecast_core::fuzzing::handshake);
}

#[test]
fn connection_seeds() {
    replay("connection", wavecast_core::fuzzing::connection);
}

#[test]
fn protocol_seeds() {
    replay("protocol", wavecast_core::fuzzing::protocol);
}

#[test]
fn sse_seeds() {
    replay("sse", wavecast_core::fuzzing::sse);
}

#[test]
fn token_seeds() {
    replay("token", wavecast_core::fuzzing::token);
}

/// The `valid_*` token seeds (fuzz/gen_auth_seeds.py) still verify with
/// the fuzz key, so the fuzzer starts from tokens that get past the
/// signature; `valid_subscription*` ones as subscription tokens too.
#[test]
fn valid_token_seeds_verify() {
    use wavecast_core::auth::TokenError;
    use wavecast_core::fuzzing::{token_verifier, TOKEN_CHANNEL, TOKEN_USER, UNIX_ORIGIN};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/token");
    let verifier = token_verifier();
    let token = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let mut valid = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("valid_") {
            continue;
        }
        let t = token(&name);
        let claims = verifier.connection(&t, UNIX_ORIGIN);
        assert!(claims.is_ok(), "{name}: {claims:?}");
        if name.starts_with("valid_subscription") {
            let claims = verifier.subscription(&t, UNIX_ORIGIN, TOKEN_USER, TOKEN_CHANNEL);
            assert!(claims.is_ok(), "{name}: {claims:?}");
        }
        valid += 1;
    }
    assert!(valid >= 3, "too few valid token seeds");
    assert_eq!(
        verifier.connection(&token("expired"), UNIX_ORIGIN),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.connection(&token("bad_signature"), UNIX_ORIGIN),
        Err(TokenError::BadSignature)
    );
}
