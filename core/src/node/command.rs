//! Client commands: a pub/sub client's frame is decoded and its command
//! admitted ([`crate::admission::admit`], in [`Node::on_command`]), then
//! handled by one method per command (subscribe, unsubscribe, publish,
//! presence, history); also the removal of a client's subscriptions when
//! it unsubscribes, is told of a gap, or ends.

use crate::admission::{admit, Action, Caller, Who};
use crate::auth::{SubscriptionClaims, TokenError};
use crate::backbone::BackboneCommand;
use crate::connection::CloseCause;
use crate::metrics::CommandKind;
use crate::namespace::NamespaceOptions;
#[cfg(feature = "mutations")]
use crate::protocol::Publication;
use crate::protocol::{self, close, Command, Encoding, ErrorCode, Payload, Reply, StreamPosition};
use crate::proxy::ProxyKind;
use crate::time::Timestamp;

use super::ask::{ForKeys, Waiting};
use super::auth::Gate;
use super::channel::LocalChannel;
#[cfg(feature = "mutations")]
use super::channel::Sync;
use super::request::{error, InFlight};
#[cfg(feature = "mutations")]
use super::Mutation;
use super::{ConnId, Node};
use crate::rate::Verdict;

impl Node {
    /// A command frame from a pub/sub client: decoded (a frame that cannot
    /// be trusted closes the connection, a bad command gets an error reply),
    /// its command admitted for its channel ([`admit`]: the rule the HTTP
    /// API applies too), then handled by its command's method.
    pub(super) fn on_command(&mut self, now: Timestamp, id: ConnId, enc: Encoding, bytes: &[u8]) {
        // Until decoded, a reply is to no known command.
        self.answering(None, |node| node.decode_command(now, id, enc, bytes));
    }

    /// [`Node::on_command`] within its count of replies.
    fn decode_command(&mut self, now: Timestamp, id: ConnId, enc: Encoding, bytes: &[u8]) {
        let request = match protocol::decode_request(enc, bytes) {
            Ok(r) => r,
            Err(e) => {
                match (e.error_reply(), e.close_code()) {
                    (Some((rid, reply)), _) => {
                        let reply = Reply::Error(reply.clone());
                        self.reply(now, id, enc, rid, &reply);
                    }
                    (None, Some(code)) => {
                        self.close(now, id, code, close::reason(code));
                    }
                    (None, None) => {}
                }
                return;
            }
        };
        let rid = request.id;
        let kind = command_kind(&request.command);
        self.observed.counters.commands[kind as usize] += 1;
        // `answering` restores the outer command when this one is done.
        self.observed.answering = Some(kind);
        if !self.within_rate(now, id, enc, rid, &request.command) {
            return;
        }
        self.dispatch(now, id, enc, rid, request.command);
    }

