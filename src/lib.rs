//! Test support shared by the integration tests in `tests/` and the benches
//! in `benches/`: starting the real `wavecast` binary on a free port,
//! waiting for it, and stopping it by the PID it was started with.
