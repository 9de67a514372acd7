//! What a node counts for the operator: plain integers and fixed-bucket
//! histograms, owned by the one node (one shard thread) that updates them,
//! so that counting costs an add and never a lock or an atomic. The driver
//! reads a copy when asked ([`crate::node::Node::counters`]) and sums the
//! copies of every shard at scrape time; the runtime renders the sum as
//! Prometheus text.
//!
//! Nothing here is part of a node's state as the model checker sees it:
//! the node keeps these behind a wrapper whose equality and hash ignore
//! them (two nodes that differ only in what they counted behave the same).

use std::collections::BTreeMap;

use crate::close::CloseCode;
use crate::protocol::{ErrorCode, Reply};

/// Upper bounds of the latency histograms' buckets, in microseconds (the
/// last bucket, above the last bound, is `+Inf`). From 50 µs, where a
/// delivery to a few local subscribers lands, to 5 s, past which a
/// latency is an outage rather than a figure.
pub const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A latency histogram with the fixed bounds of [`LATENCY_BOUNDS_MICROS`]:
/// a count per bucket (not cumulative) and the sum. Observing is a short
/// search over 16 bounds and two adds; merging two is adding arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Histogram {
    /// Observations per bucket: `counts[i]` fell in
    /// `(bound[i-1], bound[i]]`; the last one above every bound.
    counts: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
    /// Sum of every observation, in microseconds.
    sum_micros: u64,
}

impl Histogram {
    /// Records one observation of `micros` microseconds.
    pub fn observe(&mut self, micros: u64) {
        self.observe_n(micros, 1);
    }

    /// Records `n` observations of `micros` microseconds each.
    pub fn observe_n(&mut self, micros: u64, n: u64) {
        let i = LATENCY_BOUNDS_MICROS.partition_point(|&b| b < micros);
        self.counts[i] += n;
        self.sum_micros = self.sum_micros.saturating_add(micros.saturating_mul(n));
    }

    /// Adds another histogram's observations to this one's.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }

    /// Each bucket's upper bound in seconds (`f64::INFINITY` last) with
    /// the observations in that bucket alone (not cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let bound = LATENCY_BOUNDS_MICROS
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64 / 1e6);
                (bound, c)
            })
            .collect()
    }

    /// The buckets as Prometheus has them: each upper bound in seconds
    /// (`f64::INFINITY` last) with the count of observations at or below
    /// it (cumulative).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.buckets()
            .into_iter()
            .map(|(bound, c)| {
                total += c;
                (bound, total)
            })
            .collect()
    }

    /// An upper estimate of the `q` quantile (0 to 1) in seconds: the
    /// upper bound of the bucket it falls in (`None` without observations;
    /// `f64::INFINITY` past the last bound). For a status page's p50/p99.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        self.cumulative()
            .into_iter()
            .find(|&(_, c)| c >= rank)
            .map(|(b, _)| b)
    }
}

/// How many subscriber-count buckets the fan-out histogram has.
pub const SUBSCRIBER_BUCKETS: usize = 6;

/// The label of each subscriber-count bucket: a publication delivered to
/// `n` local subscribers falls in bucket `i` when `10^i <= n < 10^(i+1)`
/// (the last bucket: 100,000 and more).
pub const SUBSCRIBER_BUCKET_LABELS: [&str; SUBSCRIBER_BUCKETS] =
    ["1-10", "10-100", "100-1k", "1k-10k", "10k-100k", "100k+"];

/// The subscriber-count bucket of a delivery to `n` subscribers (`n` of 0
/// counts as 1).
pub fn subscriber_bucket(n: usize) -> usize {
    match n {
        0..10 => 0,
        10..100 => 1,
        100..1_000 => 2,
        1_000..10_000 => 3,
        10_000..100_000 => 4,
        _ => 5,
    }
}

/// The kinds of client commands, as counted ([`Counters::commands`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandKind {
    /// `connect`.
    Connect,
    /// `refresh`.
    Refresh,
    /// `sub_refresh`.
    SubRefresh,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `publish`.
    Publish,
    /// `presence`.
    Presence,
    /// `history`.
    History,
}

impl CommandKind {
    /// Every kind, in the order of [`Counters::commands`].
    pub const ALL: [CommandKind; 8] = [
        CommandKind::Connect,
        CommandKind::Refresh,
        CommandKind::SubRefresh,
        CommandKind::Subscribe,
        CommandKind::Unsubscribe,
        CommandKind::Publish,
        CommandKind::Presence,
        CommandKind::History,
    ];

    /// The command's name on the wire (the metric's label).
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Connect => "connect",
            CommandKind::Refresh => "refresh",
            CommandKind::SubRefresh => "sub_refresh",
            CommandKind::Subscribe => "subscribe",
            CommandKind::Unsubscribe => "unsubscribe",
            CommandKind::Publish => "publish",
            CommandKind::Presence => "presence",
            CommandKind::History => "history",
        }
    }
}

