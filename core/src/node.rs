//! One server shard's whole state as one state machine.
//!
//! A [`Node`] owns every connection of its shard (a slab indexed by
//! [`ConnId`]), one timer set for all of them, and the list of connections
//! with bytes to write. The driver (the runtime's shard, the model, a test):
//!
//! 1. feeds it: `handle_connect`, `handle_read`, `handle_eof`,
//!    `handle_written`, `handle_timeout` (safe early or twice);
//! 2. drains it, in this order: `poll_transmit()` (write each returned
//!    connection's `queue`, report with `handle_written`), then
//!    `poll_finished()` (drop those transports: the node keeps nothing of
//!    them), then `poll_timeout()` (when to call `handle_timeout` next).
//!
//! Timers: each connection has one registered deadline in a set ordered by
//! time. A read only moves a connection's deadline later, so the registered
//! entry is left in place and may fire early; firing early is harmless
//! because `Connection::handle_timeout` recomputes from its own instants.

use std::collections::{BTreeSet, VecDeque};

use crate::connection::{Connection, ConnectionConfig, Event};
use crate::frame::{self, OpCode};
use crate::message::CloseCode;
use crate::queue::OutQueue;
use crate::time::Timestamp;

/// A connection's handle within its node: slab index and generation, so a
/// stale handle never reaches a newer connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The slab index (dense, reused after the connection ends).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// What a connection is for, chosen by the path it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/echo`: every message goes back unchanged (conformance runs).
    Echo,
    /// `/ws` before the pub/sub protocol: held open, messages ignored.
    Hold,
}

/// Settings of a node.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Settings of every connection.
    pub connection: ConnectionConfig,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    client: Option<Client>,
}

#[derive(Debug)]
struct Client {
    conn: Connection,
    endpoint: Endpoint,
    /// The deadline registered in `Node::timers`, if any.
    timer: Option<Timestamp>,
    /// Already listed in `Node::transmit`.
    listed: bool,
}

/// One shard's connections and their timers.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    timers: BTreeSet<(Timestamp, ConnId)>,
    transmit: VecDeque<ConnId>,
    finished: VecDeque<ConnId>,
}

impl Node {
    /// An empty node.
    pub fn new(config: NodeConfig) -> Self {
        Node {
            config,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BTreeSet::new(),
            transmit: VecDeque::new(),
            finished: VecDeque::new(),
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Connections currently held.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// A connection whose handshake completed at `now`; `leftover` are the
    /// bytes that arrived after the request head.
    pub fn handle_connect(&mut self, now: Timestamp, endpoint: Endpoint, leftover: &[u8]) -> ConnId {
        let conn = Connection::new(now, self.config.connection.clone());
        let client = Client {
            conn,
            endpoint,
            timer: None,
            listed: false,
        };
        let id = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.client = Some(client);
                ConnId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
                self.slots.push(Slot {
                    generation: 0,
                    client: Some(client),
                });
                ConnId { index, generation: 0 }
            }
        };
        self.live += 1;
        if !leftover.is_empty() {
            self.with_conn(now, id, |c| c.handle_read(now, leftover));
        } else {
            self.after(now, id);
        }
        id
    }

    /// Bytes read from a connection's transport.
    pub fn handle_read(&mut self, now: Timestamp, id: ConnId, data: &[u8]) {
        self.with_conn(now, id, |c| c.handle_read(now, data));
    }

    /// A connection's transport reached end of stream or failed.
    pub fn handle_eof(&mut self, now: Timestamp, id: ConnId) {
        self.with_conn(now, id, |c| c.handle_eof(now));
    }

    /// The driver wrote `n` bytes of a connection's queue.
    pub fn handle_written(&mut self, now: Timestamp, id: ConnId, n: usize) {
        self.with_conn(now, id, |c| c.queue().advance(n));
    }

    /// Closes a connection with `code` (e.g. an operator's disconnect).
    pub fn close(&mut self, now: Timestamp, id: ConnId, code: CloseCode, reason: &str) {
        self.with_conn(now, id, |c| c.close(now, code, reason));
    }

