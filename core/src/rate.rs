//! Per-connection rate limits: token buckets refilled from the time passed
//! in, one rule for all of them. A node keeps a bucket for commands and one
//! for publications per connection (over them a command gets error 107); a
//! [`crate::connection::Connection`] keeps one for the pings its peer sends
//! (over it a ping is not answered). A connection still over a limit 5 s
//! after it first went over is closed ("too many requests", 4504 on
//! wavecast's own protocol). A flooding client is thus answered (or
//! ignored), then cut off, and never costs anybody else more than its own
//! traffic.

use std::time::Duration;

use crate::time::Timestamp;

/// How long a connection may stay over a limit (counting from its first
/// refused command) before it is closed.
pub const OVER_LIMIT_GRACE: Duration = Duration::from_secs(5);

/// The cost of one command, in the buckets' unit (a thousandth of a
/// command, so that refills at low rates are exact enough).
const COST: u32 = 1000;

/// What the buckets say about one command (or ping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits.
    Pass,
    /// Over a limit: answer 107 (a ping: no pong).
    Limited,
    /// Over a limit for [`OVER_LIMIT_GRACE`]: as `Limited`, and close the
    /// connection (4504 on wavecast's protocol).
    Close,
}

/// One connection's two buckets (24 bytes; full when the connection opens,
/// so a client may start with a burst of twice the rate). A ping allowance
/// is the same with the second bucket unused (a rate of 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Rate {
    /// When the buckets were last refilled.
    at: Timestamp,
    commands: u32,
    publishes: u32,
    /// When the first refused command of the current stretch over a limit
    /// came, plus one microsecond (0: not over a limit). The stretch ends
    /// when the buckets have refilled completely (the client slowed down
    /// for long enough), not at the next command that passes: a flood that
    /// gets one command through per refill is still a flood.
    over_since: u64,
}

impl Rate {
    /// Full buckets at `now`.
    pub(crate) fn new(now: Timestamp, command_rate: u32, publish_rate: u32) -> Rate {
        // Without limits nothing is ever refilled: keep no time (two
        // connections then differ in nothing here).
        let limited = command_rate != 0 || publish_rate != 0;
        Rate {
            at: if limited { now } else { Timestamp::ZERO },
            commands: capacity(command_rate),
            publishes: capacity(publish_rate),
            over_since: 0,
        }
    }

    /// Takes one command (and one publication if `publish`) from the
    /// buckets at `now`. A rate of 0 is no limit.
    pub(crate) fn take(
        &mut self,
        now: Timestamp,
        command_rate: u32,
        publish_rate: u32,
        publish: bool,
    ) -> Verdict {
        let elapsed = now.saturating_since(self.at).as_micros() as u64;
        self.at = now;
        self.commands = refill(self.commands, elapsed, command_rate);
        self.publishes = refill(self.publishes, elapsed, publish_rate);
        if self.commands == capacity(command_rate) && self.publishes == capacity(publish_rate) {
            self.over_since = 0;
        }
        let commands_ok = command_rate == 0 || self.commands >= COST;
        let publishes_ok = !publish || publish_rate == 0 || self.publishes >= COST;
        if commands_ok && publishes_ok {
            if command_rate != 0 {
                self.commands -= COST;
            }
            if publish && publish_rate != 0 {
                self.publishes -= COST;
            }
            return Verdict::Pass;
        }
        match self.over_since {
            0 => {
                self.over_since = now.as_micros() + 1;
                Verdict::Limited
            }
            since => {
                let first = Timestamp::from_micros(since - 1);
                if now.saturating_since(first) >= OVER_LIMIT_GRACE {
                    Verdict::Close
                } else {
                    Verdict::Limited
                }
            }
        }
    }
}

/// Twice the rate (the burst), in the buckets' unit.
fn capacity(rate: u32) -> u32 {
    rate.saturating_mul(2).saturating_mul(COST)
}

fn refill(level: u32, elapsed_micros: u64, rate: u32) -> u32 {
    // rate commands per second = rate * COST units per 1e6 microseconds.
    let add = elapsed_micros.saturating_mul(u64::from(rate)) / 1000;
    let level = u64::from(level).saturating_add(add);
    level.min(u64::from(capacity(rate))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_the_rate() {
        let mut r = Rate::new(ms(0), 10, 0);
        for i in 0..20 {
            assert_eq!(r.take(ms(0), 10, 0, false), Verdict::Pass, "{i}");
        }
        assert_eq!(r.take(ms(0), 10, 0, false), Verdict::Limited);
        // 10 per second: one more every 100 ms.
        assert_eq!(r.take(ms(99), 10, 0, false), Verdict::Limited);
        assert_eq!(r.take(ms(100), 10, 0, false), Verdict::Pass);
        assert_eq!(r.take(ms(100), 10, 0, false), Verdict::Limited);
        // A pause refills to the burst, not beyond.
        for _ in 0..20 {
            assert_eq!(r.take(ms(60_000), 10, 0, false), Verdict::Pass);
        }
        assert_eq!(r.take(ms(60_000), 10, 0, false), Verdict::Limited);
    }

    #[test]
    fn publications_have_their_own_bucket() {
        let mut r = Rate::new(ms(0), 100, 2);
        for _ in 0..4 {
            assert_eq!(r.take(ms(0), 100, 2, true), Verdict::Pass);
        }
        assert_eq!(r.take(ms(0), 100, 2, true), Verdict::Limited);
        // Other commands still pass.
        assert_eq!(r.take(ms(0), 100, 2, false), Verdict::Pass);
    }

    #[test]
    fn a_flood_is_closed_after_the_grace_even_if_some_commands_pass() {
        let mut r = Rate::new(ms(0), 1, 0);
        let mut verdicts = Vec::new();
        // Ten commands a second against a limit of one.
        for t in (0..=5_000).step_by(100) {
            verdicts.push((t, r.take(ms(t), 1, 0, false)));
        }
        let first_limited = verdicts
            .iter()
            .find(|(_, v)| *v == Verdict::Limited)
            .unwrap()
            .0;
        assert_eq!(first_limited, 200);
        assert!(verdicts
            .iter()
            .any(|(t, v)| *t > 1000 && *v == Verdict::Pass));
        assert!(verdicts.iter().all(|(_, v)| *v != Verdict::Close));
        assert_eq!(r.take(ms(5_200), 1, 0, false), Verdict::Close);
    }

    #[test]
    fn slowing_down_until_the_buckets_refill_forgives() {
        let mut r = Rate::new(ms(0), 1, 0);
        r.take(ms(0), 1, 0, false);
        r.take(ms(0), 1, 0, false);
        assert_eq!(r.take(ms(0), 1, 0, false), Verdict::Limited);
        // Two seconds of silence refill the burst: a new stretch starts.
        assert_eq!(r.take(ms(2_000), 1, 0, false), Verdict::Pass);
        assert_eq!(r.take(ms(2_000), 1, 0, false), Verdict::Pass);
        assert_eq!(r.take(ms(6_000), 1, 0, false), Verdict::Pass);
        assert_eq!(r.take(ms(6_000), 1, 0, false), Verdict::Pass);
        assert_eq!(r.take(ms(6_000), 1, 0, false), Verdict::Limited);
        assert_eq!(r.take(ms(6_100), 1, 0, false), Verdict::Limited);
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let mut r = Rate::new(ms(0), 0, 0);
        for _ in 0..100_000 {
            assert_eq!(r.take(ms(0), 0, 0, true), Verdict::Pass);
        }
    }
}
