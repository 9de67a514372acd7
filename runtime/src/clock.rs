//! The runtime's one clock: core timestamps are microseconds since an
//! origin the runtime picks at start ([`Clock`]), and every thread that
//! feeds the core (shards, the in-memory sequencer) reads time through it.

use std::time::{Duration, Instant, SystemTime};

use wavecast_core::Timestamp;

/// Converts between the wall of `Instant`s and the core's [`Timestamp`]s,
/// which count from one origin shared by the whole server.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    /// The wall-clock time of the origin, in microseconds since the Unix
    /// epoch (tokens speak Unix time).
    unix_origin_micros: u64,
}

impl Clock {
    /// A clock whose timestamps count from now.
    pub fn start() -> Clock {
        let origin = Instant::now();
        let unix_origin_micros = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            origin,
            unix_origin_micros,
        }
    }

    /// The wall-clock time of timestamp zero, in microseconds since the
    /// Unix epoch.
    pub fn unix_origin_micros(&self) -> u64 {
        self.unix_origin_micros
    }

    /// The core's notion of now.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The instant a timestamp stands for (to sleep until a core deadline).
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        self.origin + Duration::from_micros(t.as_micros())
    }

    /// Time since the origin (the server's uptime).
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_timestamps_agree() {
        let clock = Clock::start();
        let t = clock.now();
        let back = clock.instant_of(t);
        assert!(back <= Instant::now());
        assert_eq!(clock.instant_of(Timestamp::from_micros(0)), clock.origin);
    }
}
