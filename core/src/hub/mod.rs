//! The in-memory backbone: the sequencer of every channel in single-server
//! mode.
//!
//! A [`Hub`] implements the backbone side of [`crate::backbone`] inside one
//! process. Per channel it holds the epoch, the top offset, the bounded
//! history, the set of subscribed nodes and the presence map. Everything
//! it wants delivered is queued as `(NodeId, BackboneEvent)` and drained with
//! [`Hub::poll_event`], in the order queued, so the events of one node
//! arrive in the order the hub decided them (delivery contract, rule 1).
//!
//! Channel lifetime: a channel is created on first use (subscribe, publish,
//! presence add) with a fresh epoch, and dropped as soon as nothing is left
//! in it: no subscribed node, no presence, no publication kept. Dropping is
//! eager (at the operation that empties the channel), and a channel whose
//! last publications have expired counts as dropped from that instant, even
//! before [`Hub::handle_timeout`] frees it: the hub's answers never depend
//! on when a driver happens to call the timeout (only its memory does). A
//! dropped channel used again gets a new epoch, so positions from before
//! can never be mistaken for positions after: recovery from them reports a
//! gap. (So does a channel with history size 0 that nobody subscribes to:
//! each publication to it starts a new epoch, at offset 1.)
//!
//! History is a contiguous run of offsets `first..=top` (possibly empty),
//! trimmed from the front by count (at publish) and by age (at publish, at
//! read and at timeouts). Contiguity is what makes the completeness answer
//! of a history read a simple comparison.
//!
//! Memory budget: all history together is held to a [`HistoryBudget`] (most
//! channels holding history, most bytes of history: payload plus
//! [`ENTRY_OVERHEAD`] per publication, plus a client's sender with its
//! `conn_info` and `chan_info`), checked after every publication.
//! Over either limit the hub evicts the oldest history first, across
//! channels: the hub's oldest kept publication (by a hub-wide sequence
//! number, found through an ordered index, O(log n)) while over the byte
//! limit; the whole history of the channel holding it while over the
//! channel limit. A publication larger than the whole byte budget is
//! delivered to the subscribers but not kept (and, as with history size 0,
//! the channel's earlier history goes with it). Only history counts: a
//! channel with subscribers or presence and no history is held by its
//! clients, not by the hub, and is not limited here.
//!
//! Eviction needs no epoch change to stay honest, because it only ever
//! trims a channel's history from the front, like count and age do: the
//! offsets kept stay a contiguous run ending at top, and a read from any
//! position before the first kept offset reports `complete: false` (so a
//! recovering client is told `recovered: false`), while a position at or
//! after it has lost nothing and recovers exactly. A channel that eviction
//! leaves with nothing (no history, subscribers or presence) is dropped
//! like an expired one, so its next use gets a new epoch.
//!
//! The module is cut by job: this file holds the [`Hub`], its channel map
//! and the operations that keep its invariants (eager drop, the wakeups,
//! commands, publish, node removal, timeouts); `history.rs` a channel's
//! bounded history (kept entries, expiry, reads) and the server-wide
//! [`HistoryBudget`] with its eviction; `presence.rs` the presence map's
//! adds, removes and reads.

mod history;
mod presence;

