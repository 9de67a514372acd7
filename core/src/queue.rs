//! A connection's outbound queue: shared frames with a byte budget.
//!
//! Frames are [`Bytes`], so one encoded publication can sit in the queues of
//! ten thousand connections as ten thousand reference counts on one buffer.
//! The queue allocates nothing until the first frame arrives and gives its
//! storage back once drained, so an idle connection holds no queue memory.
//! The driver writes from [`OutQueue::slices`] (one vectored write for a
//! burst of frames) and reports progress with [`OutQueue::advance`].

use std::collections::VecDeque;

use bytes::Bytes;

/// Most frames gathered into one vectored write.
pub const MAX_SLICES: usize = 64;

/// The queue is over its byte budget; the frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("outbound queue over budget: {queued} bytes queued, budget {budget}")]
pub struct OverBudget {
    /// Bytes queued when the frame was refused.
    pub queued: usize,
    /// The budget.
    pub budget: usize,
}

/// Outbound frames of one connection, in order, with a byte budget.
///
/// The front frame is held inline and only the frames behind it spill into
/// a `VecDeque`: fan-out to a subscriber that keeps up queues one frame at a
/// time, so the common case allocates nothing, and an idle connection holds
/// no storage (the spill is given back once empty).
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct OutQueue {
    /// The front frame; `None` only when the queue is empty.
    head: Option<Bytes>,
    /// The frames behind `head`.
    rest: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl OutQueue {
    /// An empty queue; allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frame` if the bytes already queued are within `budget`.
    ///
    /// The check is on what is already queued, so a single frame larger than
    /// the budget still goes to a connection that is keeping up.
    #[inline]
    pub fn push(&mut self, frame: Bytes, budget: usize) -> Result<(), OverBudget> {
        if self.queued > budget {
            return Err(OverBudget {
                queued: self.queued,
                budget,
            });
        }
        self.push_unchecked(frame);
        Ok(())
    }

    /// Queues `frame` whatever the budget (control frames, the close frame).
    #[inline]
    pub fn push_unchecked(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    /// Drops every queued frame except the unwritten rest of a frame that is
    /// partly written (the peer must still see whole frames).
    pub fn discard_unstarted(&mut self) {
        match &self.head {
            Some(front) if self.written > 0 => {
                self.queued = front.len() - self.written;
                self.rest = VecDeque::new();
            }
            _ => self.clear(),
        }
    }

    /// Drops everything and releases the storage.
    pub fn clear(&mut self) {
        self.head = None;
        self.rest = VecDeque::new();
        self.written = 0;
        self.queued = 0;
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True when nothing is waiting to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Frames queued (the front one counts while partly written).
    pub fn frames(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// The queued frames, in order, as they should be written: the front one
    /// from its first unwritten byte. At most [`MAX_SLICES`].
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().take(MAX_SLICES).enumerate().map(move |(i, f)| {
            if i == 0 {
                &f[self.written..]
            } else {
                &f[..]
            }
        })
    }

    /// Iterates over the queued frames themselves (for tests and the model).
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.head.iter().chain(self.rest.iter())
    }

    /// Records that the driver wrote `n` more bytes from the front.
    #[inline]
    pub fn advance(&mut self, mut n: usize) {
        n = n.min(self.queued);
        self.queued -= n;
        while n > 0 {
            let Some(front) = &self.head else {
                break;
            };
            let left = front.len() - self.written;
            if n >= left {
                n -= left;
                self.written = 0;
                self.head = self.rest.pop_front();
            } else {
                self.written += n;
                n = 0;
            }
        }
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            // Give a burst's storage back: idle connections hold nothing.
            self.rest = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(q: &OutQueue) -> Vec<u8> {
        q.slices().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn one_frame_at_a_time_allocates_nothing_and_a_drained_burst_gives_storage_back() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"one"), 100).unwrap();
        assert_eq!(q.rest.capacity(), 0, "a lone frame is held inline");
        q.advance(3);
        assert!(q.is_empty() && q.head.is_none());
        for f in [&b"ab"[..], b"cd", b"ef"] {
            q.push(Bytes::from_static(f), 100).unwrap();
        }
        assert!(q.rest.capacity() > 0, "a burst spills");
        assert_eq!(q.frames(), 3);
        q.advance(3); // all of "ab", half of "cd"
        assert_eq!(collect(&q), b"def");
        assert_eq!(q.frames(), 2);
        q.advance(3);
        assert!(q.is_empty() && q.head.is_none());
        assert_eq!(q.rest.capacity(), 0, "drained: the spill is given back");
    }

    #[test]
    fn discarding_keeps_only_a_started_front_frame() {
        let mut q = OutQueue::new();
        for f in [&b"abcd"[..], b"ef", b"gh"] {
            q.push(Bytes::from_static(f), 100).unwrap();
        }
        q.advance(1);
        q.discard_unstarted();
        assert_eq!(collect(&q), b"bcd");
        assert_eq!((q.len(), q.frames()), (3, 1));
        q.advance(3);
        q.push(Bytes::from_static(b"xy"), 100).unwrap();
        q.discard_unstarted();
        assert!(q.is_empty() && q.frames() == 0);
    }

    #[test]
    fn writes_in_order_across_partial_advances() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"abc"), 100).unwrap();
        q.push(Bytes::from_static(b"defg"), 100).unwrap();
        assert_eq!(q.len(), 7);
        q.advance(2);
        assert_eq!(collect(&q), b"cdefg");
        q.advance(2);
        assert_eq!(collect(&q), b"efg");
        assert_eq!(q.frames(), 1);
        q.advance(10);
        assert!(q.is_empty());
        assert_eq!(q.frames(), 0);
    }

    #[test]
    fn budget_refuses_once_exceeded() {
        let mut q = OutQueue::new();
        q.push(Bytes::from(vec![0; 10]), 8).unwrap();
        let err = q.push(Bytes::from_static(b"x"), 8).unwrap_err();
        assert_eq!(
            err,
            OverBudget {
                queued: 10,
                budget: 8
            }
        );
        q.push_unchecked(Bytes::from_static(b"close"));
        assert_eq!(q.len(), 15);
    }

    #[test]
    fn discard_keeps_the_partly_written_frame() {
        let mut q = OutQueue::new();
        q.push_unchecked(Bytes::from_static(b"12345"));
        q.push_unchecked(Bytes::from_static(b"678"));
        q.advance(2);
        q.discard_unstarted();
        assert_eq!(collect(&q), b"345");
        q.advance(3);
        q.push_unchecked(Bytes::from_static(b"9"));
        q.discard_unstarted();
        assert!(q.is_empty());
    }

    #[test]
    fn shared_frames_are_not_copied() {
        let frame = Bytes::from(vec![7u8; 1000]);
        let mut a = OutQueue::new();
        let mut b = OutQueue::new();
        a.push(frame.clone(), 10_000).unwrap();
        b.push(frame.clone(), 10_000).unwrap();
        let pa = a.iter().next().unwrap().as_ptr();
        let pb = b.iter().next().unwrap().as_ptr();
        assert_eq!(pa, frame.as_ptr());
        assert_eq!(pb, frame.as_ptr());
    }
}
