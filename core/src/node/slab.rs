//! The slab of a node's connections: a `Vec` of slots indexed by
//! [`ConnId`], each with a generation that is bumped when its connection
//! ends, so a stale handle never reaches a newer connection in the same
//! slot. Freed slots are reused; a slot costs a pointer while empty.
//! [`IdQueue`] is the node's first-in first-out list of handles to write.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::connection::Connection;
use crate::protocol::Payload;
use crate::time::Timestamp;

use super::Endpoint;

/// A connection's handle within its node: slab index and generation, so a
/// stale handle never reaches a newer connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(super) index: u32,
    pub(super) generation: u32,
}

impl ConnId {
    /// The slab index (dense, reused after the connection ends).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The generation of the slot.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    generation: u32,
    /// Boxed: the slab grows by doubling, and an empty or spare slot should
    /// cost a pointer, not a whole client.
    client: Option<Box<Client>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// One connection and what the node keeps about it.
pub(super) struct Client {
    pub(super) conn: Connection,
    pub(super) endpoint: Endpoint,
    /// The deadline registered in `Node::timers`, if any.
    pub(super) timer: Option<Timestamp>,
    /// Already listed in `Node::transmit`.
    pub(super) listed: bool,
    /// Held back: at `max_requests_in_flight` with input left to handle;
    /// the driver was told to stop reading it.
    pub(super) paused: bool,
    /// Waiting for an answer from outside (a proxy, the key set): its
    /// input is held until the answer comes (see `ask.rs`).
    pub(super) held: bool,
    /// Requests of this connection waiting for the backbone.
    pub(super) in_flight: u16,
    /// Channels subscribed or being subscribed.
    pub(super) subs: Vec<String>,
    /// Who the connection is (see `auth.rs`).
    pub(super) auth: Auth,
    /// Its rate limits (see `rate.rs`).
    pub(super) rate: crate::rate::Rate,
}

/// Where a connection stands with authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Auth {
    /// Waiting for `connect` (authentication is on); closed with
    /// `CONNECT_TIMEOUT` at this time.
    Pending(Timestamp),
    /// On an open server (no authentication): anonymous, and `connect` may
    /// still come first (clients send it to learn their client id).
    Open,
    /// Connected without credentials.
    Anonymous,
    /// Connected as a user (boxed: most of a node's connections are one
    /// kind or the other, and an anonymous one pays 8 bytes for this).
    User(Box<Identity>),
}

/// Who a connection is: what its verified token (or the connect proxy)
/// said.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Identity {
    /// `sub` (or the proxy's `user`).
    pub(super) user: String,
    /// `exp` as a node time and as Unix seconds (`None`: no expiry).
    pub(super) expires: Option<(Timestamp, u64)>,
    /// What few connections have, boxed apart so that a connection with a
    /// plain token pays 8 bytes for it.
    pub(super) extra: Option<Box<Extra>>,
}

/// The rarer parts of an [`Identity`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Extra {
    /// `info`: public data about the connection, shown in presence.
    pub(super) info: Option<Payload>,
    /// When to ask the refresh proxy to extend the connection (its expiry,
    /// then retries); `None`: not asked (a token's identity, no refresh
    /// proxy, or a refresh in flight).
    pub(super) refresh_at: Option<Timestamp>,
}

impl Identity {
    /// An identity; `extra` is kept only if it holds something.
    pub(super) fn new(
        user: String,
        expires: Option<(Timestamp, u64)>,
        info: Option<Payload>,
        refresh_at: Option<Timestamp>,
    ) -> Identity {
        let extra = Extra { info, refresh_at };
        Identity {
            user,
            expires,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
        }
    }

    /// The connection's `info`.
    pub(super) fn info(&self) -> Option<&Payload> {
        self.extra.as_ref().and_then(|e| e.info.as_ref())
    }

    /// When the refresh proxy is asked next.
    pub(super) fn refresh_at(&self) -> Option<Timestamp> {
        self.extra.as_ref().and_then(|e| e.refresh_at)
    }

    /// Sets when the refresh proxy is asked next.
    pub(super) fn set_refresh_at(&mut self, at: Option<Timestamp>) {
        let info = self.extra.take().and_then(|e| e.info);
        *self = Identity::new(std::mem::take(&mut self.user), self.expires, info, at);
    }
}

impl Auth {
    /// The user, for an authenticated connection.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Auth::User(identity) => Some(&identity.user),
            Auth::Pending(_) | Auth::Open | Auth::Anonymous => None,
        }
    }

    /// The user as presence shows it (empty for anonymous).
    pub(super) fn presence_user(&self) -> String {
        self.user().unwrap_or_default().to_owned()
    }

    /// The connection's public `info`, if it has one.
    pub(super) fn info(&self) -> Option<&Payload> {
        match self {
            Auth::User(identity) => identity.info(),
            Auth::Pending(_) | Auth::Open | Auth::Anonymous => None,
        }
    }
}

