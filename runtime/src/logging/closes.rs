//! The per-interval summary of the closes that come in crowds: slow
//! consumers (4002: a queue over its budget, or a client that took no
//! bytes in time) and heartbeat timeouts (4001: a silent client). A
//! publication burst can cut thousands of slow readers at once; one info
//! line per `log_summary_interval` says how many instead of one line each
//! (each close is still logged, at debug, with its code and cause).
//!
//! Each shard counts its own closes in its own [`CloseTally`] (relaxed
//! atomic adds on a cache line of its own: no lock, nothing shared between
//! shards on the close path); [`CloseSummary`] sums them every interval
//! on the server's runtime and logs the difference when it is not zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use wavecast_core::close::CloseCode;
use wavecast_core::protocol::close;

/// One shard's counts of summarised closes since the start. Written by
/// its shard only; read by [`CloseSummary`].
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct CloseTally {
    slow_consumers: AtomicU64,
    heartbeat_timeouts: AtomicU64,
}

impl CloseTally {
    /// Counts a connection that closed with `code`, if it is one of the
    /// summarised codes.
    #[inline]
    pub fn count(&self, code: CloseCode) {
        let counter = match code {
            close::SLOW_CONSUMER => &self.slow_consumers,
            close::HEARTBEAT_TIMEOUT => &self.heartbeat_timeouts,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Counts {
        Counts {
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            heartbeat_timeouts: self.heartbeat_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// One tally per shard, by shard index.
pub fn tallies(shards: usize) -> Arc<[CloseTally]> {
    (0..shards).map(|_| CloseTally::default()).collect()
}

/// Summarised closes (since the start, or in an interval).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Closed with 4002.
    pub slow_consumers: u64,
    /// Closed with 4001.
    pub heartbeat_timeouts: u64,
}

impl Counts {
    fn sum(tallies: &[CloseTally]) -> Counts {
        tallies
            .iter()
            .map(CloseTally::read)
            .fold(Counts::default(), |a, b| Counts {
                slow_consumers: a.slow_consumers + b.slow_consumers,
                heartbeat_timeouts: a.heartbeat_timeouts + b.heartbeat_timeouts,
            })
    }

    fn since(self, earlier: Counts) -> Counts {
        Counts {
            slow_consumers: self.slow_consumers.saturating_sub(earlier.slow_consumers),
            heartbeat_timeouts: self
                .heartbeat_timeouts
                .saturating_sub(earlier.heartbeat_timeouts),
        }
    }

    fn is_zero(self) -> bool {
        self == Counts::default()
    }
}

/// The summary line of `counts` closed in `elapsed`, or `None` when
/// nothing was.
pub fn summary_line(counts: Counts, elapsed: Duration) -> Option<String> {
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut parts = Vec::new();
    if counts.slow_consumers > 0 {
        parts.push(format!(
            "{} (4002)",
            plural(counts.slow_consumers, "slow consumer", "slow consumers")
        ));
    }
    if counts.heartbeat_timeouts > 0 {
        parts.push(format!(
            "{} (4001, heartbeat timeout)",
            plural(
                counts.heartbeat_timeouts,
                "silent connection",
                "silent connections"
            )
        ));
    }
    if parts.is_empty() {
        return None;
    }
    // Whole seconds read better; a partial last interval keeps tenths.
    let secs = elapsed.as_secs_f64();
    let elapsed = if (secs - secs.round()).abs() < 0.05 {
        format!("{}s", secs.round())
    } else {
        format!("{secs:.1}s")
    };
    Some(format!(
        "closed {} in the last {elapsed}",
        parts.join(" and ")
    ))
}

/// Sums the shards' tallies every interval and logs what closed since the
/// last line (at info; nothing when nothing closed).
#[derive(Debug)]
pub struct CloseSummary {
    tallies: Arc<[CloseTally]>,
    timer: Interval,
    last: Counts,
    since: Instant,
}

impl CloseSummary {
    /// A summary of `tallies` every `interval`, the first one interval
    /// from now.
    pub fn new(tallies: Arc<[CloseTally]>, interval: Duration) -> CloseSummary {
        let now = Instant::now();
        let mut timer = tokio::time::interval_at(now + interval, interval);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        CloseSummary {
            tallies,
            timer,
            last: Counts::default(),
            since: now,
        }
    }

    /// Waits for the end of the interval.
    pub async fn tick(&mut self) {
        self.timer.tick().await;
    }

    /// Logs what closed since the last report, if anything (at the end of
    /// an interval, and once more at shutdown for the partial interval).
    pub fn report(&mut self) {
        let now = Instant::now();
        let total = Counts::sum(&self.tallies);
        let counts = total.since(self.last);
        let elapsed = now - self.since;
        self.last = total;
        self.since = now;
        if counts.is_zero() {
            return;
        }
        if let Some(line) = summary_line(counts, elapsed) {
            tracing::info!(
                slow_consumers = counts.slow_consumers,
                heartbeat_timeouts = counts.heartbeat_timeouts,
                interval_ms = elapsed.as_millis() as u64,
                "{line}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_only_the_summarised_codes_and_sum_over_shards() {
        let t = tallies(3);
        t[0].count(close::SLOW_CONSUMER);
        t[2].count(close::SLOW_CONSUMER);
        t[1].count(close::HEARTBEAT_TIMEOUT);
        t[1].count(close::SHUTDOWN);
        t[1].count(CloseCode::NORMAL);
        let sum = Counts::sum(&t);
        assert_eq!(
            sum,
            Counts {
                slow_consumers: 2,
                heartbeat_timeouts: 1
            }
        );
        t[0].count(close::SLOW_CONSUMER);
        assert_eq!(
            Counts::sum(&t).since(sum),
            Counts {
                slow_consumers: 1,
                heartbeat_timeouts: 0
            }
        );
    }

    #[test]
    fn the_line_names_what_closed() {
        let ten = Duration::from_secs(10);
        assert_eq!(summary_line(Counts::default(), ten), None);
        assert_eq!(
            summary_line(
                Counts {
                    slow_consumers: 37,
                    heartbeat_timeouts: 12
                },
                ten
            )
            .unwrap(),
            "closed 37 slow consumers (4002) and 12 silent connections (4001, heartbeat timeout) in the last 10s"
        );
        assert_eq!(
            summary_line(
                Counts {
                    slow_consumers: 0,
                    heartbeat_timeouts: 1
                },
                Duration::from_millis(2300)
            )
            .unwrap(),
            "closed 1 silent connection (4001, heartbeat timeout) in the last 2.3s"
        );
    }
}
