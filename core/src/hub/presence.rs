//! The presence map of a channel: which clients are present, on which
//! node, and whether their join was announced; adds, removes and reads.

use super::{broadcast, channel_entry, Hub};
use crate::backbone::{BackboneEvent, NodeId};
use crate::protocol::ClientInfo;
use crate::Timestamp;

/// A present client: which node it is on (so `remove_node` finds it) and
/// whether its join was announced (so its leave is announced the same way).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Present {
    pub(super) node: NodeId,
    pub(super) info: ClientInfo,
    pub(super) announced: bool,
}

impl Hub {
    pub(super) fn presence_add(
        &mut self,
        now: Timestamp,
        from: NodeId,
        channel: String,
        info: ClientInfo,
        announce: bool,
    ) {
        let ch = channel_entry(
            &mut self.channels,
            self.seed,
            &mut self.created,
            &mut self.usage,
            now,
            channel.clone(),
        );
        // Adding a client again is idempotent: its join is announced once,
        // the first time an add asks for it.
        let was_announced = ch.presence.get(&info.client).is_some_and(|p| p.announced);
        let present = Present {
            node: from,
            info: info.clone(),
            announced: was_announced || announce,
        };
        ch.presence.insert(info.client.clone(), present);
        if announce && !was_announced {
            broadcast(
                &mut self.events,
                &ch.subscribers,
                |channel| BackboneEvent::Join {
                    channel,
                    info: info.clone(),
                },
                &channel,
            );
        }
    }

    pub(super) fn presence_remove(
        &mut self,
        now: Timestamp,
        channel: String,
        info: ClientInfo,
        announce: bool,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.presence.remove(&info.client).is_some() && announce {
            broadcast(
                &mut self.events,
                &ch.subscribers,
                |channel| BackboneEvent::Leave {
                    channel,
                    info: info.clone(),
                },
                &channel,
            );
        }
        self.drop_if_empty(now, &channel);
    }

    /// The clients present in a channel, sorted by client id.
    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.channels.get(channel).map_or_else(Vec::new, |ch| {
            ch.presence.values().map(|p| p.info.clone()).collect()
        })
    }
}
