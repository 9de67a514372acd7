//! The cluster-control protocol: how the HTTP API's `disconnect` and
//! `channels` reach the other servers of a cluster over Redis pub/sub, and
//! how their replies are gathered ([`Pending`], pure bookkeeping, tested
//! without Redis).
//!
//! The HTTP API's `disconnect` and `channels`, and the status page's
//! summaries (`status`), reach the whole cluster
//! through JSON messages (`ControlMsg`) on control topics, carried
//! by the same pub/sub connection (its SUBSCRIBEs are restored with the
//! channels' after a reconnect). A client id starts with the instance id
//! of the server that holds it, so a disconnect is PUBLISHed to
//! `wc:ctl:INSTANCE`; a channel count is PUBLISHed to `wc:ctl`, which
//! every server, this one included, receives. Each server answers through
//! its shards and PUBLISHes the reply, tagged with the request's id, to
//! the asker's own topic. PUBLISH's answer is how many servers got the
//! request, hence how many replies to expect: 0 for a disconnect means no
//! such server is running (the client is not found). The driver waits at
//! most [`CONTROL_TIMEOUT`]: a disconnect without any reply by then fails
//! ([`ControlError::NoReply`]); a channel count answers with the replies
//! that arrived (a server may die mid-request). Replies to unknown or
//! expired requests, and messages that do not parse, are ignored (the
//! latter with a warning). Requests in flight when the link is lost fail
//! with "unavailable". The pending requests live in the driver's own state,
//! so nothing on the fan-out path takes a lock for them.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::sync::oneshot;

use super::{Driver, Link};
use crate::backbone::{ClusterChannels, ClusterStatus, ControlError};
use crate::instance::is_instance;
use crate::mailbox::{disconnect_local, local_channels, Control, ShardMsg};

/// How long a control request (an API disconnect or channel count over
/// the cluster) waits for the other servers' replies.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// The control topic every server subscribes to: requests for all.
pub(super) const CONTROL_ALL: &str = "wc:ctl";

/// The control topic of one server: requests for it and replies to it.
/// (Channel topics start with `wc:{`, so the two never meet.)
pub(super) fn control_topic(instance: &str) -> String {
    format!("{CONTROL_ALL}:{instance}")
}

pub(super) fn is_control_topic(topic: &str) -> bool {
    topic == CONTROL_ALL || topic.starts_with("wc:ctl:")
}

/// A message between servers on a control topic, as JSON with an `op`
/// field: `{"op":"disconnect","req":7,"from":"0a1b2c","client":"...",
/// "reconnect":true}`, `{"op":"disconnected","req":7,"found":true}`,
/// `{"op":"channels","req":8,"from":"0a1b2c"}`,
/// `{"op":"channel_counts","req":8,"channels":{"news":2}}`,
/// `{"op":"status","req":9,"from":"0a1b2c"}`,
/// `{"op":"status_reply","req":9,"server":{...}}` (one server's status
/// page summary, `crate::status::data`). `req` is the
/// asker's request id, unique among its requests; `from` its instance id,
/// whose topic gets the reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ControlMsg {
    /// Close `client` if you hold it (4004 if `reconnect`, else 4501).
    Disconnect {
        req: u64,
        from: String,
        client: String,
        reconnect: bool,
    },
    /// Count the live subscribers of your channels.
    Channels { req: u64, from: String },
    /// The reply to `Disconnect`.
    Disconnected { req: u64, found: bool },
    /// The reply to `Channels`: channels with at least one subscriber.
    ChannelCounts {
        req: u64,
        channels: BTreeMap<String, usize>,
    },
    /// Send your status-page summary.
    Status { req: u64, from: String },
    /// The reply to `Status`: the server's summary.
    StatusReply { req: u64, server: serde_json::Value },
}

/// A control request of this server that waits for replies.
pub(super) struct Pending {
    what: Waiting,
    /// How many servers received the request (PUBLISH's answer); `None`
    /// until Redis has answered the PUBLISH (a reply may come first).
    receivers: Option<usize>,
    /// Replies received so far.
    answers: usize,
}

/// What a pending request collects, and who waits for it.
pub(super) enum Waiting {
    Disconnect {
        instance: String,
        /// True once any reply found the client. (Two servers could share
        /// an instance id: any one finding it is enough.)
        found: bool,
        reply: oneshot::Sender<Result<bool, ControlError>>,
    },
    Channels {
        counts: BTreeMap<String, usize>,
        reply: oneshot::Sender<ClusterChannels>,
    },
    Status {
        servers: Vec<serde_json::Value>,
        reply: oneshot::Sender<ClusterStatus>,
    },
}

