//! A node's channels: ordered delivery and recovery. Per channel the node
//! knows the stream's epoch and the last offset it delivered ([`Sync`]);
//! a publication is delivered only at the next offset, a duplicate is
//! dropped, a gap is filled from history (later publications held
//! meanwhile) or, if it cannot be, told to every subscriber. Also the
//! subscribe replies (start position, replay of what went out meanwhile)
//! and the backbone's reset (resubscribe, fill what may have been missed).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::backbone::{BackboneCommand, BackboneError, HistoryPage, RequestId};
use crate::frame;
use crate::namespace::NamespaceOptions;
use crate::protocol::{
    self, unsubscribe_code, ErrorCode, Publication, Push, Recovery, Reply, StreamPosition,
};
use crate::time::Timestamp;

use super::request::{backbone_error, error, InFlight};
#[cfg(feature = "mutations")]
use super::Mutation;
use super::{ConnId, Endpoint, Node, MAX_HELD, MAX_REPLAY};

/// A publication kept in a channel while it cannot be delivered yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Held {
    pub(super) epoch: String,
    pub(super) publication: Publication,
}

/// How far the node has delivered a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Sync {
    /// No position known yet: waiting for the first subscribe's reply.
    Unknown,
    /// Delivered everything up to `offset` of `epoch`.
    Synced { epoch: String, offset: u64 },
    /// Like `Synced`, but a gap was seen: history since `offset` was asked
    /// with `request`, and later publications are held meanwhile.
    Filling {
        epoch: String,
        offset: u64,
        request: RequestId,
    },
}

/// A channel with local subscribers (or subscribes in flight).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct LocalChannel {
    pub(super) options: NamespaceOptions,
    /// Live subscribers and the offset after which each one receives.
    pub(super) live: BTreeMap<ConnId, u64>,
    /// Subscribers waiting for the backbone's reply, by request.
    pub(super) pending: BTreeMap<ConnId, RequestId>,
    pub(super) sync: Sync,
    /// Publications received but not deliverable yet (no position, or a
    /// gap being filled), in arrival order.
    pub(super) held: Vec<Held>,
    /// Publications delivered while subscribes are pending, for replay.
    pub(super) recent: VecDeque<Publication>,
    /// `recent` overflowed: pending subscribes cannot be replayed to.
    pub(super) recent_lost: bool,
}

impl LocalChannel {
    pub(super) fn new(options: NamespaceOptions) -> Self {
        LocalChannel {
            options,
            live: BTreeMap::new(),
            pending: BTreeMap::new(),
            sync: Sync::Unknown,
            held: Vec::new(),
            recent: VecDeque::new(),
            recent_lost: false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }
}

impl Node {
    pub(super) fn on_presence_push(&mut self, now: Timestamp, channel: &str, push: Push) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if !ch.options.join_leave {
            return;
        }
        let ids: Vec<ConnId> = ch.live.keys().copied().collect();
        for id in ids {
            self.push(now, id, &push);
        }
    }

