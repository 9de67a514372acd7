//! The slab of a node's connections: a `Vec` of slots indexed by
//! [`ConnId`], each with a generation that is bumped when its connection
//! ends, so a stale handle never reaches a newer connection in the same
//! slot. Freed slots are reused; a slot costs a pointer while empty.

use crate::connection::Connection;
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
    /// Requests of this connection waiting for the backbone.
    pub(super) in_flight: u16,
    /// Channels subscribed or being subscribed.
    pub(super) subs: Vec<String>,
    /// The user the connection belongs to (empty: anonymous).
    pub(super) user: String,
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
