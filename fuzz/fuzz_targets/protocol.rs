//! Fuzz target: client commands of the pub/sub protocol from an untrusted
//! peer, decoded as JSON and as MessagePack; what decodes is re-encoded and
//! decoded again, what does not must fall in exactly one error class, and
//! bytes that make valid publication data must transcode and splice
//! faithfully. The properties live in `wavecast_core::fuzzing::protocol` so
//! that the committed seeds (fuzz/seeds/protocol/) replay as an ordinary
//! test on stable.
//!
//! Run: `cargo fuzz run protocol fuzz/seeds/protocol` (from the repository
//! root).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wavecast_core::fuzzing::protocol(data);
});