/// The connections of a node, by [`ConnId`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Slab {
    /// Live connections.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Stores a new connection, in a free slot if there is one.
    pub(super) fn insert(&mut self, client: Client) -> ConnId {
        let id = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.client = Some(Box::new(client));
                ConnId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
                self.slots.push(Slot {
                    generation: 0,
                    client: Some(Box::new(client)),
                });
                ConnId {
                    index,
                    generation: 0,
                }
            }
        };
        self.live += 1;
        id
    }

    /// Takes a connection out; its slot's generation moves on, so `id` and
    /// every copy of it are stale from now on.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Box<Client>> {
        let slot = self.slots.get_mut(id.index())?;
        let client = slot.client.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.live -= 1;
        Some(client)
    }

    /// The live connection `id` names, if the generation still matches.
    #[inline]
    pub(super) fn get(&self, id: ConnId) -> Option<&Client> {
        let slot = self.slots.get(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.client.as_deref()
    }

    /// The live connection `id` names, if the generation still matches. A
    /// method of the slab, not of the node, so that callers can borrow the
    /// node's other fields meanwhile.
    #[inline]
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut Client> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.client.as_deref_mut()
    }

    /// Handles of every live connection, in slab order.
    pub(super) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.client.as_ref().map(|_| ConnId {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    /// Every live connection, in slab order.
    pub(super) fn clients(&self) -> impl Iterator<Item = &Client> + '_ {
        self.slots.iter().filter_map(|s| s.client.as_deref())
    }
}

/// A first-in first-out list of connection handles: what
/// `VecDeque<ConnId>` would be, compared, hashed and printed as one, but
/// with its `push_back` and `pop_front` inlined into the node's every
/// delivery. `VecDeque::push_back_mut` is not `#[inline]`: its one copy
/// is compiled with the crate's other `VecDeque` code, and when the
/// compiler's codegen units put that apart from `Node::after` (as since
/// the split of `node.rs` into this folder) each delivery calls it
/// (docs/BENCHMARKS.md). `Vec::push` and indexing are inlined wherever
/// they are used.
///
/// The handles are `ids[head..]`; popping moves `head` on, and the popped
/// prefix is reclaimed when the list empties or before it would grow.
#[derive(Clone, Default)]
pub(super) struct IdQueue {
    ids: Vec<ConnId>,
    head: usize,
}

impl IdQueue {
    /// Appends a handle.
    #[inline]
    pub(super) fn push_back(&mut self, id: ConnId) {
        if self.head > 0 && self.ids.len() == self.ids.capacity() {
            self.compact();
        }
        self.ids.push(id);
    }

    /// Takes the oldest handle.
    #[inline]
    pub(super) fn pop_front(&mut self) -> Option<ConnId> {
        let id = *self.ids.get(self.head)?;
        self.head += 1;
        if self.head == self.ids.len() {
            self.ids.clear();
            self.head = 0;
        }
        Some(id)
    }

    /// The handles, oldest first.
    fn as_slice(&self) -> &[ConnId] {
        &self.ids[self.head..]
    }

    /// Drops the popped prefix instead of growing past it.
    #[cold]
    fn compact(&mut self) {
        self.ids.drain(..self.head);
        self.head = 0;
    }
}

impl PartialEq for IdQueue {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for IdQueue {}

impl Hash for IdQueue {
    /// As `VecDeque`'s: the length, then each handle (the model's state
    /// fingerprints do not change).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for IdQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::collections::VecDeque;

    use super::*;

    fn id(index: u32) -> ConnId {
        ConnId {
            index,
            generation: index / 3,
        }
    }

    fn hash(value: &impl Hash) -> u64 {
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        h.finish()
    }

    /// Pushes and pops in a pattern that leaves a popped prefix, compacts
    /// and empties, checking each step against a `VecDeque`: same order,
    /// equality, hash and `Debug`; the storage stays within twice the
    /// longest the list has been.
    #[test]
    fn id_queue_is_a_vec_deque() {
        let mut q = IdQueue::default();
        let mut d = VecDeque::new();
        let mut next = 0;
        let mut longest = 0;
        for round in 0..200u32 {
            for _ in 0..(round % 7) {
                q.push_back(id(next));
                d.push_back(id(next));
                next += 1;
            }
            longest = longest.max(d.len());
            for _ in 0..(round % 5) {
                assert_eq!(q.pop_front(), d.pop_front());
            }
            assert_eq!(q.as_slice(), d.iter().copied().collect::<Vec<_>>());
            assert_eq!(hash(&q), hash(&d));
            assert_eq!(format!("{q:?}"), format!("{d:?}"));
            let mut same = IdQueue::default();
            for &i in &d {
                same.push_back(i);
            }
            assert_eq!(q, same);
            assert!(q.ids.capacity() <= 2 * longest.max(4));
        }
        while let Some(i) = d.pop_front() {
            assert_eq!(q.pop_front(), Some(i));
        }
        assert_eq!(q.pop_front(), None);
        assert_eq!(q, IdQueue::default());
    }
}
