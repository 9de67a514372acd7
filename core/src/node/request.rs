//! Requests to the backbone waiting for their replies: what each one is
//! for ([`InFlight`]), the bookkeeping shared by every command that asks
//! (a new request id, recorded, counted against the connection's bound,
//! the command queued: [`Node::ask`]), and the dispatch of a reply to the
//! client or channel that waits for it.

use crate::backbone::{self, BackboneCommand, BackboneError, RequestId};
use crate::protocol::{ErrorCode, ErrorReply, Reply};
use crate::time::Timestamp;

use super::observe::Sent;
use super::{ConnId, Node};
use crate::metrics::CommandKind;

/// A request to the backbone waiting for its reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum InFlight {
    /// A subscribe: `id` is the command's, `None` for a server-side
    /// subscription (answered in the connect reply).
    Subscribe {
        conn: ConnId,
        id: Option<u64>,
        channel: String,
        recover: bool,
    },
    Publish {
        conn: ConnId,
        id: u64,
    },
    History {
        conn: ConnId,
        id: u64,
    },
    Presence {
        conn: ConnId,
        id: u64,
    },
    Fill {
        channel: String,
    },
}

impl InFlight {
    /// The command whose reply this request completes (a server-side
    /// subscription completes its connection's `connect`; a gap fill none).
    pub(super) fn kind(&self) -> Option<CommandKind> {
        Some(match self {
            InFlight::Subscribe { id: Some(_), .. } => CommandKind::Subscribe,
            InFlight::Subscribe { id: None, .. } => CommandKind::Connect,
            InFlight::Publish { .. } => CommandKind::Publish,
            InFlight::History { .. } => CommandKind::History,
            InFlight::Presence { .. } => CommandKind::Presence,
            InFlight::Fill { .. } => return None,
        })
    }

    /// The connection that waits for this request (none for a gap fill).
    pub(super) fn conn(&self) -> Option<ConnId> {
        match self {
            InFlight::Subscribe { conn, .. }
            | InFlight::Publish { conn, .. }
            | InFlight::History { conn, .. }
            | InFlight::Presence { conn, .. } => Some(*conn),
            InFlight::Fill { .. } => None,
        }
    }
}

impl Node {
    pub(super) fn request_id(&mut self) -> RequestId {
        let r = RequestId(self.next_request);
        self.next_request += 1;
        r
    }

    /// Records a request waiting for the backbone and queues its command
    /// (built from the new request id); the connection behind it, if any,
    /// counts it against `max_requests_in_flight`.
    pub(super) fn ask(
        &mut self,
        now: Timestamp,
        pending: InFlight,
        command: impl FnOnce(RequestId) -> BackboneCommand,
    ) -> RequestId {
        let request = self.request_id();
        if let Some(client) = pending.conn().and_then(|c| self.slab.get_mut(c)) {
            client.in_flight = client.in_flight.saturating_add(1);
        }
        self.requests.insert(request, (pending, Sent(now)));
        self.backbone.push_back(command(request));
        request
    }

    /// Forgets a request (answered, failed or abandoned); a connection held
    /// back at the bound is handled again once below it.
    pub(super) fn take_request(&mut self, request: RequestId) -> Option<InFlight> {
        self.take_request_sent(request).map(|(p, _)| p)
    }

    /// [`Node::take_request`], with the time the request was sent.
    fn take_request_sent(&mut self, request: RequestId) -> Option<(InFlight, Sent)> {
        let (pending, sent) = self.requests.remove(&request)?;
        if let Some(conn) = pending.conn() {
            self.request_done(conn);
        }
        Some((pending, sent))
    }

    pub(super) fn request_done(&mut self, conn: ConnId) {
        let max = self.config.max_requests_in_flight;
        if let Some(client) = self.slab.get_mut(conn) {
            client.in_flight = client.in_flight.saturating_sub(1);
            if client.paused && usize::from(client.in_flight) < max {
                self.unpaused.push(conn);
            }
        }
    }

    /// Handles the held input of connections that dropped below the bound.
    pub(super) fn resume_unpaused(&mut self, now: Timestamp) {
        while let Some(id) = self.unpaused.pop() {
            self.after(now, id);
        }
    }

    pub(super) fn on_reply(
        &mut self,
        now: Timestamp,
        request: RequestId,
        reply: backbone::BackboneReply,
    ) {
        let Some((pending, Sent(sent))) = self.take_request_sent(request) else {
            return; // its connection or channel is gone
        };
        let counters = &mut self.observed.counters;
        let micros = now.saturating_since(sent).as_micros();
        counters
            .backbone_round_trip
            .observe(u64::try_from(micros).unwrap_or(u64::MAX));
        if matches!(
            &reply,
            backbone::BackboneReply::Published(Err(_))
                | backbone::BackboneReply::History(Err(_))
                | backbone::BackboneReply::Presence(Err(_))
        ) {
            counters.backbone_errors += 1;
        }
        let kind = pending.kind();
        self.answering(kind, |node| node.replied(now, request, pending, reply));
    }

