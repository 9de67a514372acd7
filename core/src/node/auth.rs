//! Authentication of pub/sub connections: the `connect`, `refresh` and
//! `sub_refresh` commands, the gate every other command passes first, and
//! the deadlines (no `connect` within the connect timeout: 4502; a token
//! past `exp` plus the refresh grace: 4005; a subscription token past its
//! `exp` plus the grace: the subscription ends with an `unsubscribe` push
//! 2501).
//!
//! Tokens speak Unix time and the node's clock starts where its driver
//! chose, so `AuthConfig::unix_origin_micros` converts between the two;
//! nothing here reads a clock.

use crate::auth::{ConnectionClaims, TokenError, Verifier};
use crate::backbone::BackboneCommand;
use crate::protocol::{close, unsubscribe_code, Command, ErrorCode, Payload, Push, Reply};
use crate::proxy::{ConnectResult, ProxyKind};
use crate::time::Timestamp;

use super::ask::{ForKeys, Waiting};
use super::request::error;
use super::slab::{Auth, Identity};
use super::{ConnId, Encoding, Node};

/// What the gate decided about a command.
pub(super) enum Gate {
    /// Go on with the command.
    Pass,
    /// The command was answered (or the connection closed) here.
    Done,
}

impl Node {
    /// The time `now` in seconds since the Unix epoch.
    pub(super) fn unix_now(&self, now: Timestamp) -> u64 {
        (self.config.auth.unix_origin_micros + now.as_micros()) / 1_000_000
    }

    /// The node time of a Unix time in seconds (`ZERO` if before the
    /// node's origin).
    fn node_time(&self, unix_secs: u64) -> Timestamp {
        let micros = unix_secs.saturating_mul(1_000_000);
        Timestamp::from_micros(micros.saturating_sub(self.config.auth.unix_origin_micros))
    }

    /// A token's `exp` (Unix seconds) as the identity keeps it (node time
    /// and Unix time) and as the reply says it (seconds left).
    pub(super) fn expiry(
        &self,
        exp: Option<u64>,
        unix_now: u64,
    ) -> (Option<(Timestamp, u64)>, Option<u64>) {
        let expires = exp.map(|e| (self.node_time(e), e));
        (expires, exp.map(|e| e.saturating_sub(unix_now)))
    }

    /// The connection token of a request that has no `connect` to carry
    /// one (an SSE stream, an HTTP call): none is anonymous where that is
    /// allowed, else [`TokenError::Missing`].
    pub(super) fn verify_connection_token(
        &self,
        now: Timestamp,
        token: Option<&str>,
    ) -> Result<Option<ConnectionClaims>, TokenError> {
        match (token, &self.config.auth.verifier) {
            (None, _) if self.config.auth.allow_anonymous => Ok(None),
            (None, _) => Err(TokenError::Missing),
            (Some(t), Some(v)) => v.connection(t, self.unix_now(now)).map(Some),
            (Some(_), None) => Err(TokenError::NoKey),
        }
    }

    /// When a connection in this state is closed unless something happens
    /// first.
    pub(super) fn auth_deadline(&self, auth: &Auth) -> Option<Timestamp> {
        match auth {
            Auth::Pending(at) => Some(*at),
            Auth::Open | Auth::Anonymous => None,
            Auth::User(identity) => {
                let end = identity
                    .expires
                    .map(|(at, _)| at + self.config.auth.refresh_grace);
                match identity.refresh_at() {
                    Some(at) => end.map(|end| end.min(at)),
                    None => end,
                }
            }
        }
    }

    /// Closes the connections whose authentication deadline passed, and
    /// ends the subscriptions whose token did.
    pub(super) fn auth_timeout(&mut self, now: Timestamp) {
        self.sub_timeout(now);
        while let Some(&(at, id)) = self.auth_timers.first() {
            if at > now {
                break;
            }
            self.auth_timers.pop_first();
            let code = match self.slab.get(id).map(|c| &c.auth) {
                Some(Auth::Pending(_)) => close::CONNECT_TIMEOUT,
                Some(Auth::User(identity)) => {
                    let end = identity
                        .expires
                        .map(|(at, _)| at + self.config.auth.refresh_grace);
                    if end.is_some_and(|end| now < end) && identity.refresh_at().is_some() {
                        // Time to ask the refresh proxy (the connection is
                        // closed at the end of the grace unless it says
                        // otherwise).
                        self.ask_refresh(id);
                        continue;
                    }
                    close::TOKEN_EXPIRED
                }
                Some(Auth::Open | Auth::Anonymous) | None => continue,
            };
            self.close(now, id, code, close::reason(code));
        }
    }

