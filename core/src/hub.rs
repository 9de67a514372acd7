//! The in-memory backbone: the sequencer of every channel in single-server
//! mode.
//!
//! A [`Hub`] implements the backbone side of [`crate::backbone`] inside one
//! process. Per channel it holds the epoch, the top offset, the bounded
//! history, the set of subscribed nodes and the presence map. Everything
//! it wants delivered is queued as `(NodeId, Event)` and drained with
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

use std::collections::{btree_map, BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::backbone::{Command, Event, HistoryPage, HistoryPolicy, NodeId, Reply};
use crate::protocol::{ClientInfo, Payload, Publication, StreamPosition};
use crate::Timestamp;

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

/// One kept publication and when it was published (which, with the
/// channel's ttl, says when it expires).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    publication: Publication,
    at: Timestamp,
}

/// A present client: which node it is on (so `remove_node` finds it) and
/// whether its join was announced (so its leave is announced the same way).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Present {
    node: NodeId,
    info: ClientInfo,
    announced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Channel {
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
}

impl Channel {
    fn new(epoch: String) -> Channel {
        Channel {
            epoch,
            top: 0,
            history: VecDeque::new(),
            ttl: Duration::ZERO,
            subscribers: BTreeSet::new(),
            presence: BTreeMap::new(),
            wake: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.presence.is_empty() && self.history.is_empty()
    }

    /// When the oldest kept publication expires.
    fn deadline(&self) -> Option<Timestamp> {
        self.history.front().map(|e| e.at + self.ttl)
    }

    /// Drops the publications that are `ttl` old at `now`.
    fn expire(&mut self, now: Timestamp) {
        while self.history.front().is_some_and(|e| e.at + self.ttl <= now) {
            self.history.pop_front();
        }
    }

    /// A channel whose content has all expired counts as dropped, whether
    /// or not a timeout has removed it yet: used again, it starts a new
    /// epoch, exactly as if it had been dropped on time. This keeps the
    /// hub's answers independent of when the driver calls
    /// `handle_timeout`.
    fn restart_if_empty(&mut self, now: Timestamp, seed: u64, created: &mut u64) {
        self.expire(now);
        if self.is_empty() {
            self.epoch = Hub::next_epoch(seed, created);
            self.top = 0;
        }
    }

    /// The offset of the oldest kept publication; `top + 1` when none is
    /// kept.
    fn first_offset(&self) -> u64 {
        let len = u64::try_from(self.history.len()).unwrap_or(u64::MAX);
        // `history.len() <= top` always holds, so this cannot wrap; saturate
        // anyway rather than trust it.
        self.top.saturating_sub(len).saturating_add(1)
    }
}

/// The in-memory backbone. Deterministic: the same seed and the same calls
/// give the same events and epochs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hub {
    seed: u64,
    /// Channels created so far: the input, with the seed, of the next epoch.
    created: u64,
    channels: BTreeMap<String, Channel>,
    events: VecDeque<(NodeId, Event)>,
    /// One entry per channel with history: a time at or before its oldest
    /// publication's expiry. It may be early (the front moved on since), in
    /// which case the timeout just registers the new deadline; it is never
    /// late.
    wakeups: BTreeSet<(Timestamp, String)>,
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
    pub fn new(epoch_seed: u64) -> Hub {
        Hub {
            seed: epoch_seed,
            created: 0,
            channels: BTreeMap::new(),
            events: VecDeque::new(),
            wakeups: BTreeSet::new(),
        }
    }

    fn next_epoch(seed: u64, created: &mut u64) -> String {
        let epoch = epoch_string(seed, *created);
        *created = created.wrapping_add(1);
        epoch
    }

