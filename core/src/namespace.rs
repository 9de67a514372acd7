//! Channel namespaces: per-namespace options for channels named `ns:name`.
//!
//! A channel without a `:` uses the defaults, which make recovery work with
//! no configuration at all: 100 publications of history kept 5 minutes,
//! presence on, join/leave off, and every action open to every connection
//! ([`Permission::Anonymous`]); the runtime tightens the permissions when
//! authentication is configured ([`NamespaceOptions::secured`]). A channel
//! `ns:name` takes the options of namespace `ns`, which must be configured;
//! an unknown namespace is the client's error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backbone::HistoryPolicy;

/// Who may do an action on a namespace's channels (a client connection;
/// the HTTP API may always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Any connection, anonymous ones included.
    Anonymous,
    /// A connection that authenticated with a token (or a connect proxy).
    Authenticated,
    /// A connection subscribed to the channel (publish, history, presence).
    Subscriber,
    /// A connection that presents a subscription token for the channel
    /// (subscribe).
    Token,
    /// No client connection.
    None,
}

impl Permission {
    /// Every permission, as the settings write them.
    pub const ALL: [Permission; 5] = [
        Permission::Anonymous,
        Permission::Authenticated,
        Permission::Subscriber,
        Permission::Token,
        Permission::None,
    ];

    /// The name in the settings (`"anonymous"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Anonymous => "anonymous",
            Permission::Authenticated => "authenticated",
            Permission::Subscriber => "subscriber",
            Permission::Token => "token",
            Permission::None => "none",
        }
    }

    /// The permission with this name.
    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the permission makes sense for subscribe (`subscriber`
    /// does not).
    pub fn valid_for_subscribe(self) -> bool {
        self != Permission::Subscriber
    }

    /// Whether the permission makes sense for publish, history and presence
    /// (`token` does not).
    pub fn valid_for_others(self) -> bool {
        self != Permission::Token
    }
}

/// What channels of one namespace do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamespaceOptions {
    /// Publications kept for history and recovery (0: none).
    pub history_size: usize,
    /// How long a publication is kept.
    pub history_ttl: Duration,
    /// Track which clients are subscribed (the `presence` command).
    pub presence: bool,
    /// Push `join`/`leave` to subscribers (needs `presence`).
    pub join_leave: bool,
    /// Who may subscribe.
    pub allow_subscribe: Permission,
    /// Which clients may publish (the HTTP API always may).
    pub allow_publish: Permission,
    /// Which clients may read history.
    pub allow_history: Permission,
    /// Which clients may ask for presence.
    pub allow_presence: Permission,
    /// Channels `name#u1,u2` may be used only by the users listed after
    /// `#`.
    pub user_limited: bool,
    /// Compress publications (over the threshold) for subscribers that
    /// negotiated permessage-deflate, when the server compresses at all;
    /// off for a namespace whose payloads do not compress (already
    /// compressed or encrypted data), which saves the CPU.
    pub compression: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence: true,
            join_leave: false,
            allow_subscribe: Permission::Anonymous,
            allow_publish: Permission::Anonymous,
            allow_history: Permission::Anonymous,
            allow_presence: Permission::Anonymous,
            user_limited: false,
            compression: true,
        }
    }
}

impl NamespaceOptions {
    /// The defaults when authentication is configured: subscribe needs an
    /// authenticated connection, publishing is the backends' (through the
    /// API), history and presence are for subscribers.
    pub fn secured() -> Self {
        NamespaceOptions {
            allow_subscribe: Permission::Authenticated,
            allow_publish: Permission::None,
            allow_history: Permission::Subscriber,
            allow_presence: Permission::Subscriber,
            ..NamespaceOptions::default()
        }
    }

    /// The history policy the backbone applies to these channels.
    pub fn history(&self) -> HistoryPolicy {
        HistoryPolicy {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }
}

/// The namespace of `channel` was not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown namespace {0:?}")]
pub struct UnknownNamespace(pub String);

/// The defaults and every configured namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Namespaces {
    /// Options of channels without a namespace.
    pub default: NamespaceOptions,
    /// Options by namespace name.
    pub named: BTreeMap<String, NamespaceOptions>,
}

impl Namespaces {
    /// The options that apply to `channel`.
    pub fn resolve(&self, channel: &str) -> Result<&NamespaceOptions, UnknownNamespace> {
        match channel.split_once(':') {
            None => Ok(&self.default),
            Some((ns, _)) => self
                .named
                .get(ns)
                .ok_or_else(|| UnknownNamespace(ns.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_default_named_and_unknown() {
        let mut n = Namespaces::default();
        let chat = NamespaceOptions {
            join_leave: true,
            history_size: 5,
            ..NamespaceOptions::default()
        };
        n.named.insert("chat".into(), chat);
        assert_eq!(n.resolve("news").unwrap(), &NamespaceOptions::default());
        assert_eq!(n.resolve("chat:room1").unwrap(), &chat);
        assert_eq!(n.resolve("chat:a:b").unwrap(), &chat);
        assert_eq!(n.resolve("game:1"), Err(UnknownNamespace("game".into())));
    }
}
