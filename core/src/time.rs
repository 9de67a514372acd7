//! Time as an input.
//!
//! The core never reads a clock. Drivers pass a [`Timestamp`]: a count of
//! microseconds since an origin of the driver's choosing (the runtime uses
//! its start instant; the model and the tests start at zero). A plain integer
//! keeps states hashable and comparable for the model checker, and makes
//! every timer deterministic.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds since the driver's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The driver's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    #[inline]
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(micros(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    #[inline]
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(micros(rhs)))
    }
}

/// Whole microseconds of `d`, saturating; in u64 arithmetic (timers are
/// computed on the fan-out path, and `Duration::as_micros` is u128).
#[inline]
fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(5);
        assert_eq!(t + Duration::from_millis(2), Timestamp::from_millis(7));
        assert_eq!(t - Duration::from_secs(1), Timestamp::ZERO);
        assert_eq!(
            Timestamp::from_micros(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_micros(u64::MAX)
        );
        assert_eq!(
            t.saturating_since(Timestamp::from_millis(9)),
            Duration::ZERO
        );
    }
}
