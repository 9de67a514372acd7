//! A channel's bounded history and the server-wide [`HistoryBudget`].
//!
//! Per channel, history is a contiguous run of offsets `first..=top`,
//! trimmed from the front by count, age and the budget's eviction (see
//! [`crate::hub`]); what every kept publication costs is counted in a
//! `Usage` against the budget.

use super::{Hub, HubChannel, NO_EPOCH};
use crate::backbone::HistoryPage;
use crate::protocol::{Payload, Publication, StreamPosition};
use crate::Timestamp;

/// One kept publication and when it was published (which, with the
/// channel's ttl, says when it expires).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Entry {
    pub(super) publication: Publication,
    pub(super) at: Timestamp,
    /// The hub-wide sequence number of the publication among all kept ones:
    /// the order of eviction under the budget (oldest first).
    pub(super) seq: u64,
}

impl Entry {
    /// What the entry counts against [`HistoryBudget::max_bytes`].
    pub(super) fn cost(&self) -> usize {
        entry_cost(&self.publication)
    }
}

/// What a kept publication counts against [`HistoryBudget::max_bytes`]:
/// its JSON text plus [`ENTRY_OVERHEAD`], plus, for a client's, the sender's
/// client id and user and [`INFO_OVERHEAD`], and each of its `conn_info`
/// and `chan_info` that is present, its JSON text plus
/// [`INFO_JSON_OVERHEAD`]. (The info's JSON is often shared with the
/// connection that published, but it is counted in full: history outlives
/// the connection, and a big info must not slip past the budget.)
pub(super) fn entry_cost(publication: &Publication) -> usize {
    let info = publication.info.as_ref().map_or(0, |i| {
        let json = |info: &Option<Payload>| {
            info.as_ref()
                .map_or(0, |j| j.len().saturating_add(INFO_JSON_OVERHEAD))
        };
        i.client
            .len()
            .saturating_add(i.user.len())
            .saturating_add(json(&i.conn_info))
            .saturating_add(json(&i.chan_info))
            .saturating_add(INFO_OVERHEAD)
    });
    publication
        .data
        .len()
        .saturating_add(ENTRY_OVERHEAD)
        .saturating_add(info)
}

/// Bytes counted for a publication's sender on top of its strings and
/// JSON: the box (client id, user, and the two optional infos: 112 bytes)
/// and allocator rounding of it and of the two strings.
pub const INFO_OVERHEAD: usize = 160;

/// Bytes counted for each `conn_info` or `chan_info` a publication's
/// sender has, on top of its JSON text: the shared allocation header of
/// its bytes, with allocator rounding.
pub const INFO_JSON_OVERHEAD: usize = 32;

/// Bytes counted for each kept publication on top of its payload: the
/// history entry itself (offset, payload handle, times: 56 bytes), the
/// shared allocation header of its bytes, and allocator rounding. A fixed
/// figure, so that a flood of tiny publications is bounded too.
pub const ENTRY_OVERHEAD: usize = 128;

/// The server-wide memory budget of history: what the hub keeps once the
/// publishers are gone. Over either limit the hub evicts the oldest history
/// first (see [`Hub`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryBudget {
    /// Most channels holding history at once. A channel with subscribers or
    /// presence but no history does not count: it is held by its
    /// subscribers (each bounded by the server's connection limits), and
    /// goes away with them; only history pins memory after everyone left.
    pub max_channels: usize,
    /// Most bytes of history in total: the payload bytes of every kept
    /// publication plus [`ENTRY_OVERHEAD`] each, plus, for a client's, its
    /// sender (see `entry_cost`: strings, infos, [`INFO_OVERHEAD`]).
    pub max_bytes: usize,
}

impl HistoryBudget {
    /// Default [`HistoryBudget::max_channels`]: 10,000. With the default
    /// namespace policy (100 publications kept per channel) and typical
    /// small messages (~256 bytes with overhead), 10,000 full channels are
    /// about the default byte budget, so the two limits meet.
    pub const DEFAULT_MAX_CHANNELS: usize = 10_000;
    /// Default [`HistoryBudget::max_bytes`]: 256 MiB. Sized for a 24 GiB
    /// machine: about 1% of it, leaving the rest to what scales with the
    /// clients (the default 100,000 connections with up to 1 MiB of queued
    /// frames each, socket buffers); allocator slack and channel overhead
    /// keep the resident cost of full history well under 1 GiB.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;
    /// No limit (tests, and what the hub did before it had a budget).
    pub const UNLIMITED: HistoryBudget = HistoryBudget {
        max_channels: usize::MAX,
        max_bytes: usize::MAX,
    };
}