    /// Asks the refresh proxy to extend a proxied connection at its
    /// expiry; its deadline becomes the end of the grace meanwhile.
    fn ask_refresh(&mut self, id: ConnId) {
        let Some(Auth::User(identity)) = self.slab.get(id).map(|c| &c.auth) else {
            return;
        };
        let mut identity = (**identity).clone();
        identity.set_refresh_at(None);
        self.set_auth(id, Auth::User(Box::new(identity)));
        let waiting = Waiting::Refresh { conn: id };
        self.ask_proxy(id, ProxyKind::Refresh, None, None, waiting);
    }

    /// Replaces a connection's authentication state, moving its deadline.
    pub(super) fn set_auth(&mut self, id: ConnId, auth: Auth) {
        let Some(client) = self.slab.get(id) else {
            return;
        };
        let old = self.auth_deadline(&client.auth);
        let new = self.auth_deadline(&auth);
        if let Some(at) = old {
            self.auth_timers.remove(&(at, id));
        }
        if let Some(at) = new {
            self.auth_timers.insert((at, id));
        }
        if let Some(client) = self.client_mut(id) {
            client.auth = auth;
        }
    }

    /// Every command but `connect` and `refresh` passes here first: a
    /// connection still waiting for `connect` becomes anonymous where that
    /// is allowed, and is otherwise told 112 (it stays open until the
    /// connect timeout).
    pub(super) fn gate(&mut self, now: Timestamp, id: ConnId, enc: Encoding, rid: u64) -> Gate {
        let auth = self.slab.get(id).map(|c| &c.auth);
        if matches!(auth, Some(Auth::Open)) {
            // The first command on an open server: anonymous from now on
            // (a later `connect` is "already connected").
            self.set_auth(id, Auth::Anonymous);
            return Gate::Pass;
        }
        let pending = matches!(auth, Some(Auth::Pending(_)));
        match pending {
            true if self.config.auth.allow_anonymous => {
                self.set_auth(id, Auth::Anonymous);
                Gate::Pass
            }
            true => {
                let reply = error(ErrorCode::Unauthorized, "send connect first");
                self.reply(now, id, enc, rid, &reply);
                Gate::Done
            }
            false => Gate::Pass,
        }
    }