impl Pending {
    /// A request just sent: no receiver count yet, no reply.
    fn new(what: Waiting) -> Pending {
        Pending {
            what,
            receivers: None,
            answers: 0,
        }
    }

    /// Redis delivered the request to `receivers` servers.
    fn published(&mut self, receivers: usize) {
        self.receivers = Some(receivers);
    }

    /// A server's reply to a disconnect; false (and nothing counted) if
    /// this request is not a disconnect.
    fn disconnected(&mut self, found: bool) -> bool {
        let Waiting::Disconnect { found: f, .. } = &mut self.what else {
            return false;
        };
        *f |= found;
        self.answers += 1;
        true
    }

    /// A server's channel counts, added to the others'; false (and nothing
    /// counted) if this request is not a channel count.
    fn counted(&mut self, channels: BTreeMap<String, usize>) -> bool {
        let Waiting::Channels { counts, .. } = &mut self.what else {
            return false;
        };
        for (c, n) in channels {
            let sum = counts.entry(c).or_default();
            *sum = sum.saturating_add(n);
        }
        self.answers += 1;
        true
    }

    /// A server's status summary; false (and nothing counted) if this
    /// request is not a status request.
    fn status(&mut self, server: serde_json::Value) -> bool {
        let Waiting::Status { servers, .. } = &mut self.what else {
            return false;
        };
        servers.push(server);
        self.answers += 1;
        true
    }

    /// True when nothing more can change the answer.
    fn settled(&self) -> bool {
        let all = self.receivers.is_some_and(|n| self.answers >= n);
        match &self.what {
            Waiting::Disconnect { found, .. } => *found || all,
            Waiting::Channels { .. } | Waiting::Status { .. } => all,
        }
    }

    /// Answers the API with what was collected; `expired` if the time is
    /// up before every reply came.
    fn finish(self, expired: bool) {
        match self.what {
            Waiting::Disconnect {
                instance,
                found,
                reply,
            } => {
                let r = if found {
                    Ok(true)
                } else if expired {
                    Err(ControlError::NoReply {
                        instance,
                        waited: CONTROL_TIMEOUT,
                    })
                } else {
                    Ok(false)
                };
                let _ = reply.send(r);
            }
            Waiting::Channels { counts, reply } => {
                let asked = self.receivers.unwrap_or(self.answers);
                if expired {
                    tracing::warn!(
                        asked,
                        answered = self.answers,
                        "channel count: some servers did not answer in time; answering without them"
                    );
                }
                let _ = reply.send(ClusterChannels {
                    counts,
                    asked,
                    answered: self.answers,
                });
            }
            Waiting::Status { servers, reply } => {
                let _ = reply.send(ClusterStatus {
                    servers,
                    asked: self.receivers.unwrap_or(self.answers),
                    answered: self.answers,
                });
            }
        }
    }
}

/// What the driver's own tasks report about its control requests.
pub(super) enum ControlEvent {
    /// Redis delivered the request to this many servers.
    Published { req: u64, receivers: usize },
    /// The PUBLISH failed (the link is reported lost separately).
    Failed(u64),
    /// The request's time is up.
    Expired(u64),
}

/// PUBLISHes a control message; returns how many servers received it.
async fn publish_control(
    conn: &mut MultiplexedConnection,
    topic: &str,
    msg: &ControlMsg,
) -> Result<usize, RedisError> {
    // Our own enum with string keys: serialising cannot fail.
    let payload = serde_json::to_vec(msg).unwrap_or_default();
    redis::cmd("PUBLISH")
        .arg(topic)
        .arg(payload)
        .query_async(conn)
        .await
}

impl Driver {
    /// Asks the server `instance` to disconnect `client` (the API's
    /// `disconnect` of another server's client).
    pub(super) fn remote_disconnect(
        &mut self,
        link: &Link,
        instance: String,
        client: String,
        reconnect: bool,
        reply: oneshot::Sender<Result<bool, ControlError>>,
    ) {
        // The API passes only instance ids; anything else could name no
        // server's topic.
        if !is_instance(&instance) {
            let _ = reply.send(Ok(false));
            return;
        }
        let topic = control_topic(&instance);
        let what = Waiting::Disconnect {
            instance,
            found: false,
            reply,
        };
        self.control_request(link, topic, what, |req, from| ControlMsg::Disconnect {
            req,
            from,
            client,
            reconnect,
        });
    }

