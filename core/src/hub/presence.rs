//! The presence map of a channel: which clients are present, on which
//! node, and whether their join was announced; adds, removes and reads.

use super::{broadcast, channel_entry, Hub};
use crate::backbone::{BackboneEvent, NodeId};
use crate::protocol::{ClientInfo, Payload};
use crate::Timestamp;

/// A present client (its client id is the key of the presence map): which
/// node it is on (so `remove_node` finds it), who it is, and whether its
/// join was announced (so its leave is announced the same way).
///
/// One is kept per subscribed connection of a channel with presence, so it
/// is kept small: the client id is not stored twice, and the two optional
/// infos, which most clients do not have, sit behind one box.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Present {
    pub(super) node: NodeId,
    user: String,
    infos: Option<Box<Infos>>,
    pub(super) announced: bool,
}

/// A present client's `conn_info` and `chan_info`, at least one of them set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Infos {
    conn_info: Option<Payload>,
    chan_info: Option<Payload>,
}

impl Present {
    fn new(node: NodeId, info: ClientInfo, announced: bool) -> Present {
        let infos = (info.conn_info.is_some() || info.chan_info.is_some()).then(|| {
            Box::new(Infos {
                conn_info: info.conn_info,
                chan_info: info.chan_info,
            })
        });
        Present {
            node,
            user: info.user,
            infos,
            announced,
        }
    }

    /// The client as presence and its leave show it.
    pub(super) fn info(&self, client: &str) -> ClientInfo {
        let (conn_info, chan_info) = self
            .infos
            .as_deref()
            .map_or((None, None), |i| (i.conn_info.clone(), i.chan_info.clone()));
        ClientInfo {
            client: client.to_owned(),
            user: self.user.clone(),
            conn_info,
            chan_info,
        }
    }
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
        // the first time an add asks for it. The entry takes the latest
        // info.
        let was_announced = ch.presence.get(&info.client).is_some_and(|p| p.announced);
        let present = Present::new(from, info.clone(), was_announced || announce);
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
        // The leave shows the client as it was present (as Redis's does,
        // from the stored entry), whatever the remove carries besides its
        // client id.
        if let Some(present) = ch.presence.remove(&info.client) {
            if announce {
                let info = present.info(&info.client);
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
        }
        self.drop_if_empty(now, &channel);
    }

    /// The clients present in a channel, sorted by client id.
    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        self.channels.get(channel).map_or_else(Vec::new, |ch| {
            ch.presence
                .iter()
                .map(|(client, p)| p.info(client))
                .collect()
        })
    }
}
