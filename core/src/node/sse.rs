//! Server-Sent Events streams (`GET /sse`): a stream is a connection of
//! the node like a WebSocket one ([`Endpoint::Sse`]), on the same delivery
//! path (ordering, gap filling, recovery, presence), whose connection only
//! writes and whose pushes are SSE events ([`crate::protocol::sse`]).
//!
//! Opening: [`Node::handle_sse`] authenticates the request's token (401
//! before anything else), admits every channel as a `subscribe` (403/404
//! naming the first refused), then subscribes to all of them, with
//! `recover` where the request gave a position. The answer's head waits,
//! like a connect reply with server-side subscriptions (`server_subs.rs`),
//! until every subscribe is answered, so the stream starts with an `open`
//! event that knows every position; publications meanwhile are kept for
//! replay as for any pending subscribe. A subscribe the backbone cannot
//! serve makes the stream end at once with a `close` event 1013 (the
//! browser retries by itself after `retry`, which a 503 would stop).
//!
//! Positions: the stream keeps, per channel, the last position it sent
//! (the entries of every event id), moved as each `pub` or `gap` event is
//! queued. A gap the node cannot fill ends a WebSocket subscription with
//! an `unsubscribe` push 2500; a stream's subscription is instead
//! subscribed again by the node with `recover` from the stream's position,
//! exactly as a client would, and the answer becomes `pub` events or a
//! `gap` event.

use std::time::Duration;

use bytes::Bytes;

use crate::admission::{admit, Action, Caller, Who};
use crate::auth::TokenError;
use crate::backbone::{BackboneError, HistoryPage, RequestId};
use crate::close::CloseCode;
use crate::protocol::sse::{self as events, GapReason, Open, OpenChannel};
use crate::protocol::{close, unsubscribe_code, Encoding, ErrorCode, Publication, StreamPosition};
use crate::sse::{refusal, response_head, SseRequest};
use crate::time::Timestamp;

use super::auth::http_token_message;
use super::slab::{Auth, Identity};
use super::{ConnId, Endpoint, Node};

/// What a node keeps of one SSE stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Stream {
    /// The stream's channels, in the request's order (the order of the
    /// entries of its ids), and where the stream is in each (the id's
    /// entries; an empty epoch until it is open). One `Vec` for both: an
    /// idle stream's memory is a headline figure.
    channels: Vec<(String, StreamPosition)>,
    /// Until the head is sent: what the opening waits for (boxed: an open
    /// stream pays a pointer for it).
    opening: Option<Box<Opening>>,
}

impl Stream {
    /// Its head went out: it gets heartbeats.
    pub(super) fn is_open(&self) -> bool {
        self.opening.is_none()
    }
}

/// A stream waiting for its subscriptions' answers before its head.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Opening {
    /// The request's positions, by channel.
    asked: Vec<Option<StreamPosition>>,
    /// The token, while it waits for a fresh key set (an unknown key id).
    token: Option<String>,
    /// The `retry:` of the `open` event.
    retry: Duration,
    /// The allowed `Origin` to name in the answer (CORS).
    origin: Option<String>,
    /// Seconds until the token expires.
    ttl: Option<u64>,
    /// Subscribes not answered yet.
    remaining: usize,
    /// The answers, by channel.
    pages: Vec<Option<(RequestId, HistoryPage)>>,
    /// A subscribe failed: the stream ends once all are answered.
    failed: bool,
}