/// How many command labels replies are counted by: each kind, and
/// `unknown` (a reply to a message that was not a command: a bad request
/// that still had an id).
pub const COMMAND_LABELS: usize = CommandKind::ALL.len() + 1;

/// The label of command index `i` of [`Counters::replies`].
pub fn command_label(i: usize) -> &'static str {
    CommandKind::ALL.get(i).map_or("unknown", |k| k.name())
}

/// The command a successful reply answers (an error reply does not say).
pub fn kind_of(reply: &Reply) -> Option<CommandKind> {
    Some(match reply {
        Reply::Subscribe { .. } => CommandKind::Subscribe,
        Reply::Unsubscribe => CommandKind::Unsubscribe,
        Reply::Publish { .. } => CommandKind::Publish,
        Reply::Presence { .. } => CommandKind::Presence,
        Reply::History { .. } => CommandKind::History,
        Reply::Connect { .. } => CommandKind::Connect,
        Reply::Refresh { .. } => CommandKind::Refresh,
        Reply::SubRefresh { .. } => CommandKind::SubRefresh,
        Reply::Error(_) | Reply::AppError { .. } => return None,
    })
}

/// How many result labels replies are counted by: success, each of
/// [`ErrorCode::ALL`], and the application's own codes together.
pub const RESULTS: usize = ErrorCode::ALL.len() + 2;

/// The label of result `i` of [`Counters::replies`]: `"0"` for success,
/// an error code's number, or `"app"` for an application's error code (a
/// proxy's `error`; counted together, so that a backend cannot grow the
/// number of series).
pub fn result_label(i: usize) -> String {
    match i {
        0 => "0".to_owned(),
        i if i <= ErrorCode::ALL.len() => ErrorCode::ALL[i - 1].code().to_string(),
        _ => "app".to_owned(),
    }
}

/// The result index of a reply ([`result_label`]).
pub fn result_of(reply: &Reply) -> usize {
    match reply {
        Reply::Error(e) => ErrorCode::ALL
            .iter()
            .position(|&c| c == e.code)
            .map_or(RESULTS - 1, |i| i + 1),
        Reply::AppError { .. } => RESULTS - 1,
        _ => 0,
    }
}

/// Most distinct close codes counted apart; a peer chooses its own close
/// code, so past this many the rest are counted together under code 0
/// (the label `"other"`), and a peer cannot grow the number of series.
pub const MAX_CLOSE_CODES: usize = 64;

/// The kinds of endpoint a connection is accepted on, in the order of
/// [`Counters::accepted`].
pub const ENDPOINT_LABELS: [&str; 3] = ["ws", "sse", "echo"];

/// A node's counts since it started: every field only grows. The sum of
/// two nodes' counts is [`Counters::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Connections the node took (after a WebSocket handshake, or an SSE
    /// request), by endpoint ([`ENDPOINT_LABELS`]).
    pub accepted: [u64; 3],
    /// SSE stream requests the node refused before the stream, by HTTP
    /// status (WebSocket refusals happen before the node; the runtime
    /// counts those).
    pub refused: BTreeMap<u16, u64>,
    /// Connections that ended, by close code (1006 when none was
    /// exchanged; 0 for "other", see [`MAX_CLOSE_CODES`]).
    pub closed: BTreeMap<u16, u64>,
    /// Connections closed because they did not take their bytes (the
    /// queue over its budget, or nothing taken for interval + timeout).
    pub slow_consumer_closes: u64,
    /// Connections closed because they kept pinging over their allowance
    /// (the connection's `ping_rate`; 4504 on `/ws`, 1008 on `/echo`).
    pub ping_flood_closes: u64,
    /// Client commands decoded, by kind ([`CommandKind::ALL`] order).
    pub commands: [u64; CommandKind::ALL.len()],
    /// Replies sent to client commands, by command ([`command_label`])
    /// and result ([`result_label`]).
    pub replies: [[u64; RESULTS]; COMMAND_LABELS],
    /// Client publications that the backbone accepted (given an offset).
    pub publications: u64,
    /// Publications queued to a local subscriber (one per subscriber and
    /// publication; WebSockets and SSE streams).
    pub deliveries: u64,
    /// Bytes read from connections' transports.
    pub bytes_read: u64,
    /// Bytes the driver reported written to connections' transports.
    pub bytes_written: u64,
    /// Subscribes with `recover` answered with every missed publication.
    pub recovered: u64,
    /// Subscribes with `recover` that could not be (`recovered: false`).
    pub not_recovered: u64,
    /// `unsubscribe` pushes with code 2500 (a gap the node could not
    /// fill; the subscriber resubscribes with recover).
    pub gaps: u64,
    /// Requests to the backbone that failed (answered with an error, or
    /// cut off by a reset of the link).
    pub backbone_errors: u64,
    /// Time from a request to the backbone to its reply, as the node saw
    /// it (from the input that made the request to the one that brought
    /// the answer: queueing both ways included).
    pub backbone_round_trip: Histogram,
}