    /// Asks every server for its channels (the API's `channels` in a
    /// cluster).
    pub(super) fn cluster_channels(
        &mut self,
        link: &Link,
        reply: oneshot::Sender<ClusterChannels>,
    ) {
        let what = Waiting::Channels {
            counts: BTreeMap::new(),
            reply,
        };
        self.control_request(link, CONTROL_ALL.to_owned(), what, |req, from| {
            ControlMsg::Channels { req, from }
        });
    }

    /// Asks every server for its status-page summary (`/status/data` in a
    /// cluster).
    pub(super) fn cluster_status(&mut self, link: &Link, reply: oneshot::Sender<ClusterStatus>) {
        let what = Waiting::Status {
            servers: Vec::new(),
            reply,
        };
        self.control_request(link, CONTROL_ALL.to_owned(), what, |req, from| {
            ControlMsg::Status { req, from }
        });
    }

    /// Sends a control request to `topic` and keeps it pending until its
    /// replies are in or [`CONTROL_TIMEOUT`] has passed.
    fn control_request(
        &mut self,
        link: &Link,
        topic: String,
        what: Waiting,
        make: impl FnOnce(u64, String) -> ControlMsg,
    ) {
        self.next_request = self.next_request.wrapping_add(1);
        let req = self.next_request;
        let msg = make(req, self.instance.clone());
        self.pending.insert(req, Pending::new(what));
        let events = self.control_tx.clone();
        self.spawn(link, move |_, mut conn| async move {
            match publish_control(&mut conn, &topic, &msg).await {
                Ok(receivers) => {
                    let _ = events
                        .send(ControlEvent::Published { req, receivers })
                        .await;
                    None
                }
                Err(e) => {
                    let _ = events.send(ControlEvent::Failed(req)).await;
                    Some(e)
                }
            }
        });
        let events = self.control_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CONTROL_TIMEOUT).await;
            let _ = events.send(ControlEvent::Expired(req)).await;
        });
    }

    pub(super) fn control_event(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Published { req, receivers } => {
                if let Some(p) = self.pending.get_mut(&req) {
                    p.published(receivers);
                    self.settle(req);
                }
            }
            // Dropping the reply slot answers "unavailable".
            ControlEvent::Failed(req) => {
                self.pending.remove(&req);
            }
            ControlEvent::Expired(req) => {
                if let Some(p) = self.pending.remove(&req) {
                    p.finish(true);
                }
            }
        }
    }

    /// Answers request `req` if its replies are all in.
    fn settle(&mut self, req: u64) {
        if self.pending.get(&req).is_some_and(Pending::settled) {
            if let Some(p) = self.pending.remove(&req) {
                p.finish(false);
            }
        }
    }

    /// A message on a control topic: a request of another server (or of
    /// this one) is answered through the shards; a reply goes to the
    /// request waiting for it.
    pub(super) fn control_message(&mut self, link: &Link, payload: &[u8]) {
        let msg: ControlMsg = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable control message from redis; ignored");
                return;
            }
        };
        match msg {
            ControlMsg::Disconnect {
                req,
                from,
                client,
                reconnect,
            } => {
                if !is_instance(&from) {
                    tracing::warn!(from, "control request from an invalid instance id; ignored");
                    return;
                }
                let shards = self.shards.clone();
                let code = Control::disconnect_code(reconnect);
                self.spawn(link, move |_, mut conn| async move {
                    let found = disconnect_local(&shards, &client, code).await;
                    let reply = ControlMsg::Disconnected { req, found };
                    publish_control(&mut conn, &control_topic(&from), &reply)
                        .await
                        .err()
                });
            }
            ControlMsg::Channels { req, from } => {
                if !is_instance(&from) {
                    tracing::warn!(from, "control request from an invalid instance id; ignored");
                    return;
                }
                let shards = self.shards.clone();
                self.spawn(link, move |_, mut conn| async move {
                    let channels = local_channels(&shards).await;
                    let reply = ControlMsg::ChannelCounts { req, channels };
                    publish_control(&mut conn, &control_topic(&from), &reply)
                        .await
                        .err()
                });
            }
            ControlMsg::Status { req, from } => {
                if !is_instance(&from) {
                    tracing::warn!(from, "control request from an invalid instance id; ignored");
                    return;
                }
                let shards = self.shards.clone();
                self.spawn(link, move |_, mut conn| async move {
                    // Shard 0 builds the summary (it needs the server's
                    // shared state, which this driver does not hold).
                    let (tx, rx) = oneshot::channel();
                    let asked = shards.first().is_some_and(|s| {
                        s.send(ShardMsg::Control(Control::ServerStatus(tx))).is_ok()
                    });
                    // A stopping shard drops the question: no reply, and
                    // the asker counts this server as not answering.
                    let server = if asked { rx.await.ok()? } else { return None };
                    let reply = ControlMsg::StatusReply { req, server };
                    publish_control(&mut conn, &control_topic(&from), &reply)
                        .await
                        .err()
                });
            }
            ControlMsg::StatusReply { req, server } => {
                if self.pending.get_mut(&req).is_some_and(|p| p.status(server)) {
                    self.settle(req);
                } else {
                    tracing::debug!(req, "reply to an unknown or expired request; ignored");
                }
            }
            ControlMsg::Disconnected { req, found } => {
                if self
                    .pending
                    .get_mut(&req)
                    .is_some_and(|p| p.disconnected(found))
                {
                    self.settle(req);
                } else {
                    tracing::debug!(req, "reply to an unknown or expired request; ignored");
                }
            }
            ControlMsg::ChannelCounts { req, channels } => {
                if self
                    .pending
                    .get_mut(&req)
                    .is_some_and(|p| p.counted(channels))
                {
                    self.settle(req);
                } else {
                    tracing::debug!(req, "reply to an unknown or expired request; ignored");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::scripts::channel_of;
    use super::*;

    #[test]
    fn control_messages_round_trip_and_garbage_is_refused() {
        let msgs = [
            ControlMsg::Disconnect {
                req: 1,
                from: "0a1b2c".into(),
                client: "ffffff-0-3".into(),
                reconnect: false,
            },
            ControlMsg::Channels {
                req: 2,
                from: "0a1b2c".into(),
            },
            ControlMsg::Disconnected {
                req: 1,
                found: true,
            },
            ControlMsg::ChannelCounts {
                req: 2,
                channels: BTreeMap::from([("news".to_owned(), 3)]),
            },
        ];
        for m in msgs {
            let text = serde_json::to_vec(&m).expect("serialise");
            assert_eq!(serde_json::from_slice::<ControlMsg>(&text).ok(), Some(m));
        }
        let documented = br#"{"op":"disconnected","req":7,"found":true}"#;
        assert_eq!(
            serde_json::from_slice::<ControlMsg>(documented).ok(),
            Some(ControlMsg::Disconnected {
                req: 7,
                found: true
            })
        );
        for bad in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"op":"frobnicate","req":1}"#,
            br#"{"op":"disconnected","req":-1,"found":true}"#,
            br#"{"op":"channel_counts","req":1,"channels":{"a":"x"}}"#,
        ] {
            assert!(
                serde_json::from_slice::<ControlMsg>(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(is_control_topic(&control_topic("0a1b2c")) && is_control_topic(CONTROL_ALL));
        assert_eq!(channel_of(&control_topic("0a1b2c")), None);
    }

    fn disconnect(instance: &str) -> (Pending, oneshot::Receiver<Result<bool, ControlError>>) {
        let (reply, rx) = oneshot::channel();
        let what = Waiting::Disconnect {
            instance: instance.into(),
            found: false,
            reply,
        };
        (Pending::new(what), rx)
    }

    fn channels() -> (Pending, oneshot::Receiver<ClusterChannels>) {
        let (reply, rx) = oneshot::channel();
        let what = Waiting::Channels {
            counts: BTreeMap::new(),
            reply,
        };
        (Pending::new(what), rx)
    }

    /// A status request collects every receiver's summary; one whose time
    /// is up answers with those that came, and says how many were asked.
    #[test]
    fn a_status_request_gathers_the_summaries_that_arrive() {
        let (reply, mut rx) = oneshot::channel();
        let mut p = Pending::new(Waiting::Status {
            servers: Vec::new(),
            reply,
        });
        assert!(!p.counted(BTreeMap::new()), "not a channel count");
        assert!(p.status(serde_json::json!({"instance": "aaaaaa"})));
        p.published(2);
        assert!(!p.settled(), "one of two answered");
        p.finish(true);
        let got = rx.try_recv().expect("answered");
        assert_eq!((got.asked, got.answered, got.servers.len()), (2, 1, 1));
        let msg = ControlMsg::StatusReply {
            req: 3,
            server: serde_json::json!({"instance": "aaaaaa"}),
        };
        let back: ControlMsg = serde_json::from_slice(&serde_json::to_vec(&msg).unwrap()).unwrap();
        assert_eq!(back, msg);
    }

    /// A disconnect is settled by the first server that found the client,
    /// even before Redis said how many received it; otherwise once every
    /// receiver said no.
    #[test]
    fn a_disconnect_settles_on_the_first_find_or_the_last_no() {
        let (mut p, mut rx) = disconnect("0a1b2c");
        assert!(p.disconnected(true));
        assert!(p.settled(), "found before PUBLISH answered");
        p.finish(false);
        assert!(matches!(rx.try_recv(), Ok(Ok(true))));

        let (mut p, mut rx) = disconnect("0a1b2c");
        assert!(p.disconnected(false));
        assert!(!p.settled(), "receivers not known yet");
        p.published(2);
        assert!(!p.settled(), "one of two answered");
        assert!(p.disconnected(false));
        assert!(p.settled());
        p.finish(false);
        assert!(matches!(rx.try_recv(), Ok(Ok(false))));

        // Nobody received it: no such server, the client is not found.
        let (mut p, mut rx) = disconnect("0a1b2c");
        p.published(0);
        assert!(p.settled());
        p.finish(false);
        assert!(matches!(rx.try_recv(), Ok(Ok(false))));
    }

    /// A disconnect nobody answered in time fails, naming the silent
    /// server; a find that came in time still wins.
    #[test]
    fn an_expired_disconnect_is_no_reply_unless_found() {
        let (mut p, mut rx) = disconnect("0a1b2c");
        p.published(1);
        assert!(!p.settled());
        p.finish(true);
        match rx.try_recv() {
            Ok(Err(ControlError::NoReply { instance, waited })) => {
                assert_eq!(instance, "0a1b2c");
                assert_eq!(waited, CONTROL_TIMEOUT);
            }
            other => panic!("not NoReply: {other:?}"),
        }

        let (mut p, mut rx) = disconnect("0a1b2c");
        p.published(3);
        assert!(p.disconnected(true));
        p.finish(true);
        assert!(matches!(rx.try_recv(), Ok(Ok(true))));
    }

    /// Channel counts add up per channel (saturating) and settle only once
    /// every receiver answered; at expiry the answer says how many did.
    #[test]
    fn channel_counts_sum_and_report_who_answered() {
        let (mut p, mut rx) = channels();
        p.published(3);
        assert!(p.counted(BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)])));
        assert!(p.counted(BTreeMap::from([("a".to_owned(), usize::MAX)])));
        assert!(!p.settled());
        assert!(p.counted(BTreeMap::new()));
        assert!(p.settled());
        p.finish(false);
        let got = rx.try_recv().expect("answered");
        assert_eq!(
            got,
            ClusterChannels {
                counts: BTreeMap::from([("a".to_owned(), usize::MAX), ("b".to_owned(), 1)]),
                asked: 3,
                answered: 3,
            }
        );

        let (mut p, mut rx) = channels();
        p.published(2);
        assert!(p.counted(BTreeMap::from([("a".to_owned(), 1)])));
        p.finish(true);
        let got = rx.try_recv().expect("answered");
        assert_eq!((got.asked, got.answered), (2, 1));

        // Expired before PUBLISH answered: asked is what answered.
        let (mut p, mut rx) = channels();
        assert!(p.counted(BTreeMap::new()));
        assert!(!p.settled());
        p.finish(true);
        let got = rx.try_recv().expect("answered");
        assert_eq!((got.asked, got.answered), (1, 1));
    }

    /// A reply of the wrong kind (a request id reused by a confused peer)
    /// counts for nothing.
    #[test]
    fn a_reply_of_the_other_kind_is_not_counted() {
        let (mut p, _rx) = disconnect("0a1b2c");
        p.published(1);
        assert!(!p.counted(BTreeMap::new()));
        assert!(!p.settled());
        let (mut p, _rx) = channels();
        p.published(1);
        assert!(!p.disconnected(true));
        assert!(!p.settled());
    }
}
