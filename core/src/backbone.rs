//! The interface between a node and the backbone.
//!
//! The backbone is the sequencer of every channel: it gives each
//! publication its offset, keeps each channel's bounded history and epoch,
//! holds presence, and broadcasts publications (and join/leave) to the
//! nodes that subscribed to the channel. In one process it is the in-memory
//! [`crate::hub::Hub`]; across servers it is Redis (in the runtime), and in
//! the model checker an actor with Redis's semantics.
//!
//! A node emits [`BackboneCommand`]s (`Node::poll_backbone`) and receives
//! [`BackboneEvent`]s (`Node::handle_backbone`). Nothing here assumes the two
//! directions are ordered with respect to each other, or that events on
//! different channels are: a node detects what it needs (offsets, epochs)
//! itself. Events of one channel to one node are delivered in the order the
//! backbone sent them, unless the backbone says otherwise with
//! [`BackboneEvent::Reset`].

use std::time::Duration;

use crate::protocol::{ClientInfo, Payload, Publication, StreamPosition};

/// Identifies a request a node made, so the reply finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How much history a channel keeps: set per namespace, passed with every
/// publication so the backbone needs no configuration of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryPolicy {
    /// Publications kept (0: none, recovery is then impossible).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
}

/// What a node asks of the backbone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackboneCommand {
    /// Start sending this node the channel's publications and join/leave.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// Stop sending them.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Sequence a publication: next offset, append to history, broadcast.
    Publish {
        /// Reply to this request with [`BackboneReply::Published`].
        request: RequestId,
        /// The channel.
        channel: String,
        /// The data.
        data: Payload,
        /// Who published it, for a client's publication (`None` for the
        /// API); delivered and kept with it.
        info: Option<Box<ClientInfo>>,
        /// History to keep for the channel.
        history: HistoryPolicy,
    },
    /// Read history: publications after `since` (or from the oldest kept),
    /// oldest first, at most `limit` (none: all kept).
    History {
        /// Reply to this request with [`BackboneReply::History`].
        request: RequestId,
        /// The channel.
        channel: String,
        /// Position to read after.
        since: Option<StreamPosition>,
        /// Most publications to return.
        limit: Option<usize>,
        /// Return the newest ones (after `since`, at most `limit`), newest
        /// first.
        reverse: bool,
    },
    /// A client of this node is now present in the channel.
    PresenceAdd {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
        /// Broadcast a join to the channel's subscribers.
        announce: bool,
    },
    /// A client of this node left the channel.
    PresenceRemove {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
        /// Broadcast a leave to the channel's subscribers.
        announce: bool,
    },
    /// Who is present in the channel.
    Presence {
        /// Reply to this request with [`BackboneReply::Presence`].
        request: RequestId,
        /// The channel.
        channel: String,
    },
}

/// What the backbone tells a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackboneEvent {
    /// A sequenced publication of a channel this node subscribed to.
    Publication {
        /// The channel.
        channel: String,
        /// The channel's epoch when it was published.
        epoch: String,
        /// Offset and data.
        publication: Publication,
    },
    /// A client joined a channel this node subscribed to.
    Join {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
    },
    /// A client left a channel this node subscribed to.
    Leave {
        /// The channel.
        channel: String,
        /// Who.
        info: ClientInfo,
    },
    /// The answer to a request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        reply: BackboneReply,
    },
    /// The link to the backbone was lost and is back: subscriptions and
    /// requests in flight are gone, and publications may have been missed.
    /// The node resubscribes and checks every channel for gaps.
    Reset,
}

/// Answers to requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackboneReply {
    /// The publication's position.
    Published(Result<StreamPosition, BackboneError>),
    /// A page of history.
    History(Result<HistoryPage, BackboneError>),
    /// The clients present.
    Presence(Result<Vec<ClientInfo>, BackboneError>),
}

/// A page of a channel's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HistoryPage {
    /// The channel's current epoch.
    pub epoch: String,
    /// The channel's latest offset (0: nothing published in this epoch).
    pub top: u64,
    /// Publications after the requested position, oldest first.
    pub publications: Vec<Publication>,
    /// True when `publications` are exactly all publications after the
    /// requested position up to `top`: same epoch, nothing trimmed from
    /// history in between, no limit hit. False means a gap the history
    /// cannot fill.
    pub complete: bool,
}

/// The backbone could not do what was asked; not the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BackboneError {
    /// The backbone is unreachable (Redis down); retry later.
    #[error("backbone unavailable")]
    Unavailable,
    /// The backbone answered something unexpected.
    #[error("backbone error: {0}")]
    Internal(String),
}

/// Identifies a node (one server shard) to the backbone: where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);
