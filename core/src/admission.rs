//! Admission: the one rule that decides whether an action on a channel is
//! allowed, for both front doors (a client's WebSocket command, handled by
//! the node, and the HTTP API).
//!
//! [`admit`] checks the channel's name, resolves its namespace and applies
//! the namespace's options to the action and to who asks, in this order
//! (docs/OPERATIONS.md, "Authentication", has the same as a table):
//!
//! 1. the channel name is valid (109) and its namespace configured (103);
//! 2. the HTTP API may do anything the namespace offers; a client must have
//!    the namespace's permission for the action ([`Permission`]): anyone,
//!    an authenticated connection, a subscriber of the channel, one with a
//!    valid subscription token, or nobody (104 otherwise);
//! 3. in a `user_limited` namespace, a channel `name#42,17` is only for
//!    users 42 and 17 (104);
//! 4. presence needs `presence` on (108); a history page is capped at the
//!    namespace's `history_size`.
//!
//! Token verification itself happens before (the node checks a subscription
//! token and tells [`Caller::sub_token`]); this function only decides.

use crate::namespace::{NamespaceOptions, Namespaces, Permission, UnknownNamespace};
use crate::protocol::{validate_channel, ChannelError, ErrorCode};

/// Separates a user-limited channel's name from its users (`room#42,17`).
pub const USER_SEPARATOR: char = '#';

/// What is asked of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe to it.
    Subscribe,
    /// End a subscription (the namespace must still resolve).
    Unsubscribe,
    /// Publish to it.
    Publish,
    /// Ask who is subscribed.
    Presence,
    /// Read a page of its history, of at most `limit` publications (none:
    /// as many as the namespace keeps).
    History {
        /// The limit asked for.
        limit: Option<usize>,
    },
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
            Action::Publish => "publish",
            Action::Presence => "presence",
            Action::History { .. } => "history",
        }
    }
}

/// A client connection, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The user, for an authenticated connection (`None`: anonymous).
    pub user: Option<&'a str>,
    /// Whether it is subscribed to the channel.
    pub subscribed: bool,
    /// Whether it presented a valid subscription token for the channel.
    pub sub_token: bool,
}

impl Caller<'_> {
    /// An anonymous connection, subscribed to nothing.
    pub const ANONYMOUS: Caller<'static> = Caller {
        user: None,
        subscribed: false,
        sub_token: false,
    };
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// A pub/sub client connection (a WebSocket command).
    Client(Caller<'a>),
    /// The HTTP API, which is trusted with everything a namespace offers:
    /// it may publish even where clients may not.
    Api,
}

/// An admitted action: the channel's namespace options and, for history,
/// the capped limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The options of the channel's namespace.
    pub options: NamespaceOptions,
    /// For [`Action::History`], the page limit to ask for: the one asked
    /// for, at most the namespace's `history_size`. `None` for the other
    /// actions.
    pub limit: Option<usize>,
}

/// Why an action was refused; [`Refusal::code`] and the `Display` message
/// are what the reply says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The channel name is invalid ([`ErrorCode::BadChannel`]).
    #[error(transparent)]
    BadChannel(#[from] ChannelError),
    /// The channel's namespace is not configured
    /// ([`ErrorCode::UnknownNamespace`]).
    #[error(transparent)]
    UnknownNamespace(#[from] UnknownNamespace),
    /// The client lacks the namespace's permission for the action
    /// ([`ErrorCode::PermissionDenied`]).
    #[error("{action} is allowed to {} in this namespace", needs_text(*.needs))]
    Denied {
        /// The action refused.
        action: &'static str,
        /// What the namespace asks for it.
        needs: Permission,
    },
    /// A user-limited channel of other users ([`ErrorCode::PermissionDenied`]).
    #[error("this channel is limited to other users")]
    OtherUsers,
    /// Presence asked of a namespace without it ([`ErrorCode::NotAvailable`]).
    #[error("presence is off in this namespace")]
    PresenceOff,
}

fn needs_text(p: Permission) -> &'static str {
    match p {
        Permission::Anonymous => "every connection",
        Permission::Authenticated => "authenticated connections only",
        Permission::Subscriber => "subscribers of the channel only",
        Permission::Token => "connections with a subscription token only",
        Permission::None => "no client",
    }
}

