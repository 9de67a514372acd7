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
