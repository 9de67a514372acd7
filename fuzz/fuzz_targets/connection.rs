#![no_main]
//! A whole client byte stream into one connection: see
//! `wavecast_core::fuzzing::connection`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavecast_core::fuzzing::connection(data));