    /// A decoded command within the rate limits (or one held for the key
    /// set, decided again): authenticated, admitted, and handled.
    pub(super) fn dispatch(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        command: Command,
    ) {
        let command = match command {
            Command::Connect { token, data, ping } => {
                return self.connect(now, id, enc, rid, token, data, ping)
            }
            Command::Refresh { token } => return self.refresh(now, id, enc, rid, &token),
            other => other,
        };
        if let Gate::Done = self.gate(now, id, enc, rid) {
            return;
        }
        if let Command::SubRefresh { channel, token } = command {
            return self.sub_refresh(now, id, enc, rid, &channel, &token);
        }
        let action = match &command {
            Command::Subscribe { .. } => Action::Subscribe,
            Command::Unsubscribe { .. } => Action::Unsubscribe,
            Command::Publish { .. } => Action::Publish,
            Command::Presence { .. } => Action::Presence,
            Command::History { limit, .. } => Action::History {
                limit: limit.map(|l| l as usize),
            },
            Command::Connect { .. } | Command::Refresh { .. } | Command::SubRefresh { .. } => {
                return
            }
        };
        let Some(channel) = command.channel() else {
            return;
        };
        // A subscription token, when one is given, must verify (whether or
        // not the namespace asks for one): 111 if expired, 112 otherwise.
        let sub_token = match &command {
            Command::Subscribe {
                token: Some(token), ..
            } => match self.check_sub_token(now, id, channel, token) {
                Ok(claims) => Some(claims),
                Err(TokenError::UnknownKid(_))
                    if self.wait_for_keys(ForKeys {
                        conn: id,
                        enc,
                        rid,
                        command: command.clone(),
                    }) =>
                {
                    return
                }
                Err(e) => {
                    let reply = error(e.code(), e.to_string());
                    self.reply(now, id, enc, rid, &reply);
                    return;
                }
            },
            _ => None,
        };
        let Some(client) = self.slab.get(id) else {
            return;
        };
        let caller = Caller {
            user: client.auth.user(),
            subscribed: client.subs.iter().any(|c| c == channel),
            sub_token: sub_token.is_some(),
        };
        let who = Who::Client(caller);
        #[cfg(feature = "mutations")]
        let who = match (self.mutation, action) {
            (Some(Mutation::SkipSubscribePermission), Action::Subscribe) => Who::Api,
            _ => who,
        };
        let admitted = match admit(&self.config.namespaces, channel, action, who) {
            Ok(a) => a,
            Err(refusal) => {
                let reply = error(refusal.code(), refusal.to_string());
                self.reply(now, id, enc, rid, &reply);
                return;
            }
        };
        let options = admitted.options;
        match command {
            Command::Subscribe {
                channel, recover, ..
            } => {
                if self.config.proxies.subscribe {
                    let waiting = Waiting::Subscribe {
                        conn: id,
                        enc,
                        rid,
                        channel: channel.clone(),
                        recover,
                        options,
                        token: sub_token,
                    };
                    let kind = ProxyKind::Subscribe;
                    return self.ask_proxy(id, kind, Some(channel), None, waiting);
                }
                self.subscribe_admitted(now, id, enc, rid, channel, recover, options, sub_token);
            }
            Command::Unsubscribe { channel } => self.unsubscribe(now, id, enc, rid, &channel),
            Command::Publish { channel, data } if self.config.proxies.publish => {
                let waiting = Waiting::Publish {
                    conn: id,
                    enc,
                    rid,
                    channel: channel.clone(),
                    data: data.clone(),
                    options,
                };
                self.ask_proxy(id, ProxyKind::Publish, Some(channel), Some(data), waiting);
            }
            Command::Publish { channel, data } => {
                self.publish(now, id, rid, channel, data, options)
            }
            Command::Presence { channel } => self.presence(now, id, rid, channel),
            Command::History {
                channel,
                since,
                reverse,
                ..
            } => self.history(now, id, rid, channel, since, admitted.limit, reverse),
            Command::Connect { .. } | Command::Refresh { .. } | Command::SubRefresh { .. } => {}
        }
    }

    /// Takes the command from the connection's rate limits; over them the
    /// command is answered 107 (and the connection closed 4504 once it has
    /// been over for the grace). False if the command must not go on.
    fn within_rate(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        command: &Command,
    ) -> bool {
        let (commands, publishes) = (
            self.config.client_command_rate,
            self.config.client_publish_rate,
        );
        if commands == 0 && publishes == 0 {
            return true;
        }
        let publish = matches!(command, Command::Publish { .. });
        let Some(client) = self.client_mut(id) else {
            return false;
        };
        let verdict = client.rate.take(now, commands, publishes, publish);
        if verdict == Verdict::Pass {
            return true;
        }
        let what = if publish { "publications" } else { "commands" };
        let reply = error(
            ErrorCode::LimitExceeded,
            format!("too many {what} on this connection; slow down"),
        );
        self.reply(now, id, enc, rid, &reply);
        if verdict == Verdict::Close {
            let code = close::TOO_MANY_REQUESTS;
            self.close(now, id, code, close::reason(code));
        }
        false
    }

    /// Verifies a subscription token for `channel` of this connection's
    /// user (empty for an anonymous connection).
    pub(super) fn check_sub_token(
        &self,
        now: Timestamp,
        id: ConnId,
        channel: &str,
        token: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let verifier = self.verifier().ok_or(TokenError::NoKey)?;
        let user = self
            .slab
            .get(id)
            .and_then(|c| c.auth.user())
            .unwrap_or_default();
        verifier.subscription(token, self.unix_now(now), user, channel)
    }