impl Node {
    /// A Server-Sent Events stream asked at `now` (`request` as
    /// [`crate::sse::parse_request`] read it; `retry`: the browser's
    /// reconnection delay for the `open` event, randomised by the driver).
    /// The connection is the node's from here, like one from
    /// [`Node::handle_connect`]: everything it writes (its HTTP answer
    /// included: a refusal, or the `200` head once its subscriptions are
    /// answered, then the events) comes through its queue, and the driver
    /// feeds it the bytes the client sends (ignored) and its end.
    pub fn handle_sse(&mut self, now: Timestamp, request: SseRequest, retry: Duration) -> ConnId {
        let conn = crate::connection::Connection::with_config(now, self.sse_config.clone());
        self.observed.counters.accepted[1] += 1;
        let client = super::slab::Client {
            conn,
            endpoint: Endpoint::Sse,
            timer: None,
            listed: false,
            paused: false,
            held: false,
            in_flight: 0,
            subs: Vec::new(),
            auth: Auth::Anonymous,
            rate: crate::rate::Rate::new(now, 0, 0),
        };
        let id = self.slab.insert(client);
        let SseRequest {
            channels,
            positions,
            token,
            origin,
        } = request;
        let pages = vec![None; channels.len()];
        let none = StreamPosition {
            epoch: String::new(),
            offset: 0,
        };
        let channels = channels.into_iter().map(|c| (c, none.clone())).collect();
        self.streams.insert(
            id,
            Stream {
                channels,
                opening: Some(Box::new(Opening {
                    asked: positions,
                    token,
                    retry,
                    origin,
                    ttl: None,
                    remaining: 0,
                    pages,
                    failed: false,
                })),
            },
        );
        self.sse_authenticate(now, id);
        self.after(now, id);
        id
    }

    /// True if `id` is an SSE stream.
    pub(super) fn is_stream(&self, id: ConnId) -> bool {
        self.streams.contains_key(&id)
    }

    /// True if `id` is an SSE stream whose head has not gone out yet.
    pub(super) fn is_opening(&self, id: ConnId) -> bool {
        self.streams.get(&id).is_some_and(|s| s.opening.is_some())
    }

    fn opening(&mut self, id: ConnId) -> Option<&mut Opening> {
        self.streams.get_mut(&id)?.opening.as_deref_mut()
    }

    /// Checks the stream's token (the rules of `connect`), then admits
    /// and subscribes its channels.
    fn sse_authenticate(&mut self, now: Timestamp, id: ConnId) {
        let open = self.slab.get(id).map(|c| c.conn.state());
        if open != Some(crate::connection::State::Open) {
            return;
        }
        let Some(token) = self.opening(id).map(|o| o.token.take()) else {
            return;
        };
        let unix_now = self.unix_now(now);
        let verified = self.verify_connection_token(now, token.as_deref());
        let auth = match verified {
            Ok(None) => Auth::Anonymous,
            Ok(Some(claims)) => {
                let (expires, ttl) = self.expiry(claims.expires, unix_now);
                if let Some(o) = self.opening(id) {
                    o.ttl = ttl;
                }
                Auth::User(Box::new(Identity::new(
                    claims.user,
                    expires,
                    claims.info,
                    None,
                )))
            }
            Err(TokenError::UnknownKid(_)) if self.sse_wait_for_keys(id) => {
                if let Some(o) = self.opening(id) {
                    o.token = token;
                }
                return;
            }
            Err(e) => {
                let message = http_token_message(&e);
                return self.sse_refuse(now, id, 401, e.code(), &message, None);
            }
        };
        self.set_auth(id, auth);
        self.sse_subscribe_all(now, id);
    }

