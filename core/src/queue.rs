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
    /// Bytes of the front frame already written (frames are far below
    /// 4 GiB: client messages are capped by `max_message_size`, API bodies
    /// by the API's limit). Packed with `pong` into one word: the queue is
    /// part of every idle connection.
    written: u32,
    /// Where the pending pong is: 0 when none, else 1 + its index from the
    /// front. At most one pong waits at a time ([`OutQueue::push_pong`]).
    pong: u32,
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

    /// Queues a pong, keeping at most one pong waiting: a pong queued
    /// earlier and not started yet is replaced in place by this one (RFC
    /// 6455 section 5.5.3 lets an endpoint answer only the most recent of
    /// several pings it has not answered yet), which costs nothing against
    /// the budget. Otherwise the pong is queued like any frame, under the
    /// budget, so a peer that pings and never reads fills its budget like
    /// any slow consumer instead of the server's memory.
    pub fn push_pong(&mut self, frame: Bytes, budget: usize) -> Result<(), OverBudget> {
        if let Some(index) = self.pending_pong() {
            let slot = if index == 0 {
                self.head.as_mut()
            } else {
                self.rest.get_mut(index - 1)
            };
            if let Some(slot) = slot {
                self.queued = self.queued - slot.len() + frame.len();
                *slot = frame;
                return Ok(());
            }
        }
        self.push(frame, budget)?;
        self.pong = u32::try_from(self.frames()).unwrap_or(0);
        Ok(())
    }

    /// The index from the front of a pong that is queued and not started.
    fn pending_pong(&self) -> Option<usize> {
        match self.pong {
            0 => None,
            1 if self.written > 0 => None,
            n => Some(n as usize - 1),
        }
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
                self.queued = front.len() - self.written as usize;
                self.rest = VecDeque::new();
                // Only a started pong at the front survives the discard.
                self.pong = u32::from(self.pong == 1);
            }
            _ => self.clear(),
        }
    }

    /// Drops everything and releases the storage.
    pub fn clear(&mut self) {
        self.head = None;
        self.rest = VecDeque::new();
        self.written = 0;
        self.pong = 0;
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
                &f[self.written as usize..]
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
            let left = front.len() - self.written as usize;
            if n >= left {
                n -= left;
                self.written = 0;
                self.head = self.rest.pop_front();
                self.pong = self.pong.saturating_sub(1);
            } else {
                // n < left <= the frame's length, which fits in u32.
                self.written += n as u32;
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
    fn at_most_one_pong_waits_and_the_latest_replaces_it() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"data"), 100).unwrap();
        q.push_pong(Bytes::from_static(b"p1"), 100).unwrap();
        q.push(Bytes::from_static(b"more"), 100).unwrap();
        q.push_pong(Bytes::from_static(b"pong2"), 100).unwrap();
        assert_eq!(collect(&q), b"datapong2more", "replaced in place");
        assert_eq!((q.frames(), q.len()), (3, 13));
        // Once the pong is started it is no longer replaced: the next one
        // queues behind it.
        q.advance(5);
        q.push_pong(Bytes::from_static(b"p3"), 100).unwrap();
        assert_eq!(collect(&q), b"ong2morep3");
        q.push_pong(Bytes::from_static(b"p4"), 100).unwrap();
        assert_eq!(collect(&q), b"ong2morep4");
        q.advance(q.len());
        assert!(q.is_empty());
        q.push_pong(Bytes::from_static(b"p5"), 100).unwrap();
        assert_eq!(collect(&q), b"p5");
    }

    #[test]
    fn a_pong_counts_against_the_budget() {
        let mut q = OutQueue::new();
        q.push(Bytes::from(vec![0; 10]), 8).unwrap();
        assert!(q.push_pong(Bytes::from_static(b"pp"), 8).is_err());
        assert_eq!(q.len(), 10, "refused: nothing queued");
    }

    #[test]
    fn discarding_forgets_an_unstarted_pong() {
        let mut q = OutQueue::new();
        q.push(Bytes::from_static(b"abcd"), 100).unwrap();
        q.push_pong(Bytes::from_static(b"p1"), 100).unwrap();
        q.advance(1);
        q.discard_unstarted();
        q.push_pong(Bytes::from_static(b"p2"), 100).unwrap();
        assert_eq!(collect(&q), b"bcdp2");
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
