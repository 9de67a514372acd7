//! Fuzz target: RFC 6455 frames from an untrusted peer, decoded in any
//! chunking and assembled into messages. The properties checked live in
//! `wavecast_core::fuzzing::frame` so that the committed seeds
//! (fuzz/seeds/frame/) replay as an ordinary test on stable.
//!
//! Run: `cargo fuzz run frame fuzz/seeds/frame` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wavecast_core::fuzzing::frame(data);
});
