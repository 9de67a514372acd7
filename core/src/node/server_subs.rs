//! Server-side subscriptions: the channels a connection is subscribed to
//! on connect (a token's `channels` claim, the connect proxy's
//! `channels`), with the permission checks a client's own `subscribe`
//! gets (a channel the user may not subscribe to is left out; the connect
//! still succeeds).
//!
//! The connect reply lists where each one starts (`subs`), so it waits
//! until the backbone has answered for all of them; meanwhile the
//! connection is held and its subscriptions stay pending, so the
//! publications that arrive are kept for replay like a pending client
//! subscribe's. Once the last answer is in, the reply goes out, then each
//! subscription completes as a client's would (replay, then live), so
//! every push follows the reply.

use std::collections::BTreeSet;

use crate::admission::{admit, Action, Caller, Who};
use crate::backbone::{BackboneError, HistoryPage, RequestId};
use crate::protocol::{Encoding, Payload, Reply, StreamPosition};
use crate::time::Timestamp;

use super::slab::Auth;
use super::{ConnId, Node};

/// A connect reply waiting for its server-side subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Connecting {
    enc: Encoding,
    rid: u64,
    ttl: Option<u64>,
    data: Option<Payload>,
    /// Application-level pings asked: they start with the reply.
    ping: bool,
    /// Subscribes the backbone has not answered yet.
    remaining: usize,
    /// The answered ones, in the order of the claim.
    done: Vec<(String, RequestId, HistoryPage)>,
}

impl Node {
    /// A connection authenticated (`auth`): replies to its `connect` at
    /// once, or after its server-side subscriptions to `channels`; with
    /// `ping`, its application-level pings start with the reply.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn connected(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        auth: Auth,
        ttl: Option<u64>,
        data: Option<Payload>,
        channels: Vec<String>,
        ping: bool,
    ) {
        let user = auth.presence_user();
        let signed_in = auth.user().is_some();
        self.set_auth(id, auth);
        let mut remaining = 0;
        let mut seen = BTreeSet::new();
        for channel in channels {
            if !seen.insert(channel.clone()) {
                continue;
            }
            // The same rule as a client's subscribe without a subscription
            // token.
            let caller = Caller {
                user: signed_in.then_some(user.as_str()),
                subscribed: false,
                sub_token: false,
            };
            let who = Who::Client(caller);
            #[cfg(feature = "mutations")]
            let who = match self.mutation {
                Some(super::Mutation::SkipServerSubscribePermission) => Who::Api,
                _ => who,
            };
            let Ok(admitted) = admit(&self.config.namespaces, &channel, Action::Subscribe, who)
            else {
                continue;
            };
            if self.subscribe(now, id, enc, None, channel, None, admitted.options) {
                remaining += 1;
            }
        }
        let pending = Connecting {
            enc,
            rid,
            ttl,
            data,
            ping,
            remaining,
            done: Vec::new(),
        };
        if remaining == 0 {
            return self.reply_connected(now, id, pending);
        }
        self.connecting.insert(id, pending);
        self.hold(id);
    }

    /// The backbone answered (or failed) one server-side subscribe.
    pub(super) fn server_sub_replied(
        &mut self,
        now: Timestamp,
        request: RequestId,
        conn: ConnId,
        channel: String,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(pending) = self.connecting.get_mut(&conn) else {
            return;
        };
        pending.remaining = pending.remaining.saturating_sub(1);
        let finished = pending.remaining == 0;
        match result {
            Ok(page) => pending.done.push((channel, request, page)),
            // Left out of `subs`: the client may subscribe itself.
            Err(_) => self.drop_subscription(now, conn, &channel),
        }
        if finished {
            if let Some(pending) = self.connecting.remove(&conn) {
                self.release_hold(conn);
                let done = pending.done.clone();
                self.reply_connected(now, conn, pending);
                for (channel, request, page) in done {
                    self.on_subscribed(now, request, conn, None, &channel, false, Ok(page));
                }
            }
        }
    }

    fn reply_connected(&mut self, now: Timestamp, id: ConnId, pending: Connecting) {
        let Some(client) = self.slab.get(id) else {
            return;
        };
        let user = client.auth.presence_user();
        let subs = pending
            .done
            .into_iter()
            .map(|(channel, _, page)| {
                let at = StreamPosition {
                    epoch: page.epoch,
                    offset: page.top,
                };
                (channel, at)
            })
            .collect();
        let ping = pending.ping.then(|| self.ping_interval_secs());
        let reply = Reply::Connect {
            client: self.client_id(id),
            user,
            ttl: pending.ttl,
            data: pending.data,
            subs,
            ping,
        };
        self.reply(now, id, pending.enc, pending.rid, &reply);
        if ping.is_some() {
            self.start_heartbeats(now, Some(id));
        }
    }
}
