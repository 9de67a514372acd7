//! One node wired straight to the in-memory hub, with nothing in between:
//! what a single server's shard and its backbone thread do, for the
//! benches, examples and tests that drive the core alone.

use crate::backbone::NodeId;
use crate::hub::Hub;
use crate::node::{Node, NodeConfig};
use crate::time::Timestamp;

/// A node (as node 0) and the hub that sequences for it.
#[derive(Debug)]
pub struct Standalone {
    /// The node: connections are fed and drained through it.
    pub node: Node,
    /// The hub: channels, offsets and history.
    pub hub: Hub,
}

impl Standalone {
    /// A node with `config` and a hub whose epochs derive from `epoch_seed`.
    pub fn new(config: NodeConfig, epoch_seed: u64) -> Standalone {
        Standalone {
            node: Node::new(config),
            hub: Hub::new(epoch_seed),
        }
    }

    /// Moves the node's backbone commands to the hub and the hub's events
    /// back to the node until neither has anything left (subscribes are
    /// answered, publications delivered into the connections' queues).
    pub fn pump(&mut self, now: Timestamp) {
        loop {
            let mut moved = false;
            while let Some(cmd) = self.node.poll_backbone() {
                self.hub.handle_command(now, NodeId(0), cmd);
                moved = true;
            }
            while let Some((_, ev)) = self.hub.poll_event() {
                self.node.handle_backbone(now, ev);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }
}
