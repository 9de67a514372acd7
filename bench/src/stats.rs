//! Recording deliveries and turning them into figures.
//!
//! Every subscriber task of a process records into one shared
//! [`Recorder`], allocated once before the first connection: per
//! publication a receive counter and the largest latency seen (the time to
//! the last subscriber), plus one log-linear histogram of every delivery's
//! latency. Recording is a handful of relaxed atomic operations and no
//! allocation. Worker processes ship their recorder as a [`GroupResult`];
//! the parent merges them.
//!
//! Time is `CLOCK_MONOTONIC` in nanoseconds, which every process on the
//! machine shares, so a worker can compute the latency of a publication
//! whose send time the parent wrote into it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// Nanoseconds of `CLOCK_MONOTONIC`: shared by all processes of the machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call; CLOCK_MONOTONIC is always available on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Buckets covering every u64: the first 2*SUB values exactly, then SUB
/// per power of two.
pub const BUCKETS: usize = SUB * (64 - SUB_BITS as usize + 1);

/// The histogram bucket of a value.
pub fn bucket_of(v: u64) -> usize {
    let msb = 63u32.saturating_sub(v.leading_zeros());
    if msb <= SUB_BITS {
        // Small values (< 128) map one to one.
        v as usize
    } else {
        let shift = msb - SUB_BITS;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        (shift as usize + 1) * SUB + sub
    }
}

/// The largest value a bucket holds (the figure reported for it: latency
/// percentiles round up, never down).
pub fn bucket_high(b: usize) -> u64 {
    if b < 2 * SUB {
        return b as u64;
    }
    let shift = (b / SUB - 1) as u32;
    let sub = (b % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

/// A latency histogram that many tasks add to at once.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Counts one value.
    pub fn add(&self, v: u64) {
        if let Some(b) = self.buckets.get(bucket_of(v)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The non-empty buckets as (bucket, count) pairs.
    pub fn sparse(&self) -> Vec<(u32, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.load(Ordering::Relaxed);
                (c > 0).then_some((i as u32, c))
            })
            .collect()
    }
}

/// Percentiles of a sparse histogram (bucket, count), buckets ascending or
/// not.
pub fn percentiles_of_sparse(sparse: &[(u32, u64)]) -> Percentiles {
    let mut sorted: Vec<(u32, u64)> = sparse.to_vec();
    sorted.sort_unstable();
    let total: u64 = sorted.iter().map(|(_, c)| c).sum();
    let at = |q: f64| -> u64 {
        if total == 0 {
            return 0;
        }
        // Rank of the q-quantile, 1-based, at least 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for &(b, c) in &sorted {
            seen += c;
            if seen >= rank {
                return bucket_high(b as usize);
            }
        }
        sorted.last().map_or(0, |&(b, _)| bucket_high(b as usize))
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        count: total,
    }
}

/// Exact percentiles of a list of values.
pub fn percentiles_of_values(values: &mut [u64]) -> Percentiles {
    values.sort_unstable();
    let n = values.len();
    let at = |q: f64| -> u64 {
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        values.get(rank - 1).copied().unwrap_or(0)
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
        count: n as u64,
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Values counted.
    pub count: u64,
}

/// What each subscriber task keeps of its own: the highest sequence number
/// seen (for out-of-order detection) and whether it has the last one.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriberState {
    highest: Option<u64>,
    finished: bool,
}

/// The shared record of one process's deliveries.
#[derive(Debug)]
pub struct Recorder {
    publications: u64,
    counts: Box<[AtomicU32]>,
    max_latency: Box<[AtomicU64]>,
    histogram: Histogram,
    out_of_order: AtomicU64,
    unexpected: AtomicU64,
    deliveries: AtomicU64,
    finished: AtomicUsize,
    last_delivery_ns: AtomicU64,
    bytes_received: AtomicU64,
}

