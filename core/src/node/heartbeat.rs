//! Heartbeats the node sends on its own, on one timer for the whole node:
//! the application-level `ping` push to WebSocket connections that asked
//! for it in `connect` (browsers cannot see WebSocket pings), and the
//! comment line of SSE streams (so proxies and browsers see a live
//! stream).
//!
//! The connections due one are walked once per heartbeat interval, not
//! given a timer each: the WebSockets that asked are a set (an entry each),
//! and the open SSE streams are those of the node's map of streams (no
//! entry of their own); every connection is sent clones of one buffer per kind (the
//! ping frame of its encoding, built once by the node; the static comment
//! line). A connection's first heartbeat comes within one interval of
//! joining the set.

use bytes::Bytes;

use crate::protocol::sse::HEARTBEAT;
use crate::time::Timestamp;

use super::{ConnId, Endpoint, Node};

impl Node {
    /// Adds a WebSocket to the heartbeat set (`None`: an SSE stream just
    /// opened, walked from the map of streams), arming the node's timer if
    /// it was not.
    pub(super) fn start_heartbeats(&mut self, now: Timestamp, id: Option<ConnId>) {
        if let Some(id) = id {
            self.heartbeats.insert(id);
        }
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now + self.config.connection.heartbeat_interval);
        }
    }

    /// The heartbeat interval in whole seconds, rounded up (what a connect
    /// reply's `ping` says).
    pub(super) fn ping_interval_secs(&self) -> u64 {
        let interval = self.config.connection.heartbeat_interval;
        let secs = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
        secs.max(1)
    }

    /// Sends every connection of the set its heartbeat if the timer is due
    /// (safe to call early or twice), and re-arms it while the set is not
    /// empty.
    pub(super) fn heartbeat_timeout(&mut self, now: Timestamp) {
        if self.next_heartbeat.is_none_or(|at| at > now) {
            return;
        }
        // Listed first: sending may close a slow consumer, which leaves the
        // set. The list's storage is the fan-out's, kept between uses.
        let mut targets = std::mem::take(&mut self.targets);
        for &id in &self.heartbeats {
            targets.push(id);
        }
        for (&id, stream) in &self.streams {
            if stream.is_open() {
                targets.push(id);
            }
        }
        for id in targets.drain(..) {
            let Some(client) = self.slab.get_mut(id) else {
                continue;
            };
            let frame = match client.endpoint {
                Endpoint::PubSub(enc) => self.ping_frames[enc.index()].clone(),
                Endpoint::Sse => Bytes::from_static(HEARTBEAT),
                Endpoint::Echo => continue,
            };
            let _ = client.conn.send(now, frame);
            self.after(now, id);
        }
        self.targets = targets;
        let due = !self.heartbeats.is_empty() || !self.streams.is_empty();
        self.next_heartbeat = due.then(|| now + self.config.connection.heartbeat_interval);
    }
}
