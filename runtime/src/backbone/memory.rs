//! The in-memory sequencer of a lone server: core's [`Hub`] on its own
//! thread (`wavecast-backbone`), taking the shards' commands and the API's
//! requests ([`ToHub`]) and sending each shard the events of its node.
//!
//! It takes at most [`HUB_BATCH`] inputs before delivering what they
//! produced, and no input at all while a shard's inbox is over the
//! backlog's bound, so publishing can neither starve delivering nor grow
//! an inbox without limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wavecast_core::hub::{HistoryBudget, Hub};
use wavecast_core::Timestamp;

use super::ToHub;
use crate::clock::Clock;
use crate::mailbox::{ShardInbox, ShardMsg};
use crate::sys::backlog::Receiver;

/// The hub thread's latest history figures, stored after every message it
/// handles, so that reading them never waits for the hub (nor needs a
/// message the Redis driver would have to know).
#[derive(Debug)]
pub(super) struct HistoryFigures {
    pub(super) bytes: AtomicUsize,
    pub(super) channels: AtomicUsize,
    pub(super) budget: HistoryBudget,
}

impl HistoryFigures {
    fn new(budget: HistoryBudget) -> HistoryFigures {
        HistoryFigures {
            bytes: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            budget,
        }
    }

    fn store(&self, hub: &Hub) {
        self.bytes.store(hub.history_bytes(), Ordering::Relaxed);
        self.channels
            .store(hub.channels_with_history(), Ordering::Relaxed);
    }
}

/// Starts the hub thread, its history held to `budget`; returns the sender
/// the [`Backbone`](super::Backbone) handle wraps and the figures it
/// reads. The thread ends when every sender is dropped.
pub(super) fn spawn(
    clock: Clock,
    seed: u64,
    budget: HistoryBudget,
    shards: Vec<ShardInbox>,
    rx: Receiver<ToHub>,
) -> std::io::Result<Arc<HistoryFigures>> {
    let figures = Arc::new(HistoryFigures::new(budget));
    let hub_figures = figures.clone();
    std::thread::Builder::new()
        .name("wavecast-backbone".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("backbone runtime");
            let hub = Hub::with_budget(seed, budget);
            rt.block_on(run_hub(clock, hub, rx, Arc::new(shards), hub_figures));
        })?;
    Ok(figures)
}