impl Refusal {
    /// The error code of the reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadChannel(e) => e.error_code(),
            Refusal::UnknownNamespace(_) => ErrorCode::UnknownNamespace,
            Refusal::Denied { .. } | Refusal::OtherUsers => ErrorCode::PermissionDenied,
            Refusal::PresenceOff => ErrorCode::NotAvailable,
        }
    }
}

/// Decides whether `who` may do `action` on `channel`. (A WebSocket
/// command's channel was already checked when it was decoded; checking it
/// again here keeps the rule whole for the API.)
pub fn admit(
    namespaces: &Namespaces,
    channel: &str,
    action: Action,
    who: Who<'_>,
) -> Result<Admitted, Refusal> {
    validate_channel(channel)?;
    let options = *namespaces.resolve(channel)?;
    if let Who::Client(caller) = who {
        let needs = match action {
            Action::Subscribe => Some(options.allow_subscribe),
            // Ending a subscription needs no permission: a connection may
            // always leave what it joined.
            Action::Unsubscribe => None,
            Action::Publish => Some(options.allow_publish),
            Action::Presence => Some(options.allow_presence),
            Action::History { .. } => Some(options.allow_history),
        };
        if let Some(needs) = needs {
            let ok = match needs {
                Permission::Anonymous => true,
                Permission::Authenticated => caller.user.is_some(),
                // Not a valid subscribe permission (refused at startup);
                // refused here too rather than guessed.
                Permission::Subscriber => action != Action::Subscribe && caller.subscribed,
                Permission::Token => action == Action::Subscribe && caller.sub_token,
                Permission::None => false,
            };
            if !ok {
                return Err(Refusal::Denied {
                    action: action.name(),
                    needs,
                });
            }
            if options.user_limited && !user_listed(channel, caller.user) {
                return Err(Refusal::OtherUsers);
            }
        }
    }
    let mut limit = None;
    match action {
        Action::Subscribe | Action::Unsubscribe | Action::Publish => {}
        Action::Presence => {
            if !options.presence {
                return Err(Refusal::PresenceOff);
            }
        }
        Action::History { limit: asked } => {
            let cap = options.history_size;
            limit = Some(asked.map_or(cap, |l| l.min(cap)));
        }
    }
    Ok(Admitted { options, limit })
}

