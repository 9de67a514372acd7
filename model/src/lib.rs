//! wavecast-model: a stateright model of multi-server wavecast topologies.
//!
//! The model will wrap `wavecast_core`'s node state machine in server actors,
//! add a backbone actor with the sequencer semantics of the Redis backbone,
//! and client actors, and check the delivery contract of docs/ARCHITECTURE.md.
//! It arrives with the cluster issue; until then this crate is empty on purpose.