async fn run_hub(
    clock: Clock,
    mut hub: Hub,
    mut rx: Receiver<ToHub>,
    shards: Arc<Vec<ShardInbox>>,
    figures: Arc<HistoryFigures>,
) {
    loop {
        // A shard that cannot keep up with its inbox holds the sequencer
        // back (and through the backlog, the shards' reading of clients),
        // rather than letting the inbox grow.
        while shards.iter().any(|s| s.len() > rx.max()) {
            tokio::time::sleep(INBOX_RECHECK).await;
        }
        let deadline = hub.poll_timeout().map(|t| clock.instant_of(t));
        let msg = match deadline {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at.into()) => {
                    hub.handle_timeout(clock.now());
                    figures.store(&hub);
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else { break };
        let t = clock.now();
        handle(&mut hub, t, msg, &figures);
        // Take more of what is waiting before delivering, so that a burst
        // costs one batch of events per wake-up, but at most `HUB_BATCH`:
        // while input keeps arriving, deliveries still go out.
        for _ in 1..HUB_BATCH {
            let Some(msg) = rx.try_recv() else { break };
            handle(&mut hub, t, msg, &figures);
        }
        while let Some((node, event)) = hub.poll_event() {
            if let Some(shard) = shards.get(node.0 as usize) {
                let _ = shard.send(ShardMsg::Backbone(event));
            }
        }
    }
}

/// Most inputs the in-memory sequencer handles before it delivers what they
/// produced (fairness between publishing and delivering).
const HUB_BATCH: usize = 256;

/// How often the sequencer looks again at a shard inbox that was over the
/// bound.
const INBOX_RECHECK: Duration = Duration::from_millis(1);

fn handle(hub: &mut Hub, now: Timestamp, msg: ToHub, figures: &HistoryFigures) {
    match msg {
        ToHub::Command(node, cmd) => {
            hub.handle_command(now, node, cmd);
            figures.store(hub);
        }
        ToHub::Publish {
            channel,
            data,
            info,
            history,
            reply,
        } => {
            let position = hub.publish(now, &channel, data, info, history);
            // Before the reply: an API client that reads `/api/info` after
            // its publish sees the figures of after it.
            figures.store(hub);
            let _ = reply.send(position);
        }
        ToHub::History {
            channel,
            since,
            limit,
            reverse,
            reply,
        } => {
            let page = hub.history_page(now, &channel, since.as_ref(), limit, reverse);
            figures.store(hub);
            let _ = reply.send(page);
        }
        ToHub::Presence { channel, reply } => {
            let _ = reply.send(hub.presence(&channel));
        }
        ToHub::Channels(reply) => {
            let _ = reply.send(hub.channels());
        }
        // Everything before it has been applied already.
        ToHub::Flush(reply) => {
            let _ = reply.send(());
        }
        // One server and no other: nobody else can hold the client.
        ToHub::RemoteDisconnect { reply, .. } => {
            let _ = reply.send(Ok(false));
        }
        // The API counts a lone server's channels from its shards; this
        // is never asked. Dropping the slot answers "unavailable".
        ToHub::ClusterChannels(_) => {}
        // Likewise the status page's summary of a lone server.
        ToHub::ClusterStatus(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::inbox::Inbox;
    use wavecast_core::backbone::{BackboneCommand, HistoryPolicy, NodeId, RequestId};
    use wavecast_core::protocol::Payload;

    /// The in-memory sequencer delivers after at most `HUB_BATCH` inputs,
    /// not once its input runs dry, and takes no more input while a
    /// shard's inbox is over the bound: with ten thousand publishes
    /// waiting and a shard that reads nothing, exactly one batch is taken.
    #[tokio::test]
    async fn the_sequencer_delivers_in_batches_and_waits_for_a_full_inbox() {
        let inbox: ShardInbox = Arc::new(Inbox::new());
        // Everything queued before the sequencer starts, far over the
        // backlog's bound of 100 (the channel's own is raised for it).
        let (tx, rx) = crate::sys::backlog::with_capacity(100, 20_000);
        let node = NodeId(0);
        // A subscriber on node 0, then 10,000 publishes from it.
        let subscribe = BackboneCommand::Subscribe {
            channel: "a".into(),
        };
        tx.send_now(ToHub::Command(node, subscribe)).unwrap();
        let total = 10_000;
        for i in 0..total {
            let publish = BackboneCommand::Publish {
                request: RequestId(i),
                channel: "a".into(),
                data: Payload::null(),
                info: None,
                history: HistoryPolicy {
                    size: 10,
                    ttl: Duration::from_secs(60),
                },
            };
            tx.send_now(ToHub::Command(node, publish)).unwrap();
        }
        let figures = Arc::new(HistoryFigures::new(HistoryBudget::default()));
        let hub = tokio::spawn(run_hub(
            Clock::start(),
            Hub::new(1),
            rx,
            Arc::new(vec![inbox.clone()]),
            figures,
        ));
        // One batch: the subscribe and 255 publishes, each giving the shard
        // a publication and a reply.
        let first = 2 * (HUB_BATCH - 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while inbox.len() < first {
            assert!(tokio::time::Instant::now() < deadline, "nothing delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The inbox is over the bound and nobody drains it: the sequencer
        // holds, whatever time it is given.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(inbox.len(), first);
        assert_eq!(tx.backlog().waiting(), total as usize + 1 - HUB_BATCH);
        // Drained, it goes on, and takes everything in the end.
        let mut batch = Vec::new();
        let mut got = 0;
        while got < 2 * total as usize {
            assert!(inbox.drain(&mut batch).await);
            got += batch.len();
            batch.clear();
        }
        assert_eq!(tx.backlog().waiting(), 0);
        drop(tx);
        hub.await.unwrap();
    }
}
