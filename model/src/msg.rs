//! The messages actors exchange ([`Msg`], with [`Opaque`] wrapping the
//! core's backbone messages), the timers that are their nondeterministic
//! choices ([`Timer`]), and the outbox that batches one step's messages
//! per destination.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use stateright::actor::{Id, Out};
use wavecast_core::backbone::{BackboneCommand, BackboneEvent};

use crate::{Actor, TokenKind};

/// A value compared by its `Debug` text: stateright wants messages to be
/// `Ord`, and the core's backbone messages are only `Eq + Hash`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Opaque<T>(pub T);

impl<T: std::fmt::Debug + Eq> PartialOrd for Opaque<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: std::fmt::Debug + Eq> Ord for Opaque<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.0 == other.0 {
            return Ordering::Equal;
        }
        format!("{:?}", self.0).cmp(&format!("{:?}", other.0))
    }
}

/// Messages between actors. Client <-> server messages carry the client's
/// connection number, so a reconnected client ignores its old connection's
/// leftovers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Client: `connect` with this token (first, before subscribing).
    Connect {
        /// Connection number.
        conn: u32,
        /// The token sent.
        token: TokenKind,
    },
    /// Client: subscribe, recovering from a position if it has one.
    Subscribe {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Last (epoch, offset) seen on the channel.
        recover: Option<(String, u64)>,
    },
    /// Client: publish one publication.
    Publish {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// The data: a number unique to the publication.
        data: u64,
    },
    /// Client: the transport ends (abruptly, as a dropped TCP connection).
    Disconnect {
        /// Connection number.
        conn: u32,
    },
    /// Server: connect reply.
    Connected {
        /// Connection number.
        conn: u32,
        /// The user (empty: anonymous).
        user: String,
        /// Seconds until the token expires, if it does.
        ttl: Option<u64>,
    },
    /// Server: connect failed with this error code.
    ConnectFailed {
        /// Connection number.
        conn: u32,
        /// Error code.
        code: u64,
    },
    /// Server: subscribe reply.
    Subscribed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// The channel's epoch.
        epoch: String,
        /// Where the subscription starts.
        offset: u64,
        /// When recover was asked: `recovered` and the recovered
        /// publications (offset, data).
        recovery: Option<(bool, Vec<(u64, u64)>)>,
    },
    /// Server: subscribe failed with this error code.
    SubscribeFailed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Error code.
        code: u64,
    },
    /// Server: a publication push.
    Pub {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Its offset.
        offset: u64,
        /// Its data.
        data: u64,
    },
    /// Server: an unsubscribe push.
    Unsubscribed {
        /// Connection number.
        conn: u32,
        /// Channel index.
        ch: u8,
        /// Why (`unsubscribe_code`).
        code: u64,
    },
    /// Server: a close frame.
    Closed {
        /// Connection number.
        conn: u32,
        /// Close code.
        code: u16,
    },
    /// Server: a ping (answered by the hosted client transport, never
    /// delivered to the client actor).
    Ping {
        /// Connection number.
        conn: u32,
    },
    /// Client -> server: the client has gone silent: its transport stops
    /// reading and answering (a frozen process, a dead network path).
    Silent {
        /// Connection number.
        conn: u32,
    },
    /// Server: a frame the model does not understand (a violation).
    Garbage {
        /// Connection number.
        conn: u32,
        /// What it was.
        what: String,
    },
    /// Server -> backbone: a command.
    Cmd(Opaque<BackboneCommand>),
    /// Server -> backbone: my link was cut and is back.
    Reconnect,
    /// Backbone -> server: an event.
    Ev(Opaque<BackboneEvent>),
    /// Several messages on one link, sent in one step and handled in one
    /// step (what one drain of a node, or one command of the backbone,
    /// produces for one peer).
    Batch(Vec<Msg>),
}

/// Messages produced in one step, grouped by destination and sent as one
/// message each (see docs/MODEL.md, "Reductions").
#[derive(Default)]
pub(crate) struct Outbox(BTreeMap<Id, Vec<Msg>>);

impl Outbox {
    pub(crate) fn push(&mut self, to: Id, msg: Msg) {
        self.0.entry(to).or_default().push(msg);
    }

    pub(crate) fn send(self, o: &mut Out<Actor>) {
        for (to, mut msgs) in self.0 {
            let msg = if msgs.len() == 1 {
                msgs.pop().expect("one")
            } else {
                Msg::Batch(msgs)
            };
            o.send(to, msg);
        }
    }
}

/// Timers: the nondeterministic choices of servers and clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Server: cut the backbone link.
    Cut,
    /// Server: advance the clock to the node's next deadline (in the
    /// authenticating topology, first to one microsecond before it).
    Tick,
    /// Client: go silent (stop reading and answering).
    GoSilent,
    /// Client: publish the next publication of its script.
    Publish,
    /// Client: disconnect.
    Disconnect,
    /// Client: connect to this server (index).
    Connect(usize),
}