    /// A command from node `from` (see [`Command`]). Replies and broadcasts
    /// are queued as events.
    pub fn handle_command(&mut self, now: Timestamp, from: NodeId, cmd: Command) {
        match cmd {
            Command::Subscribe { channel } => {
                channel_entry(
                    &mut self.channels,
                    self.seed,
                    &mut self.created,
                    now,
                    channel,
                )
                .subscribers
                .insert(from);
            }
            Command::Unsubscribe { channel } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.subscribers.remove(&from);
                    self.drop_if_empty(now, &channel);
                }
            }
            Command::Publish {
                request,
                channel,
                data,
                history,
            } => {
                let position = self.publish(now, &channel, data, history);
                let reply = Reply::Published(Ok(position));
                self.events
                    .push_back((from, Event::Reply { request, reply }));
            }
            Command::History {
                request,
                channel,
                since,
                limit,
            } => {
                let page = self.history(now, &channel, since.as_ref(), limit);
                let reply = Reply::History(Ok(page));
                self.events
                    .push_back((from, Event::Reply { request, reply }));
            }
            Command::PresenceAdd {
                channel,
                info,
                announce,
            } => self.presence_add(now, from, channel, info, announce),
            Command::PresenceRemove {
                channel,
                info,
                announce,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                if ch.presence.remove(&info.client).is_some() && announce {
                    broadcast(
                        &mut self.events,
                        &ch.subscribers,
                        |channel| Event::Leave {
                            channel,
                            info: info.clone(),
                        },
                        &channel,
                    );
                }
                self.drop_if_empty(now, &channel);
            }
            Command::Presence { request, channel } => {
                let reply = Reply::Presence(Ok(self.presence(&channel)));
                self.events
                    .push_back((from, Event::Reply { request, reply }));
            }
        }
    }

    fn presence_add(
        &mut self,
        now: Timestamp,
        from: NodeId,
        channel: String,
        info: ClientInfo,
        announce: bool,
    ) {
        let ch = channel_entry(
            &mut self.channels,
            self.seed,
            &mut self.created,
            now,
            channel.clone(),
        );
        // Adding a client again is idempotent: its join is announced once,
        // the first time an add asks for it.
        let was_announced = ch.presence.get(&info.client).is_some_and(|p| p.announced);
        let present = Present {
            node: from,
            info: info.clone(),
            announced: was_announced || announce,
        };
        ch.presence.insert(info.client.clone(), present);
        if announce && !was_announced {
            broadcast(
                &mut self.events,
                &ch.subscribers,
                |channel| Event::Join {
                    channel,
                    info: info.clone(),
                },
                &channel,
            );
        }
    }

    /// Removes the channel if nothing is left in it at `now`.
    fn drop_if_empty(&mut self, now: Timestamp, name: &str) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.expire(now);
        if !ch.is_empty() {
            return;
        }
        if let Some(wake) = ch.wake {
            self.wakeups.remove(&(wake, name.to_owned()));
        }
        self.channels.remove(name);
    }

    /// The next event to deliver, and to which node. Events for one node
    /// come out in the order they were queued.
    pub fn poll_event(&mut self) -> Option<(NodeId, Event)> {
        self.events.pop_front()
    }

    /// Sequences a publication directly (the HTTP API): the same as a
    /// [`Command::Publish`] without the reply event. Returns its position.
    ///
    /// The publication goes to every subscribed node, the publisher's own
    /// included: delivery in offset order needs every copy to come from the
    /// sequencer.
    pub fn publish(
        &mut self,
        now: Timestamp,
        channel: &str,
        data: Payload,
        history: HistoryPolicy,
    ) -> StreamPosition {
        // The hot path is one lookup by &str; the name is copied only when
        // the channel is created.
        let ch = match self.channels.get_mut(channel) {
            Some(ch) => {
                ch.restart_if_empty(now, self.seed, &mut self.created);
                ch
            }
            None => {
                let epoch = Hub::next_epoch(self.seed, &mut self.created);
                self.channels
                    .entry(channel.to_owned())
                    .or_insert_with(|| Channel::new(epoch))
            }
        };
        if ch.top == u64::MAX {
            // The offsets are exhausted: start a new epoch, which tells every
            // recovering client that its position cannot be continued.
            ch.epoch = Hub::next_epoch(self.seed, &mut self.created);
            ch.top = 0;
            ch.history.clear();
        }
        ch.top += 1;
        let publication = Publication {
            offset: ch.top,
            data,
        };
        // Publication times never go backwards along the history even if the
        // driver's clock does, so expiry stays a front trim.
        let at = ch.history.back().map_or(now, |e| e.at.max(now));
        ch.ttl = history.ttl;
        if history.size > 0 {
            ch.history.push_back(Entry {
                publication: publication.clone(),
                at,
            });
        }
        while ch.history.len() > history.size {
            ch.history.pop_front();
        }
        ch.expire(now);
        for &node in &ch.subscribers {
            let event = Event::Publication {
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
        position
    }

    /// Reads a channel's history directly (the HTTP API), with the semantics
    /// of [`Command::History`]:
    ///
    /// - `since: Some(pos)` in the current epoch with `pos.offset <= top`:
    ///   the kept publications after `pos.offset`, oldest first, at most
    ///   `limit`; `complete` when they are exactly all of
    ///   `pos.offset + 1 ..= top` (nothing trimmed in between, no limit hit).
    /// - `since: Some(pos)` from another epoch or beyond `top`: `complete` is
    ///   false, and the publications are the oldest kept, at most `limit`
    ///   (so that the HTTP API can page through what there is).
    /// - `since: None`: as from offset 0 of the current epoch: the oldest
    ///   kept, complete only if they are all of `1..=top`.
    ///
    /// `limit: Some(0)` returns just the epoch and top. Publications past
    /// their age are never returned. A channel the hub does not know reads
    /// as empty with epoch [`NO_EPOCH`] and is not created.
    pub fn history(
        &mut self,
        now: Timestamp,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
    ) -> HistoryPage {
        // A channel whose content has all expired reads as the dropped
        // channel it is, whether or not a timeout has removed it yet.
        self.drop_if_empty(now, channel);
        let Some(ch) = self.channels.get_mut(channel) else {
            let complete = match since {
                None => true,
                Some(pos) => pos.epoch == NO_EPOCH && pos.offset == 0,
            };
            return HistoryPage {
                epoch: NO_EPOCH.to_owned(),
                top: 0,
                publications: Vec::new(),
                complete,
            };
        };
        let (after, continues) = match since {
            None => (0, true),
            Some(pos) if pos.epoch == ch.epoch && pos.offset <= ch.top => (pos.offset, true),
            Some(_) => (0, false),
        };
        let first = ch.first_offset();
        // Index of the first kept publication with offset > `after`.
        let skip = usize::try_from(after.saturating_add(1).saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(ch.history.len());
        let available = ch.history.len() - skip;
        let take = limit.map_or(available, |limit| limit.min(available));
        let publications = ch
            .history
            .iter()
            .skip(skip)
            .take(take)
            .map(|e| e.publication.clone())
            .collect();
        // Nothing is missing between `after` and the first kept one, and the
        // list runs up to top.
        let complete = continues && after.saturating_add(1) >= first && take == available;
        HistoryPage {
            epoch: ch.epoch.clone(),
            top: ch.top,
            publications,
            complete,
        }
    }

    /// The clients present in a channel, sorted by client id.
    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.channels.get(channel).map_or_else(Vec::new, |ch| {
            ch.presence.values().map(|p| p.info.clone()).collect()
        })
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
                        broadcast(
                            &mut self.events,
                            &ch.subscribers,
                            |channel| Event::Leave {
                                channel,
                                info: p.info.clone(),
                            },
                            name,
                        );
                    }
                }
            }
            ch.expire(now);
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
            ch.expire(now);
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
    channels: &'a mut BTreeMap<String, Channel>,
    seed: u64,
    created: &mut u64,
    now: Timestamp,
    name: String,
) -> &'a mut Channel {
    match channels.entry(name) {
        btree_map::Entry::Occupied(entry) => {
            let ch = entry.into_mut();
            ch.restart_if_empty(now, seed, created);
            ch
        }
        btree_map::Entry::Vacant(entry) => {
            entry.insert(Channel::new(Hub::next_epoch(seed, created)))
        }
    }
}

/// Makes sure the channel has a wakeup at or before `deadline`. The usual
/// case (one registered already, earlier) costs nothing; the name is copied
/// only when a wakeup is (re)registered.
fn register_wakeup(
    wakeups: &mut BTreeSet<(Timestamp, String)>,
    ch: &mut Channel,
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
    events: &mut VecDeque<(NodeId, Event)>,
    subscribers: &BTreeSet<NodeId>,
    make: impl Fn(String) -> Event,
    channel: &str,
) {
    for &node in subscribers {
        events.push_back((node, make(channel.to_owned())));
    }
}