impl Counters {
    /// Adds another node's counts to these.
    pub fn merge(&mut self, other: &Counters) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
        add(&mut self.accepted, &other.accepted);
        for (k, v) in &other.refused {
            *self.refused.entry(*k).or_default() += v;
        }
        for (k, v) in &other.closed {
            *self.closed.entry(*k).or_default() += v;
        }
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.ping_flood_closes += other.ping_flood_closes;
        add(&mut self.commands, &other.commands);
        for (a, b) in self.replies.iter_mut().zip(other.replies.iter()) {
            add(a, b);
        }
        self.publications += other.publications;
        self.deliveries += other.deliveries;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.gaps += other.gaps;
        self.backbone_errors += other.backbone_errors;
        self.backbone_round_trip.merge(&other.backbone_round_trip);
    }

    /// Counts a reply: to the command it names if it succeeded, else to
    /// `command`, the one the node was answering (`None`: not a command).
    pub(crate) fn count_reply(&mut self, reply: &Reply, command: Option<CommandKind>) {
        let kind = kind_of(reply).or(command);
        let k = kind.map_or(COMMAND_LABELS - 1, |k| k as usize);
        self.replies[k][result_of(reply)] += 1;
    }

    /// Counts a connection that ended with `code`.
    pub(crate) fn count_close(&mut self, code: CloseCode) {
        let key = if self.closed.len() < MAX_CLOSE_CODES || self.closed.contains_key(&code.0) {
            code.0
        } else {
            0
        };
        *self.closed.entry(key).or_default() += 1;
    }
}

/// Publications a node delivered since the driver last took them
/// ([`crate::node::Node::take_fanouts`]): when they arrived, and to how
/// many subscribers. The driver observes the time from `arrival` to the
/// end of its write pass into its fan-out histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// The `now` of the input that delivered them.
    pub arrival: crate::Timestamp,
    /// Their subscriber-count bucket ([`subscriber_bucket`]).
    pub bucket: u8,
    /// How many publications of that arrival and bucket (consecutive
    /// deliveries of one input to channels of one bucket are one entry).
    pub publications: u32,
}

/// Most [`Fanout`] entries a node keeps for its driver; past it (a driver
/// that never takes them, such as a test of the core alone) new ones are
/// not recorded, so the list never grows without bound. A driver that
/// takes them after every input never gets near it: the entries of one
/// input merge unless their buckets alternate.
pub const MAX_FANOUTS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_bounds_inclusive() {
        let mut h = Histogram::default();
        h.observe(50); // first bucket (<= 50 µs)
        h.observe(51); // second
        h.observe_n(10_000_000, 2); // +Inf
        assert_eq!(h.count(), 4);
        let c = h.cumulative();
        assert_eq!(c.len(), LATENCY_BOUNDS_MICROS.len() + 1);
        assert_eq!(c[0], (0.00005, 1));
        assert_eq!(c[1], (0.0001, 2));
        assert_eq!(c[15].1, 2);
        assert_eq!(c[16], (f64::INFINITY, 4));
        assert!((h.sum_seconds() - 20.000101).abs() < 1e-9);
        assert_eq!(h.quantile(0.5), Some(0.0001));
        assert_eq!(h.quantile(0.99), Some(f64::INFINITY));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut m = h.clone();
        m.merge(&h);
        assert_eq!(m.count(), 8);
        assert_eq!(m.cumulative()[1].1, 4);
    }

    #[test]
    fn subscriber_buckets_are_decades() {
        let cases = [
            (0, 0),
            (1, 0),
            (9, 0),
            (10, 1),
            (99, 1),
            (100, 2),
            (999, 2),
            (1_000, 3),
            (10_000, 4),
            (99_999, 4),
            (100_000, 5),
            (5_000_000, 5),
        ];
        for (n, b) in cases {
            assert_eq!(subscriber_bucket(n), b, "{n}");
        }
    }

    #[test]
    fn close_codes_past_the_bound_are_counted_together() {
        let mut c = Counters::default();
        for code in 0..MAX_CLOSE_CODES as u16 + 10 {
            c.count_close(CloseCode(3000 + code));
        }
        c.count_close(CloseCode(3000));
        assert_eq!(c.closed.len(), MAX_CLOSE_CODES + 1);
        assert_eq!(c.closed[&0], 10);
        assert_eq!(c.closed[&3000], 2);
    }

    #[test]
    fn results_label_success_codes_and_app() {
        assert_eq!(result_label(0), "0");
        assert_eq!(result_label(1), "100");
        assert_eq!(result_label(RESULTS - 2), "112");
        assert_eq!(result_label(RESULTS - 1), "app");
        let e = Reply::Error(crate::protocol::ErrorReply::new(
            ErrorCode::LimitExceeded,
            "x",
        ));
        assert_eq!(result_label(result_of(&e)), "107");
        let app = Reply::AppError {
            code: 1500,
            message: String::new(),
        };
        assert_eq!(result_label(result_of(&app)), "app");
        assert_eq!(result_of(&Reply::Unsubscribe), 0);
    }
}
