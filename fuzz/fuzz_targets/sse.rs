//! Fuzz target: arbitrary bytes as a Server-Sent Events request (parsed
//! head, then the SSE request rules, then a node's stream); the invariants
//! are checked in `wavecast_core::fuzzing::sse` so that seed replay on
//! stable checks the same ones.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wavecast_core::fuzzing::sse(data);
});