use std::collections::{btree_map, BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::backbone::{BackboneCommand, BackboneEvent, BackboneReply, HistoryPolicy, NodeId};
use crate::protocol::{ClientInfo, Payload, Publication, StreamPosition};
use crate::Timestamp;

use history::{entry_cost, Entry, Usage};
pub use history::{HistoryBudget, ENTRY_OVERHEAD, INFO_JSON_OVERHEAD, INFO_OVERHEAD};
use presence::Present;

/// What the hub knows of one channel (for the HTTP API's channel list and
/// for tests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelStats {
    /// The channel's name.
    pub name: String,
    /// Nodes subscribed to it, in order.
    pub nodes: Vec<NodeId>,
    /// Clients present in it.
    pub presence: usize,
    /// Its current epoch.
    pub epoch: String,
    /// Its latest offset (0: nothing published in this epoch).
    pub top: u64,
    /// Publications kept in its history. Entries past their age are counted
    /// until a publish, read or timeout removes them; likewise a channel
    /// whose content has all expired is listed until then.
    pub kept: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HubChannel {
    epoch: String,
    top: u64,
    /// Offsets `top - history.len() + 1 ..= top`, oldest first, with
    /// non-decreasing `at`.
    history: VecDeque<Entry>,
    /// The ttl of the latest publication's policy: one ttl for the whole
    /// history keeps expiry times non-decreasing along it, so expiry only
    /// ever trims the front and history stays contiguous.
    ttl: Duration,
    subscribers: BTreeSet<NodeId>,
    presence: BTreeMap<String, Present>,
    /// The deadline registered for this channel in `Hub::wakeups`, if any.
    wake: Option<Timestamp>,
    /// The sequence number under which this channel is filed in
    /// `Hub::oldest`, if it is. Always set while history is kept.
    indexed: Cache<Option<u64>>,
}

/// Bookkeeping that only speeds up what the rest of the state determines:
/// equal and hashed alike whatever it holds, so that two hubs that differ
/// only in it (an index entry filed earlier or later) are the same state
/// for the model checker.
#[derive(Debug, Clone, Default)]
struct Cache<T>(T);

impl<T> PartialEq for Cache<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Cache<T> {}

impl<T> std::hash::Hash for Cache<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl HubChannel {
    fn new(epoch: String) -> HubChannel {
        HubChannel {
            epoch,
            top: 0,
            history: VecDeque::new(),
            ttl: Duration::ZERO,
            subscribers: BTreeSet::new(),
            presence: BTreeMap::new(),
            wake: None,
            indexed: Cache(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.presence.is_empty() && self.history.is_empty()
    }

    /// A channel whose content has all expired counts as dropped, whether
    /// or not a timeout has removed it yet: used again, it starts a new
    /// epoch, exactly as if it had been dropped on time. This keeps the
    /// hub's answers independent of when the driver calls
    /// `handle_timeout`.
    fn restart_if_empty(
        &mut self,
        now: Timestamp,
        seed: u64,
        created: &mut u64,
        usage: &mut Usage,
    ) {
        self.expire(now, usage);
        if self.is_empty() {
            self.epoch = Hub::next_epoch(seed, created);
            self.top = 0;
        }
    }
}

/// The in-memory backbone. Deterministic: the same seed and the same calls
/// give the same events and epochs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hub {
    seed: u64,
    /// Channels created so far: the input, with the seed, of the next epoch.
    created: u64,
    channels: BTreeMap<String, HubChannel>,
    events: VecDeque<(NodeId, BackboneEvent)>,
    /// One entry per channel with history: a time at or before its oldest
    /// publication's expiry. It may be early (the front moved on since), in
    /// which case the timeout just registers the new deadline; it is never
    /// late.
    wakeups: BTreeSet<(Timestamp, String)>,
    budget: HistoryBudget,
    usage: Usage,
    /// The sequence number of the next kept publication.
    next_seq: u64,
    /// The eviction order: one entry per channel with history (see
    /// `HubChannel::indexed`), a sequence number at or before that of its
    /// oldest kept publication. Like `wakeups` it may be early (the front
    /// moved on since, by count or age), in which case eviction files it
    /// again under the right number; so the first entry that is up to date
    /// holds the hub's oldest publication, and no publication's trim
    /// touches the index.
    /// It is derived from the kept publications' sequence numbers (which
    /// alone decide what eviction takes), hence a [`Cache`].
    oldest: Cache<BTreeSet<(u64, String)>>,
}

/// The epoch of a channel that the hub does not know, returned by reads of
/// such a channel. Real epochs are never empty, so no position a client got
/// from a real channel matches it.
pub const NO_EPOCH: &str = "";

/// The `n`th epoch of a hub seeded with `seed`: splitmix64's output for
/// that step. Both steps (adding an odd multiple of `n`, the finalizer) are
/// bijections of u64, so one hub never repeats an epoch, and hubs with
/// different seeds (a restarted server) produce unrelated ones.
fn epoch_string(seed: u64, n: u64) -> String {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{z:016x}")
}

impl Hub {
    /// A hub with no channels. `epoch_seed` makes epochs differ between
    /// runs and processes (the runtime passes a random value, the model a
    /// fixed one), so that a client's position from a previous run of the
    /// server is never taken for a position in this one.
    ///
    /// History is held to the default [`HistoryBudget`].
    pub fn new(epoch_seed: u64) -> Hub {
        Hub::with_budget(epoch_seed, HistoryBudget::default())
    }

    /// A hub with no channels whose history is held to `budget`.
    pub fn with_budget(epoch_seed: u64, budget: HistoryBudget) -> Hub {
        Hub {
            seed: epoch_seed,
            created: 0,
            channels: BTreeMap::new(),
            events: VecDeque::new(),
            wakeups: BTreeSet::new(),
            budget,
            usage: Usage::default(),
            next_seq: 0,
            oldest: Cache(BTreeSet::new()),
        }
    }

    /// The budget the hub's history is held to.
    pub fn budget(&self) -> HistoryBudget {
        self.budget
    }

    /// Bytes of history kept now, as counted against
    /// [`HistoryBudget::max_bytes`] (entries past their age included until
    /// a publish, read or timeout removes them). Never above the budget
    /// after a call returns.
    pub fn history_bytes(&self) -> usize {
        self.usage.bytes
    }

    /// Channels holding history now, as counted against
    /// [`HistoryBudget::max_channels`]. Never above the budget after a call
    /// returns.
    pub fn channels_with_history(&self) -> usize {
        self.usage.channels
    }

    fn next_epoch(seed: u64, created: &mut u64) -> String {
        let epoch = epoch_string(seed, *created);
        *created = created.wrapping_add(1);
        epoch
    }

    /// A command from node `from` (see [`BackboneCommand`]). Replies and broadcasts
    /// are queued as events.
    pub fn handle_command(&mut self, now: Timestamp, from: NodeId, cmd: BackboneCommand) {
        match cmd {
            BackboneCommand::Subscribe { channel } => {
                channel_entry(
                    &mut self.channels,
                    self.seed,
                    &mut self.created,
                    &mut self.usage,
                    now,
                    channel,
                )
                .subscribers
                .insert(from);
            }
            BackboneCommand::Unsubscribe { channel } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.subscribers.remove(&from);
                    self.drop_if_empty(now, &channel);
                }
            }
            BackboneCommand::Publish {
                request,
                channel,
                data,
                info,
                history,
            } => {
                let position = self.publish(now, &channel, data, info, history);
                let reply = BackboneReply::Published(Ok(position));
                self.events
                    .push_back((from, BackboneEvent::Reply { request, reply }));
            }
            BackboneCommand::History {
                request,
                channel,
                since,
                limit,
                reverse,
            } => {
                let page = self.history_page(now, &channel, since.as_ref(), limit, reverse);
                let reply = BackboneReply::History(Ok(page));
                self.events
                    .push_back((from, BackboneEvent::Reply { request, reply }));
            }
            BackboneCommand::PresenceAdd {
                channel,
                info,
                announce,
            } => self.presence_add(now, from, channel, info, announce),
            BackboneCommand::PresenceRemove {
                channel,
                info,
                announce,
            } => self.presence_remove(now, channel, info, announce),
            BackboneCommand::Presence { request, channel } => {
                let reply = BackboneReply::Presence(Ok(self.presence(&channel)));
                self.events
                    .push_back((from, BackboneEvent::Reply { request, reply }));
            }
        }
    }

    /// Removes the channel if nothing is left in it at `now`.
    fn drop_if_empty(&mut self, now: Timestamp, name: &str) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.expire(now, &mut self.usage);
        if !ch.is_empty() {
            return;
        }
        if let Some(wake) = ch.wake {
            self.wakeups.remove(&(wake, name.to_owned()));
        }
        if let Some(seq) = ch.indexed.0 {
            self.oldest.0.remove(&(seq, name.to_owned()));
        }
        self.channels.remove(name);
    }

    /// The next event to deliver, and to which node. Events for one node
    /// come out in the order they were queued.
    pub fn poll_event(&mut self) -> Option<(NodeId, BackboneEvent)> {
        self.events.pop_front()
    }

    /// Sequences a publication directly (the HTTP API): the same as a
    /// [`BackboneCommand::Publish`] without the reply event. Returns its position.
    ///
    /// The publication goes to every subscribed node, the publisher's own
    /// included: delivery in offset order needs every copy to come from the
    /// sequencer.
    pub fn publish(
        &mut self,
        now: Timestamp,
        channel: &str,
        data: Payload,
        info: Option<Box<ClientInfo>>,
        history: HistoryPolicy,
    ) -> StreamPosition {
        // The hot path is one lookup by &str; the name is copied only when
        // the channel is created.
        let ch = match self.channels.get_mut(channel) {
            Some(ch) => {
                ch.restart_if_empty(now, self.seed, &mut self.created, &mut self.usage);
                ch
            }
            None => {
                let epoch = Hub::next_epoch(self.seed, &mut self.created);
                self.channels
                    .entry(channel.to_owned())
                    .or_insert_with(|| HubChannel::new(epoch))
            }
        };
        if ch.top == u64::MAX {
            // The offsets are exhausted: start a new epoch, which tells every
            // recovering client that its position cannot be continued.
            ch.epoch = Hub::next_epoch(self.seed, &mut self.created);
            ch.top = 0;
            ch.clear(&mut self.usage);
        }
        ch.top += 1;
        let publication = Publication {
            offset: ch.top,
            data,
            info,
        };
        // Publication times never go backwards along the history even if the
        // driver's clock does, so expiry stays a front trim.
        let at = ch.history.back().map_or(now, |e| e.at.max(now));
        ch.ttl = history.ttl;
        // A publication larger than the whole byte budget is delivered but
        // not kept; what was kept before it then no longer runs up to top,
        // so it goes too (exactly as with history size 0).
        let keep = entry_cost(&publication) <= self.budget.max_bytes;
        let size = if keep { history.size } else { 0 };
        if size > 0 {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            ch.push(
                Entry {
                    publication: publication.clone(),
                    at,
                    seq,
                },
                &mut self.usage,
            );
            if ch.indexed.0.is_none() {
                ch.indexed.0 = Some(seq);
                self.oldest.0.insert((seq, channel.to_owned()));
            }
        }
        while ch.history.len() > size {
            ch.pop_front(&mut self.usage);
        }
        ch.expire(now, &mut self.usage);
        for &node in &ch.subscribers {
            let event = BackboneEvent::Publication {
                channel: channel.to_owned(),
                epoch: ch.epoch.clone(),
                publication: publication.clone(),
            };
            self.events.push_back((node, event));
        }
        let position = StreamPosition {
            epoch: ch.epoch.clone(),
            offset: publication.offset,
        };
        if let Some(deadline) = ch.deadline() {
            register_wakeup(&mut self.wakeups, ch, channel, deadline);
        }
        // Only a channel nobody listens to and with no history to keep (size
        // or ttl 0) is left empty by a publication.
        if ch.is_empty() {
            self.drop_if_empty(now, channel);
        }
        self.enforce_budget(now);
        position
    }

    /// The channels the hub knows, by name.
    pub fn channels(&self) -> Vec<ChannelStats> {
        self.channels
            .iter()
            .map(|(name, ch)| ChannelStats {
                name: name.clone(),
                nodes: ch.subscribers.iter().copied().collect(),
                presence: ch.presence.len(),
                epoch: ch.epoch.clone(),
                top: ch.top,
                kept: ch.history.len(),
            })
            .collect()
    }

    /// A node went away: its subscriptions and its clients' presence are
    /// dropped (with a leave to the remaining subscribers for each client
    /// whose join was announced), and so are the events still queued for it.
    pub fn remove_node(&mut self, now: Timestamp, node: NodeId) {
        self.events.retain(|(to, _)| *to != node);
        let mut emptied = Vec::new();
        for (name, ch) in &mut self.channels {
            ch.subscribers.remove(&node);
            let leaving: Vec<String> = ch
                .presence
                .iter()
                .filter(|(_, p)| p.node == node)
                .map(|(c, _)| c.clone())
                .collect();
            for client in leaving {
                if let Some(p) = ch.presence.remove(&client) {
                    if p.announced {
                        let info = p.info(&client);
                        broadcast(
                            &mut self.events,
                            &ch.subscribers,
                            |channel| BackboneEvent::Leave {
                                channel,
                                info: info.clone(),
                            },
                            name,
                        );
                    }
                }
            }
            ch.expire(now, &mut self.usage);
            if ch.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.drop_if_empty(now, &name);
        }
    }

    /// Expires history by age, and drops the channels left with nothing.
    /// Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while self.wakeups.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, name)) = self.wakeups.pop_first() else {
                break;
            };
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            ch.wake = None;
            ch.expire(now, &mut self.usage);
            if let Some(deadline) = ch.deadline() {
                register_wakeup(&mut self.wakeups, ch, &name, deadline);
            }
            self.drop_if_empty(now, &name);
        }
    }

    /// When [`Hub::handle_timeout`] should next be called: the earliest
    /// expiry of a kept publication (possibly earlier: see `wakeups`), or
    /// `None` if no publication is kept.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.wakeups.first().map(|(at, _)| *at)
    }
}

