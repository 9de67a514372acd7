//! What the node counts for the operator ([`crate::metrics`]): the
//! counters and the publications delivered since the driver last took
//! them, kept apart from the node's state.
//!
//! [`Observed`]'s equality and hash ignore its contents: the model checker
//! (`model/`) tells states apart by `Node`'s `Eq` and `Hash`, and two nodes
//! that differ only in what they counted behave the same (counting them
//! apart would multiply the states it explores for nothing).

use std::hash::{Hash, Hasher};

use crate::metrics::{subscriber_bucket, CommandKind, Counters, Fanout, MAX_FANOUTS};
use crate::time::Timestamp;

use super::Node;

/// The node's counters and its fan-out entries for the driver.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed {
    pub(super) counters: Counters,
    fanouts: Vec<Fanout>,
    /// The command the node is answering now, for the replies that do not
    /// say (errors): set around each command's handling and each answer
    /// that completes one ([`Node::answering`]).
    pub(super) answering: Option<CommandKind>,
}

impl PartialEq for Observed {
    fn eq(&self, _: &Observed) -> bool {
        true
    }
}

impl Eq for Observed {}

impl Hash for Observed {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// The time a request was sent to the backbone, kept beside it for the
/// round-trip histogram; like [`Observed`], not part of the node's state
/// for equality and hashing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent(pub(super) Timestamp);

impl PartialEq for Sent {
    fn eq(&self, _: &Sent) -> bool {
        true
    }
}

impl Eq for Sent {}

impl Hash for Sent {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl Observed {
    /// A publication that arrived at `now` was queued to `subscribers`
    /// local subscribers. Once per publication, not per subscriber: the
    /// fan-out path pays an add and a comparison, and allocates only when
    /// an input delivers to channels of alternating buckets.
    #[inline]
    pub(super) fn delivered(&mut self, now: Timestamp, subscribers: usize) {
        if subscribers == 0 {
            return;
        }
        self.counters.deliveries += subscribers as u64;
        let bucket = subscriber_bucket(subscribers) as u8;
        if let Some(last) = self.fanouts.last_mut() {
            if last.arrival == now && last.bucket == bucket {
                last.publications = last.publications.saturating_add(1);
                return;
            }
        }
        if self.fanouts.len() < MAX_FANOUTS {
            self.fanouts.push(Fanout {
                arrival: now,
                bucket,
                publications: 1,
            });
        }
    }
}

impl Node {
    /// Runs `f` as the handling of a `command` (`None`: of a message not
    /// yet known to be one): the error replies it sends are counted as
    /// that command's. Nested calls (a held command handled during
    /// another's answer) restore the outer one after.
    pub(super) fn answering<R>(
        &mut self,
        command: Option<CommandKind>,
        f: impl FnOnce(&mut Node) -> R,
    ) -> R {
        let outer = std::mem::replace(&mut self.observed.answering, command);
        let r = f(self);
        self.observed.answering = outer;
        r
    }

    /// What this node counted since it started (a copy, for the driver to
    /// sum over its shards).
    pub fn counters(&self) -> &Counters {
        &self.observed.counters
    }

    /// Takes the publications delivered since the last call: when each
    /// arrived and its subscriber-count bucket. The runtime calls it after
    /// its write pass, and observes each one's time from arrival to then.
    /// At most [`MAX_FANOUTS`] entries are kept between two calls.
    pub fn take_fanouts(&mut self) -> std::vec::Drain<'_, Fanout> {
        self.observed.fanouts.drain(..)
    }

    /// True if publications were delivered since [`Node::take_fanouts`]
    /// last took them (the driver reads its clock only then).
    pub fn has_fanouts(&self) -> bool {
        !self.observed.fanouts.is_empty()
    }
}