    /// Admits every channel of an authenticated stream, then subscribes
    /// to all of them.
    fn sse_subscribe_all(&mut self, now: Timestamp, id: ConnId) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        let channels: Vec<String> = stream.channels.iter().map(|(c, _)| c.clone()).collect();
        if channels.is_empty() {
            let m = "no channel: add ?channel=NAME";
            return self.sse_refuse(now, id, 400, ErrorCode::BadRequest, m, None);
        }
        if channels.len() > self.config.max_subscriptions {
            let m = format!(
                "at most {} channels per stream",
                self.config.max_subscriptions
            );
            return self.sse_refuse(now, id, 400, ErrorCode::LimitExceeded, &m, None);
        }
        if self.config.proxies.subscribe {
            // The backend decides subscriptions here, and a stream cannot
            // wait for it per channel: refuse rather than skip it.
            let m = "subscriptions are decided by the backend here (subscribe proxy); use the WebSocket endpoint";
            return self.sse_refuse(now, id, 403, ErrorCode::PermissionDenied, m, None);
        }
        let user = self
            .slab
            .get(id)
            .and_then(|c| c.auth.user())
            .map(str::to_owned);
        let mut admitted = Vec::with_capacity(channels.len());
        for channel in &channels {
            let caller = Caller {
                user: user.as_deref(),
                subscribed: false,
                sub_token: false,
            };
            match admit(
                &self.config.namespaces,
                channel,
                Action::Subscribe,
                Who::Client(caller),
            ) {
                Ok(a) => admitted.push(a.options),
                Err(refusal) => {
                    let code = refusal.code();
                    let status = match code {
                        ErrorCode::BadChannel => 400,
                        other => other.http_status(),
                    };
                    let m = refusal.to_string();
                    return self.sse_refuse(now, id, status, code, &m, Some(channel));
                }
            }
        }
        let asked = self
            .opening(id)
            .map(|o| o.asked.clone())
            .unwrap_or_default();
        let mut remaining = 0;
        for ((channel, options), recover) in channels.into_iter().zip(admitted).zip(asked) {
            if self.subscribe(now, id, Encoding::Json, None, channel, recover, options) {
                remaining += 1;
            }
        }
        if let Some(o) = self.opening(id) {
            o.remaining = remaining;
        }
        if remaining == 0 {
            self.sse_open(now, id);
        }
    }

    /// Holds a stream until the key set is fetched again; false if an
    /// unknown key id is final (refuse then).
    fn sse_wait_for_keys(&mut self, id: ConnId) -> bool {
        if !self.keys_may_come() {
            return false;
        }
        self.ask_keys();
        self.asks.streams_for_keys.push(id);
        true
    }

    /// The key set came (or not): streams waiting for it are decided.
    pub(super) fn sse_keys_fetched(&mut self, now: Timestamp) {
        for id in std::mem::take(&mut self.asks.streams_for_keys) {
            self.sse_authenticate(now, id);
            self.after(now, id);
        }
    }

    /// Refuses a stream before its head: `status` with a JSON error, and
    /// the connection ends once it is written.
    fn sse_refuse(
        &mut self,
        now: Timestamp,
        id: ConnId,
        status: u16,
        code: ErrorCode,
        message: &str,
        channel: Option<&str>,
    ) {
        *self.observed.counters.refused.entry(status).or_default() += 1;
        let origin = self.opening(id).and_then(|o| o.origin.take());
        let body = refusal(status, code, message, channel, origin.as_deref());
        self.sse_send(now, id, [Bytes::from(body)]);
        if let Some(client) = self.slab.get_mut(id) {
            client.conn.close(now, CloseCode::NORMAL, "");
        }
        self.after(now, id);
    }

    /// Queues bytes on a stream's connection, then lists it for writing.
    fn sse_send<const N: usize>(&mut self, now: Timestamp, id: ConnId, bytes: [Bytes; N]) {
        if let Some(client) = self.slab.get_mut(id) {
            for b in bytes {
                let _ = client.conn.send(now, b);
            }
            self.after(now, id);
        }
    }

    /// The backbone answered (or failed) one of an opening stream's
    /// subscribes.
    pub(super) fn sse_sub_replied(
        &mut self,
        now: Timestamp,
        request: RequestId,
        conn: ConnId,
        channel: &str,
        result: Result<HistoryPage, BackboneError>,
    ) {
        let Some(stream) = self.streams.get_mut(&conn) else {
            return;
        };
        let index = stream.channels.iter().position(|(c, _)| c == channel);
        let Some(opening) = stream.opening.as_deref_mut() else {
            return;
        };
        opening.remaining = opening.remaining.saturating_sub(1);
        match (result, index) {
            (Ok(page), Some(i)) => opening.pages[i] = Some((request, page)),
            _ => opening.failed = true,
        }
        if opening.remaining == 0 {
            self.sse_open(now, conn);
        }
    }

    /// Every subscribe of an opening stream is answered: the head and the
    /// `open` event go out, then each subscription completes (recovered
    /// publications or a `gap`, then what went by meanwhile, then live).
    /// If one failed, the stream ends with a `close` event 1013 instead.
    fn sse_open(&mut self, now: Timestamp, id: ConnId) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(opening) = stream.opening.take() else {
            return;
        };
        let Opening {
            asked,
            retry,
            origin,
            ttl,
            pages,
            failed,
            ..
        } = *opening;
        let head = Bytes::from(response_head(origin.as_deref()));
        if failed || pages.iter().any(Option::is_none) {
            let code = CloseCode::TRY_AGAIN_LATER;
            let event = events::close_event(code.0, "server not available; retry");
            let retry = format!("retry: {}\n\n", retry.as_millis());
            self.sse_send(now, id, [head, Bytes::from(retry), event]);
            if let Some(client) = self.slab.get_mut(id) {
                client.conn.close(now, code, "");
            }
            return self.after(now, id);
        }
        let mut channels = Vec::with_capacity(pages.len());
        for (((channel, at), page), asked) in stream.channels.iter_mut().zip(&pages).zip(asked) {
            let Some((_, page)) = page else { continue };
            let fresh = StreamPosition {
                epoch: page.epoch.clone(),
                offset: page.top,
            };
            let (position, recovered) = match asked {
                // Resumed: the id moves on as the recovered publications
                // (or the `gap`) go out, not before.
                Some(asked) => (asked, Some(page.complete)),
                None => (fresh, None),
            };
            *at = position.clone();
            channels.push(OpenChannel {
                channel: channel.clone(),
                position,
                recovered,
            });
        }
        let id_line = events::id_line(stream.channels.iter().map(|(_, at)| at));
        let (client_id, user) = (
            self.client_id(id),
            self.slab
                .get(id)
                .map(|c| c.auth.presence_user())
                .unwrap_or_default(),
        );
        let open = Open {
            client: client_id,
            user,
            ttl,
            channels,
        };
        self.sse_send(now, id, [head, id_line, events::open_event(retry, &open)]);
        self.start_heartbeats(now, None);
        let names = self
            .streams
            .get(&id)
            .map(|s| {
                s.channels
                    .iter()
                    .map(|(c, _)| c.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (channel, page) in names.iter().zip(pages) {
            if let Some((request, page)) = page {
                let recover = page_recover(&open.channels, channel);
                self.on_subscribed(now, request, id, None, channel, recover, Ok(page));
            }
        }
    }

    /// A stream's subscribe was answered and it is now live in `channel`
    /// (called where a client's subscribe reply would go out): for a
    /// resumed channel, the recovered publications as `pub` events, or a
    /// `gap` event and the new position.
    pub(super) fn sse_subscribed(
        &mut self,
        now: Timestamp,
        id: ConnId,
        channel: &str,
        recover: bool,
        page: &HistoryPage,
    ) {
        let top = StreamPosition {
            epoch: page.epoch.clone(),
            offset: page.top,
        };
        if !recover {
            self.set_position(id, channel, top);
            return;
        }
        if page.complete {
            for publication in &page.publications {
                self.sse_pub(now, id, channel, Some(&page.epoch), publication, None);
            }
            self.set_position(id, channel, top);
            return;
        }
        let Some(asked) = self.position(id, channel).cloned() else {
            return;
        };
        let reason = GapReason::of(&asked, &top);
        self.set_position(id, channel, top.clone());
        let event = events::gap_event(channel, &top, reason);
        self.sse_event(now, id, event);
    }

    /// Queues a `pub` event on a stream: its id line (the stream's
    /// positions, this one's moved to the publication, and to `epoch` when
    /// given: a live subscription is always in the stream's epoch) and the
    /// event, `shared` when the caller encoded it for every stream.
    pub(super) fn sse_pub(
        &mut self,
        now: Timestamp,
        id: ConnId,
        channel: &str,
        epoch: Option<&str>,
        publication: &Publication,
        shared: Option<Bytes>,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some((_, position)) = stream.channels.iter_mut().find(|(c, _)| c == channel) else {
            return;
        };
        if let Some(epoch) = epoch.filter(|e| *e != position.epoch) {
            position.epoch = epoch.to_owned();
        }
        position.offset = publication.offset;
        let line = events::id_line(stream.channels.iter().map(|(_, at)| at));
        let event = shared.unwrap_or_else(|| events::pub_event(channel, publication));
        self.sse_send(now, id, [line, event]);
    }

    /// Queues an event on a stream after its id line.
    fn sse_event(&mut self, now: Timestamp, id: ConnId, event: Bytes) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        let line = events::id_line(stream.channels.iter().map(|(_, at)| at));
        self.sse_send(now, id, [line, event]);
    }

    /// Queues an event that carries no id (`join`, `leave`, ...).
    fn sse_plain(&mut self, now: Timestamp, id: ConnId, event: Bytes) {
        self.sse_send(now, id, [event]);
    }

    /// A push for a stream, as the event it becomes.
    pub(super) fn sse_push(&mut self, now: Timestamp, id: ConnId, push: &crate::protocol::Push) {
        use crate::protocol::Push;
        if self.is_opening(id) {
            return;
        }
        match push {
            Push::Pub {
                channel,
                publication,
            } => self.sse_pub(now, id, channel, None, publication, None),
            Push::Join { channel, info } => {
                self.sse_plain(now, id, events::presence_event("join", channel, info))
            }
            Push::Leave { channel, info } => {
                self.sse_plain(now, id, events::presence_event("leave", channel, info))
            }
            Push::Unsubscribe {
                channel,
                code,
                reason,
            } => {
                if unsubscribe_code::should_resubscribe(*code) {
                    self.sse_resubscribe(now, id, channel);
                } else {
                    let event = events::unsubscribe_event(channel, *code, reason);
                    self.sse_plain(now, id, event);
                }
            }
            Push::Ping => {}
        }
    }

    /// What a client does after an `unsubscribe` push 2500: subscribe
    /// again with `recover` from the stream's position (the subscription
    /// was dropped before the push).
    fn sse_resubscribe(&mut self, now: Timestamp, id: ConnId, channel: &str) {
        let Some(position) = self.position(id, channel).cloned() else {
            return;
        };
        let user = self
            .slab
            .get(id)
            .and_then(|c| c.auth.user())
            .map(str::to_owned);
        let caller = Caller {
            user: user.as_deref(),
            subscribed: false,
            sub_token: false,
        };
        let admitted = admit(
            &self.config.namespaces,
            channel,
            Action::Subscribe,
            Who::Client(caller),
        );
        let subscribed = match admitted {
            Ok(a) => self.subscribe(
                now,
                id,
                Encoding::Json,
                None,
                channel.to_owned(),
                Some(position),
                a.options,
            ),
            Err(_) => false,
        };
        if !subscribed {
            let code = close::INSUFFICIENT_STATE;
            self.close(now, id, code, close::reason(code));
        }
    }

    /// A stream's subscribe (after it opened) that the backbone could not
    /// serve: the stream ends with 1013 (it comes back by itself and
    /// resumes from its id), rather than subscribing again at once.
    pub(super) fn sse_sub_failed(&mut self, now: Timestamp, id: ConnId) {
        let code = CloseCode::TRY_AGAIN_LATER;
        self.close(now, id, code, "server not available; retry");
    }

    /// The `close` event before a stream that is open ends with `code`.
    pub(super) fn sse_closing(
        &mut self,
        now: Timestamp,
        id: ConnId,
        code: CloseCode,
        reason: &str,
    ) {
        if self.is_opening(id) {
            return;
        }
        let reason = if reason.is_empty() {
            close::reason(code)
        } else {
            reason
        };
        let event = events::close_event(code.0, reason);
        if let Some(client) = self.slab.get_mut(id) {
            // Not `sse_send`: the caller closes the connection right after,
            // and its loop settles it.
            let _ = client.conn.send(now, event);
        }
    }

    /// A stream ended: what the node kept of it goes.
    pub(super) fn sse_closed(&mut self, id: ConnId) {
        self.streams.remove(&id);
        self.asks.streams_for_keys.retain(|s| *s != id);
    }

    fn position(&self, id: ConnId, channel: &str) -> Option<&StreamPosition> {
        let stream = self.streams.get(&id)?;
        let (_, at) = stream.channels.iter().find(|(c, _)| c == channel)?;
        Some(at)
    }

    fn set_position(&mut self, id: ConnId, channel: &str, to: StreamPosition) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if let Some((_, at)) = stream.channels.iter_mut().find(|(c, _)| c == channel) {
            *at = to;
        }
    }
}

/// Whether the open listed `channel` as resumed.
fn page_recover(channels: &[OpenChannel], channel: &str) -> bool {
    channels
        .iter()
        .find(|c| c.channel == channel)
        .is_some_and(|c| c.recovered.is_some())
}