/// In a user-limited namespace: a channel without `#` is open to the
/// namespace's permissions alone; one with `#` only to the users listed
/// after it (comma-separated), never to an anonymous connection.
fn user_listed(channel: &str, user: Option<&str>) -> bool {
    match channel.rsplit_once(USER_SEPARATOR) {
        None => true,
        Some((_, users)) => user.is_some_and(|u| {
            users
                .split(',')
                .any(|listed| !listed.is_empty() && listed == u)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults, plus `quiet` (no presence, history 5, API-only publish).
    fn namespaces() -> Namespaces {
        let mut n = Namespaces::default();
        n.named.insert(
            "quiet".into(),
            NamespaceOptions {
                history_size: 5,
                presence: false,
                allow_publish: Permission::None,
                ..NamespaceOptions::default()
            },
        );
        n
    }

    const ALL: [Action; 5] = [
        Action::Subscribe,
        Action::Unsubscribe,
        Action::Publish,
        Action::Presence,
        Action::History { limit: None },
    ];

    #[test]
    fn default_namespace_admits_every_action_for_both() {
        let n = namespaces();
        for who in [Who::Client(Caller::ANONYMOUS), Who::Api] {
            for action in ALL {
                let a = admit(&n, "news", action, who).unwrap();
                assert_eq!(a.options, NamespaceOptions::default());
            }
        }
    }

    #[test]
    fn bad_channel_is_refused_before_the_namespace() {
        let n = namespaces();
        for who in [Who::Client(Caller::ANONYMOUS), Who::Api] {
            for action in ALL {
                let r = admit(&n, "game:", action, who).unwrap_err();
                assert_eq!(r, Refusal::BadChannel(ChannelError::EmptyName));
                assert_eq!(r.code(), ErrorCode::BadChannel);
                let r = admit(&n, "", action, who).unwrap_err();
                assert_eq!(r.to_string(), "channel name is empty");
            }
        }
    }

    #[test]
    fn unknown_namespace_is_refused() {
        let n = namespaces();
        for who in [Who::Client(Caller::ANONYMOUS), Who::Api] {
            for action in ALL {
                let r = admit(&n, "game:1", action, who).unwrap_err();
                assert_eq!(r.code(), ErrorCode::UnknownNamespace);
                assert_eq!(r.to_string(), "unknown namespace \"game\"");
            }
        }
    }

    #[test]
    fn only_the_api_publishes_where_clients_may_not() {
        let n = namespaces();
        let r = admit(
            &n,
            "quiet:a",
            Action::Publish,
            Who::Client(Caller::ANONYMOUS),
        )
        .unwrap_err();
        assert_eq!(
            r,
            Refusal::Denied {
                action: "publish",
                needs: Permission::None
            }
        );
        assert_eq!(r.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            r.to_string(),
            "publish is allowed to no client in this namespace"
        );
        let a = admit(&n, "quiet:a", Action::Publish, Who::Api).unwrap();
        assert_eq!(a.options.history_size, 5);
        assert_eq!(a.limit, None);
        // Subscribing there is still every client's.
        assert!(admit(
            &n,
            "quiet:a",
            Action::Subscribe,
            Who::Client(Caller::ANONYMOUS)
        )
        .is_ok());
    }

    #[test]
    fn presence_off_is_refused_to_both() {
        let n = namespaces();
        for who in [Who::Client(Caller::ANONYMOUS), Who::Api] {
            let r = admit(&n, "quiet:a", Action::Presence, who).unwrap_err();
            assert_eq!(r, Refusal::PresenceOff);
            assert_eq!(r.code(), ErrorCode::NotAvailable);
            assert_eq!(r.to_string(), "presence is off in this namespace");
        }
    }

    #[test]
    fn history_limit_is_capped_by_the_namespace() {
        let n = namespaces();
        let limit = |channel, asked, who| {
            admit(&n, channel, Action::History { limit: asked }, who)
                .unwrap()
                .limit
        };
        for who in [Who::Client(Caller::ANONYMOUS), Who::Api] {
            assert_eq!(limit("quiet:a", None, who), Some(5));
            assert_eq!(limit("quiet:a", Some(3), who), Some(3));
            assert_eq!(limit("quiet:a", Some(50), who), Some(5));
            assert_eq!(limit("news", Some(0), who), Some(0));
            assert_eq!(limit("news", None, who), Some(100));
        }
    }

    const ACTIONS: [Action; 4] = [
        Action::Subscribe,
        Action::Publish,
        Action::Presence,
        Action::History { limit: None },
    ];

    fn caller(user: Option<&str>, subscribed: bool, sub_token: bool) -> Caller<'_> {
        Caller {
            user,
            subscribed,
            sub_token,
        }
    }

    fn one(options: NamespaceOptions) -> Namespaces {
        let mut n = Namespaces::default();
        n.named.insert("ns".into(), options);
        n
    }

    fn set(options: &mut NamespaceOptions, action: Action, p: Permission) {
        match action {
            Action::Subscribe => options.allow_subscribe = p,
            Action::Publish => options.allow_publish = p,
            Action::Presence => options.allow_presence = p,
            _ => options.allow_history = p,
        }
    }

    /// Every permission value on every action, for each kind of caller.
    #[test]
    fn every_permission_on_every_action() {
        let anonymous = caller(None, false, false);
        let user = caller(Some("42"), false, false);
        let subscriber = caller(Some("42"), true, false);
        let anonymous_subscriber = caller(None, true, false);
        let with_token = caller(Some("42"), false, true);
        for action in ACTIONS {
            for p in Permission::ALL {
                let mut options = NamespaceOptions::default();
                set(&mut options, action, p);
                let n = one(options);
                let allowed = |c: Caller<'_>| admit(&n, "ns:x", action, Who::Client(c)).is_ok();
                let subscribe = action == Action::Subscribe;
                let expect = match p {
                    Permission::Anonymous => [true, true, true, true, true],
                    Permission::Authenticated => [false, true, true, false, true],
                    Permission::Subscriber if subscribe => [false; 5],
                    Permission::Subscriber => [false, false, true, true, false],
                    Permission::Token if subscribe => [false, false, false, false, true],
                    Permission::Token => [false; 5],
                    Permission::None => [false; 5],
                };
                let got = [
                    allowed(anonymous),
                    allowed(user),
                    allowed(subscriber),
                    allowed(anonymous_subscriber),
                    allowed(with_token),
                ];
                assert_eq!(got, expect, "{action:?} {p:?}");
                // The API may always.
                assert!(admit(&n, "ns:x", action, Who::Api).is_ok());
                if let Err(r) = admit(&n, "ns:x", action, Who::Client(anonymous)) {
                    assert_eq!(r.code(), ErrorCode::PermissionDenied);
                }
            }
        }
    }

    #[test]
    fn secured_defaults_need_a_user_to_subscribe_and_a_subscription_for_the_rest() {
        let n = one(NamespaceOptions::secured());
        let anonymous = Who::Client(Caller::ANONYMOUS);
        let user = Who::Client(caller(Some("42"), false, false));
        let subscriber = Who::Client(caller(Some("42"), true, false));
        assert!(admit(&n, "ns:x", Action::Subscribe, anonymous).is_err());
        assert!(admit(&n, "ns:x", Action::Subscribe, user).is_ok());
        assert!(admit(&n, "ns:x", Action::Presence, user).is_err());
        assert!(admit(&n, "ns:x", Action::Presence, subscriber).is_ok());
        assert!(admit(&n, "ns:x", Action::History { limit: None }, subscriber).is_ok());
        assert!(admit(&n, "ns:x", Action::Publish, subscriber).is_err());
        assert!(admit(&n, "ns:x", Action::Publish, Who::Api).is_ok());
    }

    #[test]
    fn user_limited_channels_are_only_for_their_users() {
        let n = one(NamespaceOptions {
            user_limited: true,
            ..NamespaceOptions::default()
        });
        let as_user = |u: Option<&'static str>| Who::Client(caller(u, false, false));
        for (channel, user, ok) in [
            ("ns:room#42,17", Some("42"), true),
            ("ns:room#42,17", Some("17"), true),
            ("ns:room#42,17", Some("4"), false),
            ("ns:room#42,17", Some("42,17"), false),
            ("ns:room#42,17", None, false),
            ("ns:room#", Some(""), false),
            ("ns:room", None, true),
        ] {
            let r = admit(&n, channel, Action::Subscribe, as_user(user));
            assert_eq!(r.is_ok(), ok, "{channel} {user:?}");
            if let Err(r) = r {
                assert_eq!(r, Refusal::OtherUsers);
            }
        }
        // Without user_limited, `#` is an ordinary character.
        let open = one(NamespaceOptions::default());
        assert!(admit(&open, "ns:room#42", Action::Subscribe, as_user(None)).is_ok());
        // The API is not a user and needs none.
        assert!(admit(&n, "ns:room#42", Action::Publish, Who::Api).is_ok());
    }
}