    /// [`Node::on_reply`] once its request is taken, within its count of
    /// replies.
    fn replied(
        &mut self,
        now: Timestamp,
        request: RequestId,
        pending: InFlight,
        reply: backbone::BackboneReply,
    ) {
        match (pending, reply) {
            (InFlight::Publish { conn, id }, backbone::BackboneReply::Published(r)) => {
                let reply = match r {
                    Ok(pos) => {
                        self.observed.counters.publications += 1;
                        Reply::Publish { offset: pos.offset }
                    }
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (InFlight::Presence { conn, id }, backbone::BackboneReply::Presence(r)) => {
                let reply = match r {
                    Ok(clients) => Reply::Presence { clients },
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (InFlight::History { conn, id }, backbone::BackboneReply::History(r)) => {
                let reply = match r {
                    Ok(page) => Reply::History {
                        epoch: page.epoch,
                        offset: page.top,
                        publications: page.publications,
                    },
                    Err(e) => backbone_error(&e),
                };
                self.reply_to(now, conn, id, &reply);
            }
            (
                InFlight::Subscribe {
                    conn,
                    id: None,
                    channel,
                    recover,
                },
                backbone::BackboneReply::History(r),
            ) => {
                if self.is_opening(conn) {
                    self.sse_sub_replied(now, request, conn, &channel, r)
                } else if self.is_stream(conn) {
                    // A stream subscribing again after a gap.
                    self.on_subscribed(now, request, conn, None, &channel, recover, r)
                } else {
                    self.server_sub_replied(now, request, conn, channel, r)
                }
            }
            (
                InFlight::Subscribe {
                    conn,
                    id,
                    channel,
                    recover,
                },
                backbone::BackboneReply::History(r),
            ) => self.on_subscribed(now, request, conn, id, &channel, recover, r),
            (InFlight::Fill { channel }, backbone::BackboneReply::History(r)) => {
                self.on_filled(now, request, &channel, r)
            }
            (pending, reply) => {
                // A reply of the wrong kind: the backbone's bug. Fail the
                // request rather than guess.
                let e = BackboneError::Internal(format!("unexpected reply {reply:?}"));
                self.fail_request(now, pending, &e);
            }
        }
    }

    /// A request the backbone could not serve: the client behind it gets
    /// an error reply (and a pending subscribe is undone); a gap fill that
    /// failed is a gap that cannot be filled.
    pub(super) fn fail_request(&mut self, now: Timestamp, pending: InFlight, e: &BackboneError) {
        match pending {
            InFlight::Subscribe {
                conn,
                id: None,
                channel,
                ..
            } if self.is_stream(conn) => {
                let request = self
                    .channels
                    .get(&channel)
                    .and_then(|ch| ch.pending.get(&conn).copied());
                match request {
                    Some(request) if self.is_opening(conn) => {
                        self.sse_sub_replied(now, request, conn, &channel, Err(e.clone()))
                    }
                    _ => {
                        self.drop_subscription(now, conn, &channel);
                        self.sse_sub_failed(now, conn);
                    }
                }
            }
            InFlight::Subscribe {
                conn,
                id: None,
                channel,
                ..
            } => {
                // The request is gone already; the channel still lists it.
                let request = self
                    .channels
                    .get(&channel)
                    .and_then(|ch| ch.pending.get(&conn).copied());
                if let Some(request) = request {
                    self.server_sub_replied(now, request, conn, channel, Err(e.clone()));
                }
            }
            InFlight::Subscribe {
                conn,
                id: Some(id),
                channel,
                ..
            } => {
                self.drop_subscription(now, conn, &channel);
                self.reply_to(now, conn, id, &backbone_error(e));
            }
            InFlight::Publish { conn, id }
            | InFlight::History { conn, id }
            | InFlight::Presence { conn, id } => self.reply_to(now, conn, id, &backbone_error(e)),
            InFlight::Fill { channel } => self.gap_unfillable(now, &channel, None),
        }
    }
}

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(ErrorReply::new(code, message))
}

pub(super) fn backbone_error(e: &BackboneError) -> Reply {
    let code = match e {
        BackboneError::Unavailable => ErrorCode::NotAvailable,
        BackboneError::Internal(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}
