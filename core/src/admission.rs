//! Admission: the one rule that decides whether an action on a channel is
//! allowed, for both front doors (a client's WebSocket command, handled by
//! the node, and the HTTP API).
//!
//! [`admit`] checks the channel's name, resolves its namespace and applies
//! the namespace's options to the action and to who asks: clients may
//! publish only where the namespace allows it (`allow_publish`), the API
//! always may; presence needs `presence` on for either; a history page is
//! capped at the namespace's `history_size`. A refusal carries the
//! [`ErrorCode`] and message both doors answer with. Authentication will
//! extend this function, so every admission rule stays here.

use crate::namespace::{NamespaceOptions, Namespaces, UnknownNamespace};
use crate::protocol::{validate_channel, ChannelError, ErrorCode};

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

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A pub/sub client connection (a WebSocket command).
    Client,
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
    /// A client publishing where only the API may
    /// ([`ErrorCode::PermissionDenied`]).
    #[error("clients may not publish in this namespace")]
    PublishDenied,
    /// Presence asked of a namespace without it ([`ErrorCode::NotAvailable`]).
    #[error("presence is off in this namespace")]
    PresenceOff,
}

impl Refusal {
    /// The error code of the reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadChannel(e) => e.error_code(),
            Refusal::UnknownNamespace(_) => ErrorCode::UnknownNamespace,
            Refusal::PublishDenied => ErrorCode::PermissionDenied,
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
    who: Who,
) -> Result<Admitted, Refusal> {
    validate_channel(channel)?;
    let options = *namespaces.resolve(channel)?;
    let mut limit = None;
    match action {
        Action::Subscribe | Action::Unsubscribe => {}
        Action::Publish => {
            if who == Who::Client && !options.allow_publish {
                return Err(Refusal::PublishDenied);
            }
        }
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
                allow_publish: false,
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
        for who in [Who::Client, Who::Api] {
            for action in ALL {
                let a = admit(&n, "news", action, who).unwrap();
                assert_eq!(a.options, NamespaceOptions::default());
            }
        }
    }

    #[test]
    fn bad_channel_is_refused_before_the_namespace() {
        let n = namespaces();
        for who in [Who::Client, Who::Api] {
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
        for who in [Who::Client, Who::Api] {
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
        let r = admit(&n, "quiet:a", Action::Publish, Who::Client).unwrap_err();
        assert_eq!(r, Refusal::PublishDenied);
        assert_eq!(r.code(), ErrorCode::PermissionDenied);
        assert_eq!(r.to_string(), "clients may not publish in this namespace");
        let a = admit(&n, "quiet:a", Action::Publish, Who::Api).unwrap();
        assert_eq!(a.options.history_size, 5);
        assert_eq!(a.limit, None);
        // Subscribing there is still every client's.
        assert!(admit(&n, "quiet:a", Action::Subscribe, Who::Client).is_ok());
    }

    #[test]
    fn presence_off_is_refused_to_both() {
        let n = namespaces();
        for who in [Who::Client, Who::Api] {
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
        for who in [Who::Client, Who::Api] {
            assert_eq!(limit("quiet:a", None, who), Some(5));
            assert_eq!(limit("quiet:a", Some(3), who), Some(3));
            assert_eq!(limit("quiet:a", Some(50), who), Some(5));
            assert_eq!(limit("news", Some(0), who), Some(0));
            assert_eq!(limit("news", None, who), Some(100));
        }
    }
}