impl Recorder {
    /// A recorder for publications numbered 0 to `publications - 1`.
    pub fn new(publications: u64) -> Recorder {
        let n = usize::try_from(publications).unwrap_or(usize::MAX);
        Recorder {
            publications,
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            max_latency: (0..n).map(|_| AtomicU64::new(0)).collect(),
            histogram: Histogram::default(),
            out_of_order: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            last_delivery_ns: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }

    /// Records that a subscriber received publication `seq` sent at
    /// `sent_ns`.
    pub fn record(&self, state: &mut SubscriberState, seq: u64, sent_ns: u64) {
        let now = now_ns();
        let latency = now.saturating_sub(sent_ns);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        let slot = usize::try_from(seq).ok();
        let (Some(count), Some(max)) = (
            slot.and_then(|i| self.counts.get(i)),
            slot.and_then(|i| self.max_latency.get(i)),
        ) else {
            // A sequence number this run never sent: left over from another
            // run on the same channel, or corrupted.
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        count.fetch_add(1, Ordering::Relaxed);
        max.fetch_max(latency, Ordering::Relaxed);
        self.histogram.add(latency);
        match state.highest {
            Some(h) if seq < h => {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            Some(h) if seq == h => {} // a duplicate: the counts show it
            _ => state.highest = Some(seq),
        }
        if !state.finished && seq + 1 == self.publications {
            state.finished = true;
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts bytes a subscriber read from its socket.
    pub fn add_bytes(&self, n: u64) {
        if n > 0 {
            self.bytes_received.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Subscribers that have received the last publication.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Relaxed)
    }

    /// When the last delivery arrived (0 = none yet).
    pub fn last_delivery_ns(&self) -> u64 {
        self.last_delivery_ns.load(Ordering::Relaxed)
    }

    /// Deliveries so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// A snapshot for the report (or for a worker's parent).
    pub fn result(&self) -> GroupResult {
        GroupResult {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            max_latency_ns: self
                .max_latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            histogram: self.histogram.sparse(),
            out_of_order: self.out_of_order.load(Ordering::Relaxed),
            unexpected: self.unexpected.load(Ordering::Relaxed),
            deliveries: self.deliveries(),
            last_delivery_ns: self.last_delivery_ns(),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// The deliveries of one group of subscribers (a process), mergeable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupResult {
    /// Per publication, how many subscribers received it.
    pub counts: Vec<u32>,
    /// Per publication, the largest latency (to the group's last subscriber).
    pub max_latency_ns: Vec<u64>,
    /// Per-delivery latency histogram, sparse (bucket, count).
    pub histogram: Vec<(u32, u64)>,
    /// Deliveries older than one the subscriber had already received.
    pub out_of_order: u64,
    /// Deliveries of sequence numbers this run never sent.
    pub unexpected: u64,
    /// All deliveries.
    pub deliveries: u64,
    /// Monotonic time of the last delivery.
    pub last_delivery_ns: u64,
    /// Bytes the subscribers read from their sockets once subscribed
    /// (frames as sent: compressed ones compressed).
    #[serde(default)]
    pub bytes_received: u64,
}

impl GroupResult {
    /// Adds another group's deliveries to this one.
    pub fn merge(&mut self, other: &GroupResult) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
            self.max_latency_ns.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.max_latency_ns.iter_mut().zip(&other.max_latency_ns) {
            *a = (*a).max(*b);
        }
        let mut hist: std::collections::BTreeMap<u32, u64> =
            self.histogram.iter().copied().collect();
        for &(b, c) in &other.histogram {
            *hist.entry(b).or_insert(0) += c;
        }
        self.histogram = hist.into_iter().collect();
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.deliveries += other.deliveries;
        self.bytes_received += other.bytes_received;
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
    }
}

/// Handshake figures of a group of connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Connections subscribed.
    pub connected: u64,
    /// Connections that failed (refused, timed out, server error).
    pub failed: u64,
    /// Of those, connections whose `connect` the server refused
    /// (`--token-hmac-secret`).
    #[serde(default)]
    pub refused: u64,
    /// Of the connected, those that negotiated permessage-deflate.
    #[serde(default)]
    pub compressed: u64,
    /// Monotonic time the first connection started.
    pub started_ns: u64,
    /// Monotonic time the last one was subscribed.
    pub finished_ns: u64,
}

impl ConnectResult {
    /// Adds another group's connections.
    pub fn merge(&mut self, other: &ConnectResult) {
        self.connected += other.connected;
        self.failed += other.failed;
        self.refused += other.refused;
        self.compressed += other.compressed;
        self.started_ns = if self.started_ns == 0 {
            other.started_ns
        } else {
            self.started_ns.min(other.started_ns)
        };
        self.finished_ns = self.finished_ns.max(other.finished_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_one_in_sixty_four() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            for x in [v, v + 1, v * 3 / 2] {
                let b = bucket_of(x);
                assert!(b < BUCKETS);
                let high = bucket_high(b);
                assert!(high >= x, "{x} -> bucket {b} high {high}");
                assert!(high - x <= x / 64, "{x} -> bucket {b} high {high}");
            }
            v = v * 2 + 1;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn recorder_counts_loss_duplicates_and_reordering() {
        let r = Recorder::new(4);
        let mut a = SubscriberState::default();
        let mut b = SubscriberState::default();
        let t = now_ns();
        for seq in [0, 1, 2, 3] {
            r.record(&mut a, seq, t);
        }
        // b: 0, 2, 1 (out of order), 2 again (duplicate), never 3; and 9
        // was never sent.
        for seq in [0, 2, 1, 2, 9] {
            r.record(&mut b, seq, t);
        }
        let g = r.result();
        assert_eq!(g.counts, vec![2, 2, 3, 1]);
        assert_eq!(g.out_of_order, 1);
        assert_eq!(g.unexpected, 1);
        assert_eq!(g.deliveries, 9);
        assert_eq!(r.finished(), 1);
        let hist_total: u64 = g.histogram.iter().map(|(_, c)| c).sum();
        assert_eq!(hist_total, 8);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_larger_latency() {
        let mut a = GroupResult {
            counts: vec![1, 2],
            max_latency_ns: vec![10, 5],
            histogram: vec![(3, 1)],
            ..GroupResult::default()
        };
        let b = GroupResult {
            counts: vec![1, 0],
            max_latency_ns: vec![7, 9],
            histogram: vec![(3, 2), (1, 1)],
            out_of_order: 2,
            ..GroupResult::default()
        };
        a.merge(&b);
        assert_eq!(a.counts, vec![2, 2]);
        assert_eq!(a.max_latency_ns, vec![10, 9]);
        assert_eq!(a.histogram, vec![(1, 1), (3, 3)]);
        assert_eq!(a.out_of_order, 2);
    }

    #[test]
    fn percentiles_follow_the_nearest_rank_definition() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles_of_values(&mut v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50, 90, 99, 100, 100)
        );
        let sparse: Vec<(u32, u64)> = (1..=100u64).map(|x| (bucket_of(x) as u32, 1)).collect();
        let h = percentiles_of_sparse(&sparse);
        assert!(h.p50 >= 50 && h.p50 <= 51, "{h:?}");
        assert_eq!(h.count, 100);
        assert_eq!(percentiles_of_values(&mut []).count, 0);
    }
}