    /// A `subscribe` that passed every check (and the subscribe proxy):
    /// subscribes, and a subscription token's expiry ends it unless
    /// refreshed (`sub_refresh`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe_admitted(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        channel: String,
        recover: Option<StreamPosition>,
        options: NamespaceOptions,
        token: Option<SubscriptionClaims>,
    ) {
        let name = channel.clone();
        // Before subscribing: presence learns it when the backbone answers.
        let info = token.as_ref().and_then(|t| t.info.clone());
        let fresh = self.slab.get(id).is_some_and(|c| !c.subs.contains(&name));
        if let (true, Some(info)) = (fresh, info) {
            self.sub_info.insert((id, name.clone()), info);
        }
        let subscribed = self.subscribe(now, id, enc, Some(rid), channel, recover, options);
        match (subscribed, token.and_then(|t| t.expires)) {
            (true, exp @ Some(_)) => self.set_sub_expiry(id, &name, exp),
            (false, _) if fresh => {
                self.sub_info.remove(&(id, name));
            }
            _ => {}
        }
    }

    /// `unsubscribe`: ends a subscription (or a subscribe in flight).
    fn unsubscribe(&mut self, now: Timestamp, id: ConnId, enc: Encoding, rid: u64, channel: &str) {
        let was = self
            .client_mut(id)
            .is_some_and(|c| c.subs.iter().any(|c| c == channel));
        let reply = if was {
            self.drop_subscription(now, id, channel);
            Reply::Unsubscribe
        } else {
            error(ErrorCode::NotSubscribed, "not subscribed to this channel")
        };
        self.reply(now, id, enc, rid, &reply);
    }

    /// `publish` (admitted): asks the backbone to sequence the publication;
    /// the client's own copy comes back from the backbone like everyone
    /// else's.
    pub(super) fn publish(
        &mut self,
        now: Timestamp,
        id: ConnId,
        rid: u64,
        channel: String,
        data: Payload,
        options: NamespaceOptions,
    ) {
        #[cfg(feature = "mutations")]
        if self.mutation == Some(Mutation::DeliverLocalDirectly) {
            if let Some(Sync::Synced { offset, .. }) = self.channels.get(&channel).map(|c| &c.sync)
            {
                let publication = Publication {
                    offset: offset + 1,
                    data: data.clone(),
                    info: None,
                };
                self.deliver(now, &channel, publication);
            }
        }
        // The sender, as the server knows it: subscribers see who spoke
        // without trusting anything in the data.
        let info = self.client_info(id, Some(&channel));
        self.ask(now, InFlight::Publish { conn: id, id: rid }, |request| {
            BackboneCommand::Publish {
                request,
                channel,
                data,
                info: Some(Box::new(info)),
                history: options.history(),
            }
        });
    }

    /// `presence` (admitted: presence is on): asks the backbone who is in
    /// the channel.
    fn presence(&mut self, now: Timestamp, id: ConnId, rid: u64, channel: String) {
        self.ask(now, InFlight::Presence { conn: id, id: rid }, |request| {
            BackboneCommand::Presence { request, channel }
        });
    }

    /// `history` (admitted): asks the backbone for a page of the channel's
    /// history, of at most `limit` (already capped at the namespace's
    /// history size).
    #[allow(clippy::too_many_arguments)]
    fn history(
        &mut self,
        now: Timestamp,
        id: ConnId,
        rid: u64,
        channel: String,
        since: Option<StreamPosition>,
        limit: Option<usize>,
        reverse: bool,
    ) {
        self.ask(now, InFlight::History { conn: id, id: rid }, |request| {
            BackboneCommand::History {
                request,
                channel,
                since,
                limit,
                reverse,
            }
        });
    }

    /// `subscribe`: records the subscription as pending and asks the
    /// backbone for the channel's position (and, with `recover`, the
    /// publications after the client's); the reply is handled in
    /// `channel.rs` (`on_subscribed`). `rid` is `None` for a server-side
    /// subscription (`server_subs.rs`), which is answered in the connect
    /// reply. False if refused.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: Option<u64>,
        channel: String,
        recover: Option<StreamPosition>,
        options: NamespaceOptions,
    ) -> bool {
        let max_subscriptions = self.config.max_subscriptions;
        let Some(client) = self.slab.get_mut(id) else {
            return false;
        };
        let refusal = if client.subs.contains(&channel) {
            Some((
                ErrorCode::AlreadySubscribed,
                "already subscribed to this channel",
            ))
        } else if client.subs.len() >= max_subscriptions {
            Some((
                ErrorCode::LimitExceeded,
                "too many subscriptions on this connection",
            ))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            if let Some(rid) = rid {
                self.reply(now, id, enc, rid, &error(code, message));
            }
            return false;
        }
        if client.subs.is_empty() {
            // Most connections subscribe to one channel: a Vec's first push
            // would reserve four.
            client.subs.reserve_exact(1);
        }
        client.subs.push(channel.clone());
        if !self.channels.contains_key(&channel) {
            self.backbone.push_back(BackboneCommand::Subscribe {
                channel: channel.clone(),
            });
            self.channels
                .insert(channel.clone(), LocalChannel::new(options));
        }
        let recovering = recover.is_some();
        let pending = InFlight::Subscribe {
            conn: id,
            id: rid,
            channel: channel.clone(),
            recover: recovering,
        };
        // Without recover only the position is needed (limit 0).
        let limit = if recovering { None } else { Some(0) };
        let name = channel.clone();
        let request = self.ask(now, pending, |request| BackboneCommand::History {
            request,
            channel: name,
            since: recover,
            limit,
            reverse: false,
        });
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.pending.insert(id, request);
        }
        true
    }

    /// Removes a connection's subscription (or pending subscribe) to
    /// `channel`; drops the channel, and its backbone subscription, with
    /// the last local subscriber.
    pub(super) fn drop_subscription(&mut self, _now: Timestamp, id: ConnId, channel: &str) {
        self.set_sub_expiry(id, channel, None);
        let info = self.client_info(id, Some(channel));
        self.sub_info.remove(&(id, channel.to_owned()));
        if let Some(client) = self.client_mut(id) {
            client.subs.retain(|c| c != channel);
        }
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let was_live = ch.live.remove(&id).is_some();
        let pending = ch.pending.remove(&id);
        let (presence, join_leave) = (ch.options.presence, ch.options.join_leave);
        if let Some(request) = pending {
            self.take_request(request);
        }
        if was_live && presence {
            self.backbone.push_back(BackboneCommand::PresenceRemove {
                channel: channel.to_string(),
                info,
                announce: join_leave,
            });
        }
        self.drop_if_empty(channel);
    }

    pub(super) fn on_closed(&mut self, now: Timestamp, id: ConnId, cause: &CloseCause) {
        let (subs, code) = match self.client_mut(id) {
            Some(c) => (std::mem::take(&mut c.subs), cause.code(c.conn.config())),
            None => return,
        };
        let counters = &mut self.observed.counters;
        counters.count_close(code);
        if matches!(
            cause,
            CloseCause::SlowConsumer(_) | CloseCause::WriteStalled
        ) {
            counters.slow_consumer_closes += 1;
        }
        if *cause == CloseCause::PingFlood {
            counters.ping_flood_closes += 1;
        }
        #[cfg(feature = "mutations")]
        let subs = match self.mutation {
            Some(Mutation::SkipUnsubscribeOnClose) => Vec::new(),
            _ => subs,
        };
        for channel in subs {
            self.drop_subscription(now, id, &channel);
        }
        // Requests this connection made that are still in flight are
        // dropped here, so nothing of it outlives it.
        if let Some(client) = self.client_mut(id) {
            client.in_flight = 0;
        }
        self.requests.retain(|_, (p, _)| match p {
            InFlight::Subscribe { conn, .. }
            | InFlight::Publish { conn, .. }
            | InFlight::History { conn, .. }
            | InFlight::Presence { conn, .. } => *conn != id,
            InFlight::Fill { .. } => true,
        });
        self.forget_asks(id);
    }
}

/// A command's kind, as counted.
pub(super) fn command_kind(command: &Command) -> CommandKind {
    match command {
        Command::Connect { .. } => CommandKind::Connect,
        Command::Refresh { .. } => CommandKind::Refresh,
        Command::SubRefresh { .. } => CommandKind::SubRefresh,
        Command::Subscribe { .. } => CommandKind::Subscribe,
        Command::Unsubscribe { .. } => CommandKind::Unsubscribe,
        Command::Publish { .. } => CommandKind::Publish,
        Command::Presence { .. } => CommandKind::Presence,
        Command::History { .. } => CommandKind::History,
    }
}