impl Default for HistoryBudget {
    fn default() -> Self {
        HistoryBudget {
            max_channels: HistoryBudget::DEFAULT_MAX_CHANNELS,
            max_bytes: HistoryBudget::DEFAULT_MAX_BYTES,
        }
    }
}

/// What the kept history costs now, against the [`HistoryBudget`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct Usage {
    /// Sum of [`Entry::cost`] over every kept publication.
    pub(super) bytes: usize,
    /// Channels with at least one kept publication.
    pub(super) channels: usize,
}

impl HubChannel {
    /// When the oldest kept publication expires.
    pub(super) fn deadline(&self) -> Option<Timestamp> {
        self.history.front().map(|e| e.at + self.ttl)
    }

    /// Keeps a publication, counting it in `usage`.
    pub(super) fn push(&mut self, entry: Entry, usage: &mut Usage) {
        if self.history.is_empty() {
            usage.channels = usage.channels.saturating_add(1);
        }
        usage.bytes = usage.bytes.saturating_add(entry.cost());
        self.history.push_back(entry);
    }

    /// Drops the oldest kept publication, if any, from history and from
    /// `usage`; false if none was kept.
    pub(super) fn pop_front(&mut self, usage: &mut Usage) -> bool {
        let Some(entry) = self.history.pop_front() else {
            return false;
        };
        usage.bytes = usage.bytes.saturating_sub(entry.cost());
        if self.history.is_empty() {
            usage.channels = usage.channels.saturating_sub(1);
        }
        true
    }

    /// Drops all kept publications.
    pub(super) fn clear(&mut self, usage: &mut Usage) {
        while self.pop_front(usage) {}
    }

    /// Drops the publications that are `ttl` old at `now`.
    pub(super) fn expire(&mut self, now: Timestamp, usage: &mut Usage) {
        while self.history.front().is_some_and(|e| e.at + self.ttl <= now) {
            self.pop_front(usage);
        }
    }
    /// The offset of the oldest kept publication; `top + 1` when none is
    /// kept.
    pub(super) fn first_offset(&self) -> u64 {
        let len = u64::try_from(self.history.len()).unwrap_or(u64::MAX);
        // `history.len() <= top` always holds, so this cannot wrap; saturate
        // anyway rather than trust it.
        self.top.saturating_sub(len).saturating_add(1)
    }
}

impl Hub {
    /// Evicts the oldest history until the kept history is within the
    /// budget again. Over the byte budget, the hub's oldest publications go
    /// one by one; over the channel budget, the whole history of the
    /// channel holding the oldest publication goes. A channel left with
    /// nothing is dropped, so its next use gets a new epoch. Each step is
    /// O(log n) in the channels with history.
    pub(super) fn enforce_budget(&mut self, now: Timestamp) {
        while self.usage.bytes > self.budget.max_bytes
            || self.usage.channels > self.budget.max_channels
        {
            let whole_channel = self.usage.channels > self.budget.max_channels;
            let Some((seq, name)) = self.oldest.0.pop_first() else {
                break;
            };
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            if ch.indexed.0 != Some(seq) {
                continue;
            }
            ch.indexed.0 = None;
            let Some(front) = ch.history.front() else {
                // Its history expired since it was filed.
                continue;
            };
            if front.seq == seq {
                if whole_channel {
                    ch.clear(&mut self.usage);
                } else {
                    ch.pop_front(&mut self.usage);
                }
            }
            // File it again under its (new) oldest publication, or drop it
            // if nothing is left.
            match ch.history.front() {
                Some(front) => {
                    ch.indexed.0 = Some(front.seq);
                    self.oldest.0.insert((front.seq, name));
                }
                None => self.drop_if_empty(now, &name),
            }
        }
    }

    /// Reads a channel's history directly (the HTTP API), with the semantics
    /// of [`BackboneCommand::History`]:
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
        self.history_page(now, channel, since, limit, false)
    }

    /// [`Hub::history`], or with `reverse` the newest `limit` of the same
    /// publications, newest first (`complete` means the same: the page
    /// holds every publication after `since`).
    pub fn history_page(
        &mut self,
        now: Timestamp,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
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
        // Reversed: the last `take` of them, newest first.
        let skip = if reverse {
            skip + (available - take)
        } else {
            skip
        };
        let mut publications: Vec<_> = ch
            .history
            .iter()
            .skip(skip)
            .take(take)
            .map(|e| e.publication.clone())
            .collect();
        if reverse {
            publications.reverse();
        }
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
}