    /// Closes every connection with `code` (graceful shutdown).
    pub fn close_all(&mut self, now: Timestamp, code: CloseCode, reason: &str) {
        let ids: Vec<ConnId> = self.ids().collect();
        for id in ids {
            self.close(now, id, code, reason);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(client) = self.client_mut(id) {
                client.timer = None;
            }
            self.with_conn(now, id, |c| c.handle_timeout(now));
        }
    }

    /// The earliest deadline of any connection.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next connection with bytes to write.
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(id) = self.transmit.pop_front() {
            if let Some(client) = self.client_mut(id) {
                client.listed = false;
                if !client.conn.queue().is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// A connection's outbound queue, for the driver to write from.
    pub fn queue(&mut self, id: ConnId) -> Option<&mut OutQueue> {
        self.client_mut(id).map(|c| c.conn.queue())
    }

    /// The next connection that has ended: drop its transport. The node has
    /// already released everything it held for it.
    pub fn poll_finished(&mut self) -> Option<ConnId> {
        self.finished.pop_front()
    }

    /// Handles of every live connection, in slab order.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.client.as_ref().map(|_| ConnId {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    /// Bytes queued for writing across all connections.
    pub fn queued_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.client.as_ref())
            .map(|c| c.conn.queued_bytes())
            .sum()
    }

    /// Timers registered (one at most per live connection).
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    fn client_mut(&mut self, id: ConnId) -> Option<&mut Client> {
        client_in(&mut self.slots, id)
    }

    /// Runs `f` on a live connection, then handles what it produced.
    fn with_conn(&mut self, now: Timestamp, id: ConnId, f: impl FnOnce(&mut Connection)) {
        let Some(client) = self.client_mut(id) else {
            return;
        };
        f(&mut client.conn);
        self.after(now, id);
    }

    /// Drains a connection's events, lists it for writing, re-arms its
    /// timer, and releases it once it is finished.
    fn after(&mut self, now: Timestamp, id: ConnId) {
        loop {
            let Some(client) = self.client_mut(id) else {
                return;
            };
            let Some(event) = client.conn.poll_event() else {
                break;
            };
            match (client.endpoint, event) {
                (Endpoint::Echo, Event::Text(b)) => {
                    let f = frame::encode(OpCode::Text, &b);
                    let _ = client.conn.send(now, f);
                }
                (Endpoint::Echo, Event::Binary(b)) => {
                    let f = frame::encode(OpCode::Binary, &b);
                    let _ = client.conn.send(now, f);
                }
                (Endpoint::Hold, Event::Text(_) | Event::Binary(_)) => {}
                (_, Event::Closed(_)) => {}
            }
        }
        let Some(client) = client_in(&mut self.slots, id) else {
            return;
        };
        if client.conn.is_finished() {
            self.release(id);
            return;
        }
        if !client.listed && !client.conn.queue().is_empty() {
            client.listed = true;
            self.transmit.push_back(id);
        }
        let want = client.conn.poll_timeout();
        let have = client.timer;
        // Re-register only when the deadline moves earlier (or none is set);
        // a later deadline is found when the early entry fires.
        if let Some(want) = want {
            if have.is_none_or(|h| want < h) {
                client.timer = Some(want);
                if let Some(h) = have {
                    self.timers.remove(&(h, id));
                }
                self.timers.insert((want, id));
            }
        }
    }

    fn release(&mut self, id: ConnId) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        let Some(client) = slot.client.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        if let Some(at) = client.timer {
            self.timers.remove(&(at, id));
        }
        self.free.push(id.index);
        self.live -= 1;
        self.finished.push_back(id);
    }

}

/// The live client in `id`'s slot, if the generation still matches. A free
/// function so callers can borrow other fields of the node meanwhile.
fn client_in(slots: &mut [Slot], id: ConnId) -> Option<&mut Client> {
    let slot = slots.get_mut(id.index())?;
    if slot.generation != id.generation {
        return None;
    }
    slot.client.as_mut()
}
