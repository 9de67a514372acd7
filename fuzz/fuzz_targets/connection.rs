#![no_main]
//! A whole client byte stream into one connection, and into one pub/sub
//! connection of a node with authentication on (so that frames reach
//! `connect`, `refresh` and `subscribe` with tokens): see
//! `wavecast_core::fuzzing::connection`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wavecast_core::fuzzing::connection(data));