    pub(super) fn on_publication(
        &mut self,
        now: Timestamp,
        channel: &str,
        epoch: String,
        publication: Publication,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return; // no longer subscribed here
        };
        match &ch.sync {
            Sync::Unknown | Sync::Filling { .. } => {
                if ch.held.len() >= MAX_HELD {
                    ch.held.clear();
                    self.gap_unfillable(now, channel, None);
                    return;
                }
                ch.held.push(Held { epoch, publication });
            }
            Sync::Synced { epoch: e, offset } => {
                let (e, offset) = (e.clone(), *offset);
                if epoch != e {
                    // The stream was reset behind our back (history lost).
                    self.gap_unfillable(now, channel, Some(Held { epoch, publication }));
                } else if publication.offset <= offset {
                    // A duplicate: already delivered.
                } else if publication.offset == offset + 1 {
                    self.deliver(now, channel, publication);
                } else {
                    #[cfg(feature = "mutations")]
                    if self.mutation == Some(Mutation::IgnoreGap) {
                        return self.deliver(now, channel, publication);
                    }
                    let since = Some(StreamPosition {
                        epoch: e.clone(),
                        offset,
                    });
                    let request = self.fill(now, channel, since);
                    let ch = self.channels.get_mut(channel).expect("checked above");
                    ch.held.push(Held { epoch, publication });
                    ch.sync = Sync::Filling {
                        epoch: e,
                        offset,
                        request,
                    };
                }
            }
        }
    }

    /// Asks the backbone for a channel's history after `since`, to fill a
    /// gap.
    pub(super) fn fill(
        &mut self,
        now: Timestamp,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> RequestId {
        let name = channel.to_string();
        let pending = InFlight::Fill {
            channel: name.clone(),
        };
        self.ask(now, pending, |request| BackboneCommand::History {
            request,
            channel: name,
            since,
            limit: None,
            reverse: false,
        })
    }

    /// Delivers the next publication of a synced channel to every live
    /// subscriber, encoding it once per encoding.
    pub(super) fn deliver(&mut self, now: Timestamp, channel: &str, publication: Publication) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Sync::Synced { offset, .. } = &mut ch.sync {
            *offset = publication.offset;
        }
        let compress = ch.options.compression;
        // One frame per WebSocket encoding, and the SSE `pub` event.
        let mut frames: [Option<Bytes>; 3] = [None, None, None];
        // And one compressed frame per encoding for the subscribers that
        // negotiated permessage-deflate (the inner `None`: under the
        // threshold, they get the plain frame).
        let mut compressed: [Option<Option<Bytes>>; 2] = [None, None];
        // The subscribers are listed first (sending may close a slow one,
        // which changes `live`); the list's storage is kept between
        // publications so fan-out allocates nothing per publication.
        let mut targets = std::mem::take(&mut self.targets);
        // A loop with `Vec::push` (inlined everywhere), not `extend`:
        // `extend`'s body is compiled once, with the crate's other `Vec`
        // code, and from another codegen unit it is called, not inlined
        // (see `IdQueue`).
        for (&id, &after) in &ch.live {
            if publication.offset > after {
                targets.push(id);
            }
        }
        if !ch.pending.is_empty() {
            if ch.recent.len() >= MAX_REPLAY {
                ch.recent.pop_front();
                ch.recent_lost = true;
            }
            ch.recent.push_back(publication.clone());
        }
        // Counted once per publication, not per subscriber (`observe.rs`).
        self.observed.delivered(now, targets.len());
        for id in targets.drain(..) {
            let Some(client) = self.slab.get_mut(id) else {
                continue;
            };
            let enc = match client.endpoint {
                Endpoint::PubSub(enc) => enc,
                Endpoint::Sse => {
                    let event = frames[2]
                        .get_or_insert_with(|| protocol::sse::pub_event(channel, &publication))
                        .clone();
                    self.sse_pub(now, id, channel, None, &publication, Some(event));
                    continue;
                }
                Endpoint::Echo => continue,
            };
            let plain = frames[enc.index()].get_or_insert_with(|| {
                let payload = protocol::encode_pub(enc, channel, &publication);
                frame::encode(enc.frame_opcode(), &payload)
            });
            let frame = match (&mut self.codec, self.config.compression) {
                (Some(codec), Some(settings)) if compress && client.conn.deflate() => compressed
                    [enc.index()]
                .get_or_insert_with(|| {
                    let payload = frame::server_payload(plain);
                    if payload.len() < settings.threshold {
                        return None;
                    }
                    codec
                        .compress(payload)
                        .map(|z| frame::encode_compressed(enc.frame_opcode(), z))
                })
                .as_ref()
                .unwrap_or(plain)
                .clone(),
                _ => plain.clone(),
            };
            let _ = client.conn.send(now, frame);
            self.after(now, id);
        }
        self.targets = targets;
    }

    /// Delivers held publications of a synced channel in offset order, as
    /// far as they are contiguous.
    pub(super) fn drain_held(&mut self, now: Timestamp, channel: &str) {
        loop {
            let Some(ch) = self.channels.get_mut(channel) else {
                return;
            };
            let Sync::Synced { epoch, offset } = &ch.sync else {
                return;
            };
            let (epoch, offset) = (epoch.clone(), *offset);
            if ch.held.is_empty() {
                return;
            }
            let mut held = std::mem::take(&mut ch.held);
            held.sort_by_key(|h| h.publication.offset);
            held.retain(|h| !(h.epoch == epoch && h.publication.offset <= offset));
            match held.first() {
                None => return,
                Some(h) if h.epoch != epoch => {
                    let first = held.remove(0);
                    let ch = self.channels.get_mut(channel).expect("present");
                    ch.held = held;
                    self.gap_unfillable(now, channel, Some(first));
                    return;
                }
                Some(h) if h.publication.offset == offset + 1 => {
                    let first = held.remove(0);
                    self.channels.get_mut(channel).expect("present").held = held;
                    self.deliver(now, channel, first.publication);
                }
                Some(_) => {
                    // Still a gap: ask history for it.
                    let first = held.remove(0);
                    self.channels.get_mut(channel).expect("present").held = held;
                    self.on_publication(now, channel, first.epoch, first.publication);
                    return;
                }
            }
        }
    }

    /// A gap that history cannot fill: every live subscriber is told with
    /// an `unsubscribe` push (resubscribe with recover) and removed; the
    /// channel's position is forgotten. Pending subscribes are unaffected:
    /// their replies give them a position.
    pub(super) fn gap_unfillable(&mut self, now: Timestamp, channel: &str, next: Option<Held>) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if let Sync::Filling { request, .. } = ch.sync {
            self.requests.remove(&request);
        }
        let ch = self.channels.get_mut(channel).expect("present");
        ch.sync = Sync::Unknown;
        // Held publications are kept for the pending subscribes: they may
        // be past the position those replies will give (e.g. of the new
        // epoch after a reset), and dropping them would be a silent gap.
        ch.recent.clear();
        let ids: Vec<ConnId> = ch.live.keys().copied().collect();
        let push = Push::Unsubscribe {
            channel: channel.to_string(),
            code: unsubscribe_code::INSUFFICIENT_STATE,
            reason: "missed publications; resubscribe with recover".into(),
        };
        self.observed.counters.gaps += ids.len() as u64;
        for id in ids {
            // Dropped before it is told: an SSE stream's node subscribes it
            // again on the push.
            self.drop_subscription(now, id, channel);
            self.push(now, id, &push);
        }
        if let Some(ch) = self.channels.get_mut(channel) {
            if let Some(next) = next {
                ch.held.push(next);
            }
            if ch.pending.is_empty() {
                // Nobody waits for a position: forget held publications.
                ch.held.clear();
            }
        }
    }

    pub(super) fn drop_if_empty(&mut self, channel: &str) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if !ch.is_empty() {
            return;
        }
        if let Sync::Filling { request, .. } = ch.sync {
            self.requests.remove(&request);
        }
        self.channels.remove(channel);
        #[cfg(feature = "mutations")]
        if self.mutation == Some(Mutation::KeepBackboneSubscription) {
            return;
        }
        self.backbone.push_back(BackboneCommand::Unsubscribe {
            channel: channel.to_string(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_subscribed(
        &mut self,
        now: Timestamp,
        request: RequestId,
        conn: ConnId,
        rid: Option<u64>,
        channel: &str,
        recover: bool,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if ch.pending.get(&conn) != Some(&request) {
            return;
        }
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                self.drop_subscription(now, conn, channel);
                if rid.is_none() && self.is_stream(conn) {
                    // Not at once again: the stream ends and comes back.
                    return self.sse_sub_failed(now, conn);
                }
                self.refuse_subscribe(now, conn, rid, channel, &backbone_error(&e));
                return;
            }
        };
        // The channel learns its position from its first reply.
        if ch.sync == Sync::Unknown {
            ch.sync = Sync::Synced {
                epoch: page.epoch.clone(),
                offset: page.top,
            };
        }
        let (epoch, delivered) = match &ch.sync {
            Sync::Synced { epoch, offset } | Sync::Filling { epoch, offset, .. } => {
                (epoch.clone(), *offset)
            }
            Sync::Unknown => unreachable!("set above"),
        };
        if page.epoch != epoch {
            // The stream changed epoch between the channel's position and
            // this reply: the channel's subscribers have a gap; this one
            // starts fresh in the new epoch.
            self.gap_unfillable(now, channel, None);
            if let Some(ch) = self.channels.get_mut(channel) {
                ch.sync = Sync::Synced {
                    epoch: page.epoch.clone(),
                    offset: page.top,
                };
            }
            self.on_subscribed_synced(now, conn, rid, channel, recover, page, Vec::new());
            return self.drain_held(now, channel);
        }
        // Publications in (top, delivered] went out while this reply was in
        // flight: replay them from `recent` after the reply.
        let replay = if delivered > page.top {
            let ch = self.channels.get(channel).expect("present");
            let first_kept = ch.recent.front().map(|p| p.offset);
            let covered = !ch.recent_lost && first_kept.is_some_and(|f| f <= page.top + 1);
            if !covered {
                self.drop_subscription(now, conn, channel);
                let reply = error(
                    ErrorCode::NotAvailable,
                    "channel too busy to subscribe now; retry",
                );
                self.refuse_subscribe(now, conn, rid, channel, &reply);
                return;
            }
            ch.recent
                .iter()
                .filter(|p| p.offset > page.top && p.offset <= delivered)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.on_subscribed_synced(now, conn, rid, channel, recover, page, replay);
        self.drain_held(now, channel);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_subscribed_synced(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        rid: Option<u64>,
        channel: &str,
        recover: bool,
        page: HistoryPage,
        replay: Vec<Publication>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        ch.pending.remove(&conn);
        // Deliver to it everything after the later of its start and what
        // was replayed.
        let start = replay.last().map_or(page.top, |p| p.offset);
        ch.live.insert(conn, start);
        if ch.pending.is_empty() {
            ch.recent.clear();
            ch.recent_lost = false;
        }
        let options = ch.options;
        if rid.is_none() && self.is_stream(conn) {
            // Where a client's subscribe reply would go: the recovered
            // publications, or a gap.
            self.sse_subscribed(now, conn, channel, recover, &page);
        }
        if recover {
            let counters = &mut self.observed.counters;
            if page.complete {
                counters.recovered += 1;
            } else {
                counters.not_recovered += 1;
            }
        }
        let recovery = recover.then(|| Recovery {
            recovered: page.complete,
            publications: if page.complete {
                page.publications
            } else {
                Vec::new()
            },
        });
        let reply = Reply::Subscribe {
            epoch: page.epoch,
            offset: page.top,
            recovery,
        };
        // A server-side subscription's start was in the connect reply.
        if let Some(rid) = rid {
            self.reply_to(now, conn, rid, &reply);
        }
        for publication in replay {
            let push = Push::Pub {
                channel: channel.to_string(),
                publication,
            };
            self.push(now, conn, &push);
        }
        if options.presence {
            let info = self.client_info(conn, Some(channel));
            self.backbone.push_back(BackboneCommand::PresenceAdd {
                channel: channel.to_string(),
                info,
                announce: options.join_leave,
            });
        }
    }

    /// A subscribe that failed at its reply: the client's gets the error;
    /// a server-side one, already listed in the connect reply, gets an
    /// `unsubscribe` push (subscribe again with recover).
    fn refuse_subscribe(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        rid: Option<u64>,
        channel: &str,
        reply: &Reply,
    ) {
        match rid {
            Some(rid) => self.reply_to(now, conn, rid, reply),
            None => {
                self.observed.counters.gaps += 1;
                let push = Push::Unsubscribe {
                    channel: channel.to_string(),
                    code: unsubscribe_code::INSUFFICIENT_STATE,
                    reason: "channel too busy; subscribe again with recover".into(),
                };
                self.push(now, conn, &push);
            }
        }
    }

    pub(super) fn on_filled(
        &mut self,
        now: Timestamp,
        request: RequestId,
        channel: &str,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let Sync::Filling {
            epoch,
            offset,
            request: r,
        } = &ch.sync
        else {
            return;
        };
        if *r != request {
            return;
        }
        let (epoch, offset) = (epoch.clone(), *offset);
        match result {
            Ok(page) if page.complete && page.epoch == epoch => {
                ch.sync = Sync::Synced { epoch, offset };
                for publication in page.publications {
                    let Some(ch) = self.channels.get(channel) else {
                        return;
                    };
                    let Sync::Synced { offset, .. } = ch.sync else {
                        return;
                    };
                    if publication.offset == offset + 1 {
                        self.deliver(now, channel, publication);
                    }
                }
                self.drain_held(now, channel);
            }
            _ => self.gap_unfillable(now, channel, None),
        }
    }

    /// The backbone link was lost and is back: every request in flight is
    /// failed, every channel resubscribed and checked for a gap.
    pub(super) fn on_reset(&mut self, now: Timestamp) {
        let requests = std::mem::take(&mut self.requests);
        let e = BackboneError::Unavailable;
        self.observed.counters.backbone_errors += requests.len() as u64;
        for (_, (pending, _)) in requests {
            if let Some(conn) = pending.conn() {
                self.request_done(conn);
            }
            // Gap fills are asked again below, channel by channel.
            if !matches!(pending, InFlight::Fill { .. }) {
                let kind = pending.kind();
                self.answering(kind, |node| node.fail_request(now, pending, &e));
            }
        }
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for channel in names {
            let Some(ch) = self.channels.get_mut(&channel) else {
                continue;
            };
            self.backbone.push_back(BackboneCommand::Subscribe {
                channel: channel.clone(),
            });
            let (epoch, offset) = match &ch.sync {
                Sync::Synced { epoch, offset } | Sync::Filling { epoch, offset, .. } => {
                    (epoch.clone(), *offset)
                }
                Sync::Unknown => continue,
            };
            // Publications may have been missed while the link was down:
            // fill from history before delivering anything newer.
            let since = Some(StreamPosition {
                epoch: epoch.clone(),
                offset,
            });
            let request = self.fill(now, &channel, since);
            let ch = self.channels.get_mut(&channel).expect("present");
            ch.sync = Sync::Filling {
                epoch,
                offset,
                request,
            };
            let live: Vec<ConnId> = ch.live.keys().copied().collect();
            let options = ch.options;
            if options.presence {
                for id in live {
                    let info = self.client_info(id, Some(&channel));
                    self.backbone.push_back(BackboneCommand::PresenceAdd {
                        channel: channel.clone(),
                        info,
                        announce: false,
                    });
                }
            }
        }
    }
}
