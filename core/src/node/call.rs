//! A client's calls over HTTP ([`crate::call`]): who the caller is and
//! whether they may. The call itself (the backbone's publish, history or
//! presence) is the driver's to make, as for the HTTP API: a call belongs
//! to no connection, so nothing of it stays in the node.
//!
//! The caller: the request's token, checked by the rules of `connect`
//! (none: anonymous, where anonymous connections are allowed). Its rights:
//! those of a connection of that user ([`admit`] as a client), where a
//! namespace's `subscriber` permission counts as met on a channel the user
//! may subscribe to without a subscription token: what a subscriber may
//! read (history, presence) the caller could read by opening a stream, so
//! nothing is given away, and an SSE client's subscriptions live on a
//! stream that may be on another server, which a call cannot see.
//!
//! Refused here rather than half-done: a publication where the publish
//! proxy decides (the backend must see every client publication), and a
//! token whose key is not known yet where a key set is fetched (the fetch
//! is asked for; the caller retries, 503).

use crate::admission::{admit, Action, Admitted, Caller, Refusal, Who};
use crate::auth::TokenError;
use crate::protocol::{ClientInfo, ErrorCode};
use crate::time::Timestamp;

use super::auth::http_token_message;
use super::Node;

/// An admitted call: the channel's namespace options (and history limit),
/// and the caller as a publication or presence names it (`client` is
/// empty: a call belongs to no connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAdmitted {
    /// What admission decided.
    pub admitted: Admitted,
    /// The caller.
    pub caller: ClientInfo,
}

/// Why a call was refused; [`CallRefusal::status`] and
/// [`CallRefusal::code`] are the answer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefusal {
    /// No token where one is needed, or one that does not verify (401).
    #[error("{}", http_token_message(.0))]
    Token(TokenError),
    /// The token names a key that is being fetched (503): retry.
    #[error("the token's key is not known yet and is being fetched; retry")]
    KeysComing,
    /// The namespace's rules refuse it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Publications are decided by the backend here (publish proxy).
    #[error(
        "publications are decided by the backend here (publish proxy); use the WebSocket endpoint"
    )]
    PublishProxy,
}

impl CallRefusal {
    /// The answer's HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            CallRefusal::Token(_) => 401,
            CallRefusal::KeysComing => 503,
            CallRefusal::PublishProxy => 403,
            CallRefusal::Refused(r) => match r.code() {
                ErrorCode::BadChannel => 400,
                code => code.http_status(),
            },
        }
    }

    /// The answer's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallRefusal::Token(e) => e.code(),
            CallRefusal::KeysComing => ErrorCode::NotAvailable,
            CallRefusal::PublishProxy => ErrorCode::PermissionDenied,
            CallRefusal::Refused(r) => r.code(),
        }
    }
}

impl Node {
    /// Decides a client's call at `now`: `token` as the request carried
    /// it, `action` on `channel` (see the module's top for the rules).
    pub fn admit_call(
        &mut self,
        now: Timestamp,
        token: Option<&str>,
        channel: &str,
        action: Action,
    ) -> Result<CallAdmitted, CallRefusal> {
        let claims = match self.verify_connection_token(now, token) {
            Ok(claims) => claims,
            Err(TokenError::UnknownKid(_)) if self.keys_may_come() => {
                self.ask_keys_unheld();
                return Err(CallRefusal::KeysComing);
            }
            Err(e) => return Err(CallRefusal::Token(e)),
        };
        if action == Action::Publish && self.config.proxies.publish {
            return Err(CallRefusal::PublishProxy);
        }
        let user = claims.as_ref().map(|c| c.user.as_str());
        let namespaces = &self.config.namespaces;
        let anyone = Caller {
            user,
            subscribed: false,
            sub_token: false,
        };
        let subscribed = action != Action::Subscribe
            && admit(namespaces, channel, Action::Subscribe, Who::Client(anyone)).is_ok();
        let caller = Caller {
            subscribed,
            ..anyone
        };
        let admitted = admit(namespaces, channel, action, Who::Client(caller))?;
        let (user, conn_info) = claims.map_or((String::new(), None), |c| (c.user, c.info));
        Ok(CallAdmitted {
            admitted,
            caller: ClientInfo {
                client: String::new(),
                user,
                conn_info,
                chan_info: None,
            },
        })
    }

    /// A call's publication was given an offset: counted with the client
    /// publications of the operator's metrics (`source="client"`).
    pub fn call_published(&mut self) {
        self.observed.counters.publications += 1;
    }
}
