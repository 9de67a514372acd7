//! Fuzz target: arbitrary bytes as an HTTP request head into the handshake
//! (parse, then accept when complete); the invariants are checked in
//! `wavecast_core::fuzzing::handshake` so that seed replay on stable checks
//! the same ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wavecast_core::fuzzing::handshake(data);
});