/// The channel, created with a fresh epoch if it does not exist (or
/// restarted if nothing is left in it). A free function over the hub's
/// fields, so that the caller keeps the others.
fn channel_entry<'a>(
    channels: &'a mut BTreeMap<String, HubChannel>,
    seed: u64,
    created: &mut u64,
    usage: &mut Usage,
    now: Timestamp,
    name: String,
) -> &'a mut HubChannel {
    match channels.entry(name) {
        btree_map::Entry::Occupied(entry) => {
            let ch = entry.into_mut();
            ch.restart_if_empty(now, seed, created, usage);
            ch
        }
        btree_map::Entry::Vacant(entry) => {
            entry.insert(HubChannel::new(Hub::next_epoch(seed, created)))
        }
    }
}

/// Makes sure the channel has a wakeup at or before `deadline`. The usual
/// case (one registered already, earlier) costs nothing; the name is copied
/// only when a wakeup is (re)registered.
fn register_wakeup(
    wakeups: &mut BTreeSet<(Timestamp, String)>,
    ch: &mut HubChannel,
    name: &str,
    deadline: Timestamp,
) {
    if ch.wake.is_some_and(|wake| wake <= deadline) {
        return;
    }
    if let Some(wake) = ch.wake.take() {
        wakeups.remove(&(wake, name.to_owned()));
    }
    wakeups.insert((deadline, name.to_owned()));
    ch.wake = Some(deadline);
}

/// Queues `make(channel)` to every subscribed node, in node order.
fn broadcast(
    events: &mut VecDeque<(NodeId, BackboneEvent)>,
    subscribers: &BTreeSet<NodeId>,
    make: impl Fn(String) -> BackboneEvent,
    channel: &str,
) {
    for &node in subscribers {
        events.push_back((node, make(channel.to_owned())));
    }
}
