#![no_main]
//! permessage-deflate's codec (bounded inflate of any bytes, compress and
//! inflate round trip with one reused codec): see
//! `wavecast_core::fuzzing::deflate`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavecast_core::fuzzing::deflate(data));
