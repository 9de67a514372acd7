//! Fuzz target: arbitrary bytes as a connection token and as a
//! subscription token, verified with the fuzz key; the properties live in
//! `wavecast_core::fuzzing::token` so that the committed seeds
//! (fuzz/seeds/token/, written by fuzz/gen_auth_seeds.py) replay as an
//! ordinary test on stable.
//!
//! Run: `cargo fuzz run token seeds/token` (from fuzz/).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wavecast_core::fuzzing::token(data);
});