    /// `connect`: authenticates with a token, through the connect proxy
    /// without one where it is configured, or anonymously where that is
    /// allowed; with `ping`, the connection gets application-level pings
    /// once connected.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn connect(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        token: Option<String>,
        data: Option<Payload>,
        ping: bool,
    ) {
        if !matches!(
            self.slab.get(id).map(|c| &c.auth),
            Some(Auth::Pending(_) | Auth::Open)
        ) {
            let reply = error(ErrorCode::BadRequest, "already connected");
            self.reply(now, id, enc, rid, &reply);
            return;
        }
        if token.is_none() && self.config.proxies.connect {
            let waiting = Waiting::Connect {
                conn: id,
                enc,
                rid,
                ping,
            };
            return self.ask_proxy(id, ProxyKind::Connect, None, data, waiting);
        }
        let unix_now = self.unix_now(now);
        let verified = match (&token, &self.config.auth.verifier) {
            (None, _) if self.config.auth.allow_anonymous => Ok(None),
            (None, _) => Err(TokenError::Missing),
            (Some(t), Some(v)) => v.connection(t, unix_now).map(Some),
            (Some(_), None) => Err(TokenError::NoKey),
        };
        match verified {
            Ok(None) => {
                let auth = Auth::Anonymous;
                self.connected(now, id, enc, rid, auth, None, None, Vec::new(), ping)
            }
            Ok(Some(claims)) => {
                let (expires, ttl) = self.expiry(claims.expires, unix_now);
                let identity = Identity::new(claims.user, expires, claims.info, None);
                let auth = Auth::User(Box::new(identity));
                self.connected(now, id, enc, rid, auth, ttl, None, claims.channels, ping);
            }
            // The client may connect again with a fresh token before the
            // connect timeout.
            Err(TokenError::Expired) => {
                let reply = error(ErrorCode::TokenExpired, "token expired");
                self.reply(now, id, enc, rid, &reply);
            }
            Err(TokenError::UnknownKid(_))
                if self.wait_for_keys(ForKeys {
                    conn: id,
                    enc,
                    rid,
                    command: Command::Connect { token, data, ping },
                }) => {}
            Err(e) => self.refuse(now, id, enc, rid, &e),
        }
    }

    /// The connect proxy's result: the backend says who the connection is
    /// (an empty user: anonymous).
    pub(super) fn proxy_connected(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        result: ConnectResult,
        ping: bool,
    ) {
        if !matches!(
            self.slab.get(id).map(|c| &c.auth),
            Some(Auth::Pending(_) | Auth::Open)
        ) {
            return;
        }
        let unix_now = self.unix_now(now);
        let (expires, ttl) = self.expiry(result.expire_at, unix_now);
        let auth = if result.user.is_empty() {
            Auth::Anonymous
        } else {
            let refresh_at = match self.config.proxies.refresh {
                true => expires.map(|(at, _)| at),
                false => None,
            };
            Auth::User(Box::new(Identity::new(
                result.user,
                expires,
                result.info,
                refresh_at,
            )))
        };
        let ttl = if matches!(auth, Auth::Anonymous) {
            None
        } else {
            ttl
        };
        self.connected(
            now,
            id,
            enc,
            rid,
            auth,
            ttl,
            result.data,
            result.channels,
            ping,
        );
    }

    /// `refresh`: a fresh token for the same user moves the expiry.
    pub(super) fn refresh(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        token: &str,
    ) {
        let user = match self.slab.get(id).map(|c| &c.auth) {
            Some(Auth::User(identity)) => identity.user.clone(),
            Some(Auth::Pending(_)) => {
                let reply = error(ErrorCode::Unauthorized, "send connect first");
                self.reply(now, id, enc, rid, &reply);
                return;
            }
            _ => {
                let reply = error(
                    ErrorCode::BadRequest,
                    "an anonymous connection has no token to refresh",
                );
                self.reply(now, id, enc, rid, &reply);
                return;
            }
        };
        let unix_now = self.unix_now(now);
        let verified = self.verifier().map(|v| v.connection(token, unix_now));
        match verified {
            Some(Ok(claims)) if claims.user == user => {
                let (expires, ttl) = self.expiry(claims.expires, unix_now);
                let identity = Identity::new(user, expires, claims.info, None);
                self.set_auth(id, Auth::User(Box::new(identity)));
                self.reply(now, id, enc, rid, &Reply::Refresh { ttl });
            }
            Some(Ok(_)) => {
                let e = error(ErrorCode::Unauthorized, "the new token is for another user");
                self.reply(now, id, enc, rid, &e);
                let code = close::UNAUTHORIZED;
                self.close(now, id, code, close::reason(code));
            }
            Some(Err(TokenError::Expired)) => {
                let reply = error(ErrorCode::TokenExpired, "token expired");
                self.reply(now, id, enc, rid, &reply);
            }
            Some(Err(TokenError::UnknownKid(_)))
                if self.wait_for_keys(ForKeys {
                    conn: id,
                    enc,
                    rid,
                    command: Command::Refresh {
                        token: token.to_owned(),
                    },
                }) => {}
            Some(Err(e)) => self.refuse(now, id, enc, rid, &e),
            None => self.refuse(now, id, enc, rid, &TokenError::NoKey),
        }
    }

    /// Bad credentials: error 112, then close 4503 (reconnecting would only
    /// repeat them).
    fn refuse(&mut self, now: Timestamp, id: ConnId, enc: Encoding, rid: u64, e: &TokenError) {
        let reply = error(e.code(), e.to_string());
        self.reply(now, id, enc, rid, &reply);
        let code = close::UNAUTHORIZED;
        self.close(now, id, code, close::reason(code));
    }

    pub(super) fn verifier(&self) -> Option<&Verifier> {
        self.config.auth.verifier.as_ref()
    }

    /// Sets (or, with `None`, clears) when a token-admitted subscription
    /// ends: `exp` (Unix seconds) plus the refresh grace.
    pub(super) fn set_sub_expiry(&mut self, id: ConnId, channel: &str, exp: Option<u64>) {
        let key = (id, channel.to_owned());
        if let Some(at) = self.sub_expiry.remove(&key) {
            self.sub_timers.remove(&(at, id, key.1.clone()));
        }
        if let Some(exp) = exp {
            let at = self.node_time(exp) + self.config.auth.refresh_grace;
            self.sub_timers.insert((at, id, key.1.clone()));
            self.sub_expiry.insert(key, at);
        }
    }

    /// A refreshed subscription token's `info` replaces the old one; a
    /// live subscription's presence entry shows the new one (no join is
    /// announced again).
    fn set_sub_info(&mut self, id: ConnId, channel: &str, info: Option<Payload>) {
        let key = (id, channel.to_owned());
        if self.sub_info.get(&key) == info.as_ref() {
            return;
        }
        match info {
            Some(info) => self.sub_info.insert(key, info),
            None => self.sub_info.remove(&key),
        };
        let live = self
            .channels
            .get(channel)
            .filter(|ch| ch.options.presence && ch.live.contains_key(&id));
        if live.is_some() {
            let info = self.client_info(id, Some(channel));
            self.backbone.push_back(BackboneCommand::PresenceAdd {
                channel: channel.to_owned(),
                info,
                announce: false,
            });
        }
    }

    /// Ends the subscriptions whose token expired without a refresh.
    pub(super) fn sub_timeout(&mut self, now: Timestamp) {
        while let Some((at, id, channel)) = self.sub_timers.first().cloned() {
            if at > now {
                break;
            }
            self.drop_subscription(now, id, &channel);
            let push = Push::Unsubscribe {
                channel,
                code: unsubscribe_code::TOKEN_EXPIRED,
                reason: "subscription token expired".into(),
            };
            self.push(now, id, &push);
        }
    }

    /// `sub_refresh`: a fresh subscription token for a channel this
    /// connection subscribes to moves its expiry.
    pub(super) fn sub_refresh(
        &mut self,
        now: Timestamp,
        id: ConnId,
        enc: Encoding,
        rid: u64,
        channel: &str,
        token: &str,
    ) {
        if !self.subscriptions(id).iter().any(|c| c == channel) {
            let reply = error(ErrorCode::NotSubscribed, "not subscribed to this channel");
            self.reply(now, id, enc, rid, &reply);
            return;
        }
        let unix_now = self.unix_now(now);
        match self.check_sub_token(now, id, channel, token) {
            Ok(claims) => {
                let exp = claims.expires;
                self.set_sub_expiry(id, channel, exp);
                self.set_sub_info(id, channel, claims.info);
                let ttl = exp.map(|e| e.saturating_sub(unix_now));
                self.reply(now, id, enc, rid, &Reply::SubRefresh { ttl });
            }
            Err(TokenError::UnknownKid(_))
                if self.wait_for_keys(ForKeys {
                    conn: id,
                    enc,
                    rid,
                    command: Command::SubRefresh {
                        channel: channel.to_owned(),
                        token: token.to_owned(),
                    },
                }) => {}
            Err(e) => {
                let reply = error(e.code(), e.to_string());
                self.reply(now, id, enc, rid, &reply);
            }
        }
    }
}

/// What a 401 to an HTTP request (an SSE stream, a call) says of its
/// token: where a missing one goes, or what is wrong with it.
pub(super) fn http_token_message(e: &TokenError) -> String {
    match e {
        TokenError::Expired => "token expired".to_owned(),
        TokenError::Missing => "a token is needed: a cookie, or Authorization: Bearer".to_owned(),
        e => e.to_string(),
    }
}
