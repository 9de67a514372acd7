//! When to reconnect: the close-code table ([`close::should_reconnect`];
//! 4502 aside, see [`should_reconnect`]) and exponential backoff with full
//! jitter between attempts (also between `connect` retries on one
//! transport).

use std::time::Duration;

use crate::close::CloseCode;
use crate::protocol::close;

/// Backoff bounds between reconnect attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's upper bound (default 500 ms).
    pub min: Duration,
    /// No delay is longer (default 20 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (0 for the first after a
    /// connection was lost): a uniform pick in `[min/2, cap]` where `cap =
    /// min * 2^attempt`, capped at `max`. The jitter spreads a crowd of
    /// clients dropped at once (a server restart) over the window instead
    /// of all coming back in the same millisecond; the floor of `min/2`
    /// keeps a client from spinning. `random` is any uniformly random value
    /// (the caller's randomness).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let min = self.min.min(self.max);
        let cap = min
            .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let floor = min / 2;
        let span = cap.saturating_sub(floor).as_micros() as u64;
        floor + Duration::from_micros(random.checked_rem(span + 1).unwrap_or(0))
    }
}

/// Whether a connection that ended with `code` (`None`: the transport ended
/// without a close frame, 1006) should reconnect by itself.
///
/// The table ([`close::should_reconnect`]), but for 4502 (connect timeout):
/// the table says not to reconnect until the client sends `connect` first,
/// and this client always does, so a 4502 means its `connect` waited too
/// long (a slow connect proxy, or retries after temporary failures that
/// outlasted the server's `connect_timeout`): reconnect with backoff.
pub fn should_reconnect(code: Option<CloseCode>) -> bool {
    code.is_none_or(|code| code == close::CONNECT_TIMEOUT || close::should_reconnect(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_min_to_max_and_stay_in_their_window() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let cap = (b.min * 2u32.saturating_pow(attempt.min(20))).min(b.max);
            for random in [0, 1, 12_345, u64::MAX / 3, u64::MAX] {
                let d = b.delay(attempt, random);
                assert!(d >= b.min / 2 && d <= cap, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(b.delay(0, 0), Duration::from_millis(250));
        assert_eq!(b.delay(30, u64::MAX), b.delay(30, u64::MAX));
        assert!(b.delay(30, 19_750_000) == b.max);
    }

    #[test]
    fn the_close_code_table_decides() {
        assert!(should_reconnect(None));
        assert!(should_reconnect(Some(close::SHUTDOWN)));
        assert!(should_reconnect(Some(close::SLOW_CONSUMER)));
        assert!(should_reconnect(Some(CloseCode::GOING_AWAY)));
        assert!(!should_reconnect(Some(close::BAD_COMMAND)));
        assert!(!should_reconnect(Some(close::FORCE_DISCONNECT)));
        assert!(!should_reconnect(Some(CloseCode::NORMAL)));
        assert!(!should_reconnect(Some(CloseCode::PROTOCOL_ERROR)));
        assert!(!should_reconnect(Some(close::UNAUTHORIZED)));
        assert!(should_reconnect(Some(close::TOKEN_EXPIRED)));
        // This client sends `connect` first, always.
        assert!(should_reconnect(Some(close::CONNECT_TIMEOUT)));
    }
}
