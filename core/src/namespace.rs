//! Channel namespaces: per-namespace options for channels named `ns:name`.
//!
//! A channel without a `:` uses the defaults, which make recovery work with
//! no configuration at all: 100 publications of history kept 5 minutes,
//! presence on, join/leave off, clients may publish. A channel `ns:name`
//! takes the options of namespace `ns`, which must be configured; an
//! unknown namespace is the client's error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backbone::HistoryPolicy;

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
    /// Clients (not only the HTTP API) may publish.
    pub allow_publish: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence: true,
            join_leave: false,
            allow_publish: true,
        }
    }
}

impl NamespaceOptions {
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
