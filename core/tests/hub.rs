//! The in-memory backbone (`wavecast_core::hub`) against the delivery
//! contract of docs/PROTOCOL.md: one order per channel (offsets from 1, +1 each),
//! every subscribed node gets every publication (its own included), bounded
//! history, recovery that is exact or says it cannot, presence, cleanup.
//!
//! Long (about sixty short tests) because it is the one checklist of the
//! sequencer's contract, section by section; each test stands alone.

// proptest's `prop_oneof!` expands to an `Arc`; the core's ban on it is about
// the library, not its tests.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use wavecast_core::backbone::{
    BackboneCommand, BackboneEvent, BackboneReply, HistoryPage, HistoryPolicy, NodeId, RequestId,
};
use wavecast_core::hub::{
    HistoryBudget, Hub, ENTRY_OVERHEAD, INFO_JSON_OVERHEAD, INFO_OVERHEAD, NO_EPOCH,
};
use wavecast_core::protocol::{ClientInfo, Payload, Publication, StreamPosition};
use wavecast_core::Timestamp;

use common::pos;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const T0: Timestamp = Timestamp::ZERO;

fn policy(size: usize, ttl_secs: u64) -> HistoryPolicy {
    HistoryPolicy {
        size,
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn keep_all() -> HistoryPolicy {
    policy(1000, 3600)
}

fn data(i: u64) -> Payload {
    Payload::from_json(format!("{{\"n\":{i}}}").as_bytes()).expect("valid JSON")
}

fn secs(s: u64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

fn sub(hub: &mut Hub, node: NodeId, channel: &str) {
    hub.handle_command(
        T0,
        node,
        BackboneCommand::Subscribe {
            channel: channel.into(),
        },
    );
}

fn drain(hub: &mut Hub) -> Vec<(NodeId, BackboneEvent)> {
    std::iter::from_fn(|| hub.poll_event()).collect()
}

/// The offsets of `channel`'s publications delivered to `node`, in order.
fn offsets_to(events: &[(NodeId, BackboneEvent)], node: NodeId, channel: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|(to, e)| match e {
            BackboneEvent::Publication {
                channel: c,
                publication,
                ..
            } if *to == node && c == channel => Some(publication.offset),
            _ => None,
        })
        .collect()
}

fn offsets(page: &HistoryPage) -> Vec<u64> {
    page.publications.iter().map(|p| p.offset).collect()
}

fn epoch_of(hub: &Hub, channel: &str) -> Option<String> {
    hub.channels()
        .into_iter()
        .find(|c| c.name == channel)
        .map(|c| c.epoch)
}

#[test]
fn offsets_start_at_one_and_increase_by_one() {
    let mut hub = Hub::new(7);
    let first = hub.publish(T0, "a", data(0), None, keep_all());
    assert_eq!(first.offset, 1);
    for n in 2..=50 {
        let p = hub.publish(T0, "a", data(n), None, keep_all());
        assert_eq!(
            p,
            pos(&first.epoch, n),
            "one epoch, offset +1 per publication"
        );
    }
    // Channels are independent sequences.
    assert_eq!(hub.publish(T0, "b", data(0), None, keep_all()).offset, 1);
    let page = hub.history(T0, "a", None, Some(0));
    assert_eq!((page.epoch.as_str(), page.top), (first.epoch.as_str(), 50));
}

#[test]
fn every_subscribed_node_gets_every_publication_in_order_publisher_included() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "news");
    sub(&mut hub, N2, "news");
    sub(&mut hub, N2, "news"); // idempotent: no double delivery
    sub(&mut hub, N3, "other");
    for i in 0..20u64 {
        let from = if i % 2 == 0 { N1 } else { N3 };
        let cmd = BackboneCommand::Publish {
            request: RequestId(i),
            channel: "news".into(),
            data: data(i),
            history: keep_all(),
            info: None,
        };
        hub.handle_command(T0, from, cmd);
    }
    let events = drain(&mut hub);
    let all: Vec<u64> = (1..=20).collect();
    assert_eq!(offsets_to(&events, N1, "news"), all);
    assert_eq!(offsets_to(&events, N2, "news"), all);
    assert!(
        offsets_to(&events, N3, "news").is_empty(),
        "an unsubscribed node gets no publication"
    );
    // The data travels with its offset.
    let to_n2: Vec<&Publication> = events
        .iter()
        .filter_map(|(to, e)| match e {
            BackboneEvent::Publication { publication, .. } if *to == N2 => Some(publication),
            _ => None,
        })
        .collect();
    for p in to_n2 {
        assert_eq!(p.data, data(p.offset - 1));
    }
    // The publisher's node gets its own publication through the sequencer,
    // before the reply with its position.
    let n1: Vec<&BackboneEvent> = events
        .iter()
        .filter(|(to, _)| *to == N1)
        .map(|(_, e)| e)
        .collect();
    let epoch = epoch_of(&hub, "news").expect("channel exists");
    assert!(
        matches!(n1[0], BackboneEvent::Publication { publication, .. } if publication.offset == 1)
    );
    assert_eq!(
        n1[1],
        &BackboneEvent::Reply {
            request: RequestId(0),
            reply: BackboneReply::Published(Ok(pos(&epoch, 1)))
        },
        "reply after the publication"
    );
    // N3 (not subscribed) only gets its replies, in order.
    let n3_replies: Vec<u64> = events
        .iter()
        .filter_map(|(to, e)| match e {
            BackboneEvent::Reply {
                reply: BackboneReply::Published(Ok(p)),
                ..
            } if *to == N3 => Some(p.offset),
            _ => None,
        })
        .collect();
    assert_eq!(n3_replies, vec![2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
}

#[test]
fn unsubscribe_stops_delivery() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "c");
    sub(&mut hub, N2, "c");
    hub.publish(T0, "c", data(1), None, keep_all());
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::Unsubscribe {
            channel: "c".into(),
        },
    );
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::Unsubscribe {
            channel: "c".into(),
        },
    ); // idempotent
    hub.publish(T0, "c", data(2), None, keep_all());
    let events = drain(&mut hub);
    assert_eq!(offsets_to(&events, N1, "c"), vec![1, 2]);
    assert_eq!(offsets_to(&events, N2, "c"), vec![1]);
}

#[test]
fn history_is_bounded_by_count() {
    let mut hub = Hub::new(1);
    for i in 0..10 {
        hub.publish(T0, "c", data(i), None, policy(3, 60));
    }
    let page = hub.history(T0, "c", None, None);
    assert_eq!(offsets(&page), vec![8, 9, 10]);
    assert_eq!(page.top, 10);
    assert!(!page.complete, "offsets 1..=7 were trimmed");
    assert_eq!(page.publications[0].data, data(7));
    // Size 0 keeps nothing but still sequences.
    for i in 0..3 {
        sub(&mut hub, N1, "zero");
        hub.publish(T0, "zero", data(i), None, policy(0, 60));
    }
    let page = hub.history(T0, "zero", None, None);
    assert_eq!((page.top, page.publications.len()), (3, 0));
}

#[test]
fn history_is_bounded_by_age_at_read_time_and_by_timeouts() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "c");
    assert_eq!(hub.poll_timeout(), None, "nothing kept, nothing to expire");
    hub.publish(secs(0), "c", data(1), None, policy(100, 10));
    hub.publish(secs(5), "c", data(2), None, policy(100, 10));
    hub.publish(secs(8), "c", data(3), None, policy(100, 10));
    assert_eq!(hub.poll_timeout(), Some(secs(10)));
    // No handle_timeout yet: a read already ignores what expired.
    let page = hub.history(secs(12), "c", None, None);
    assert_eq!(offsets(&page), vec![2, 3]);
    assert!(!page.complete);
    // The timeout removes them from memory, and reschedules.
    hub.handle_timeout(secs(16));
    assert_eq!(hub.channels()[0].kept, 1);
    let next = hub.poll_timeout().expect("offset 3 is still kept");
    assert!(next <= secs(18) && next > secs(16));
    hub.handle_timeout(secs(18));
    assert_eq!(hub.channels()[0].kept, 0);
    assert_eq!(hub.poll_timeout(), None);
    // The subscribed channel is still there, same epoch and top.
    let page = hub.history(
        secs(18),
        "c",
        Some(&pos(&epoch_of(&hub, "c").unwrap(), 3)),
        None,
    );
    assert!(page.complete && page.publications.is_empty() && page.top == 3);
}

/// A channel with offsets 1..=10 of which 6..=10 are kept.
fn recovery_fixture() -> (Hub, String) {
    let mut hub = Hub::new(3);
    sub(&mut hub, N1, "r");
    for i in 0..10 {
        hub.publish(T0, "r", data(i), None, policy(5, 60));
    }
    let epoch = epoch_of(&hub, "r").unwrap();
    (hub, epoch)
}

#[test]
fn recovery_within_history_returns_exactly_the_missing_ones() {
    let (mut hub, epoch) = recovery_fixture();
    for seen in 5..=10 {
        let page = hub.history(T0, "r", Some(&pos(&epoch, seen)), None);
        assert!(page.complete, "from {seen}");
        assert_eq!(offsets(&page), (seen + 1..=10).collect::<Vec<_>>());
        assert_eq!((page.epoch.as_str(), page.top), (epoch.as_str(), 10));
    }
}

#[test]
fn reverse_history_is_the_newest_after_since_newest_first() {
    // History keeps 6..=10 (size 5).
    let (mut hub, epoch) = recovery_fixture();
    let page = hub.history_page(T0, "r", None, Some(3), true);
    assert_eq!(offsets(&page), [10, 9, 8]);
    assert!(!page.complete, "a limit was hit");
    let page = hub.history_page(T0, "r", Some(&pos(&epoch, 7)), Some(10), true);
    assert_eq!(offsets(&page), [10, 9, 8]);
    assert!(page.complete, "everything after 7");
    let page = hub.history_page(T0, "r", Some(&pos(&epoch, 7)), Some(2), true);
    assert_eq!(offsets(&page), [10, 9]);
    let page = hub.history_page(T0, "r", None, None, true);
    assert_eq!(offsets(&page), [10, 9, 8, 7, 6]);
    assert!(hub
        .history_page(T0, "r", None, Some(0), true)
        .publications
        .is_empty());
    // Forward, the same sets come oldest first.
    assert_eq!(
        offsets(&hub.history_page(T0, "r", None, Some(3), false)),
        [6, 7, 8]
    );
}

#[test]
fn recovery_past_trimmed_history_is_incomplete() {
    let (mut hub, epoch) = recovery_fixture();
    for seen in 0..5 {
        let page = hub.history(T0, "r", Some(&pos(&epoch, seen)), None);
        assert!(!page.complete, "offsets {}..=5 are gone", seen + 1);
        assert_eq!(offsets(&page), vec![6, 7, 8, 9, 10]);
    }
}

#[test]
fn recovery_from_another_epoch_or_beyond_top_is_incomplete() {
    let (mut hub, epoch) = recovery_fixture();
    let page = hub.history(T0, "r", Some(&pos("0123456789abcdef", 8)), None);
    assert!(!page.complete);
    assert_eq!(
        offsets(&page),
        vec![6, 7, 8, 9, 10],
        "the oldest kept, for paging"
    );
    let page = hub.history(T0, "r", Some(&pos(&epoch, 11)), Some(2));
    assert!(!page.complete, "a position the channel never reached");
    assert_eq!(offsets(&page), vec![6, 7]);
}

#[test]
fn a_limit_that_cuts_the_list_makes_it_incomplete() {
    let (mut hub, epoch) = recovery_fixture();
    let page = hub.history(T0, "r", Some(&pos(&epoch, 6)), Some(2));
    assert_eq!(offsets(&page), vec![7, 8]);
    assert!(!page.complete);
    let page = hub.history(T0, "r", Some(&pos(&epoch, 6)), Some(4));
    assert_eq!(offsets(&page), vec![7, 8, 9, 10]);
    assert!(page.complete, "a limit that cuts nothing");
    // limit 0: just the position.
    let page = hub.history(T0, "r", None, Some(0));
    assert_eq!(
        (page.epoch, page.top, page.publications.len()),
        (epoch.clone(), 10, 0)
    );
    assert!(
        hub.history(T0, "r", Some(&pos(&epoch, 10)), Some(0))
            .complete,
        "nothing missed"
    );
    assert!(
        !hub.history(T0, "r", Some(&pos(&epoch, 9)), Some(0))
            .complete
    );
}

#[test]
fn history_command_replies_to_the_requester() {
    let (mut hub, epoch) = recovery_fixture();
    let cmd = BackboneCommand::History {
        request: RequestId(9),
        channel: "r".into(),
        since: Some(pos(&epoch, 8)),
        limit: None,
        reverse: false,
    };
    hub.handle_command(T0, N2, cmd);
    let reply = drain(&mut hub)
        .into_iter()
        .find(|(to, _)| *to == N2)
        .expect("a reply to N2");
    let expected = hub.history(T0, "r", Some(&pos(&epoch, 8)), None);
    assert_eq!(
        reply.1,
        BackboneEvent::Reply {
            request: RequestId(9),
            reply: BackboneReply::History(Ok(expected))
        }
    );
}

#[test]
fn a_dropped_channel_comes_back_with_a_new_epoch() {
    let mut hub = Hub::new(5);
    sub(&mut hub, N1, "d");
    let old = hub.publish(T0, "d", data(1), None, policy(10, 10));
    hub.handle_command(
        T0,
        N1,
        BackboneCommand::Unsubscribe {
            channel: "d".into(),
        },
    );
    assert_eq!(hub.channels().len(), 1, "kept history keeps the channel");
    hub.handle_timeout(secs(10));
    assert!(hub.channels().is_empty(), "nothing left: dropped");
    let page = hub.history(secs(10), "d", Some(&old), None);
    assert_eq!(
        (page.epoch.as_str(), page.top, page.complete),
        (NO_EPOCH, 0, false)
    );
    assert!(
        hub.channels().is_empty(),
        "a read does not create a channel"
    );
    sub(&mut hub, N1, "d");
    let new = hub.publish(secs(10), "d", data(2), None, policy(10, 10));
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 1);
    let page = hub.history(secs(10), "d", Some(&old), None);
    assert!(!page.complete, "recovery from the old epoch must fail");
    assert_eq!(offsets(&page), vec![1]);
}

#[test]
fn an_expired_channel_counts_as_dropped_even_before_the_timeout_runs() {
    let mut hub = Hub::new(5);
    let old = hub.publish(T0, "d", data(1), None, policy(10, 10));
    // No handle_timeout: the next use still sees a dropped channel.
    let new = hub.publish(secs(11), "d", data(2), None, policy(10, 10));
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 1);
}

#[test]
fn presence_add_remove_with_join_and_leave() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "p");
    sub(&mut hub, N2, "p");
    let alice = ClientInfo {
        client: "c2".into(),
        user: "alice".into(),
        conn_info: None,
        chan_info: None,
    };
    let bob = ClientInfo {
        client: "c1".into(),
        user: "bob".into(),
        conn_info: None,
        chan_info: None,
    };
    let add = |info: &ClientInfo, announce| BackboneCommand::PresenceAdd {
        channel: "p".into(),
        info: info.clone(),
        announce,
    };
    hub.handle_command(T0, N1, add(&alice, true));
    hub.handle_command(T0, N2, add(&bob, false));
    hub.handle_command(T0, N1, add(&alice, true)); // again: no second join
    let events = drain(&mut hub);
    let join = BackboneEvent::Join {
        channel: "p".into(),
        info: alice.clone(),
    };
    assert_eq!(events, vec![(N1, join.clone()), (N2, join)]);

    assert_eq!(
        hub.presence("p"),
        vec![bob.clone(), alice.clone()],
        "sorted by client id"
    );
    hub.handle_command(
        T0,
        N3,
        BackboneCommand::Presence {
            request: RequestId(4),
            channel: "p".into(),
        },
    );
    assert_eq!(
        drain(&mut hub),
        vec![(
            N3,
            BackboneEvent::Reply {
                request: RequestId(4),
                reply: BackboneReply::Presence(Ok(vec![bob.clone(), alice.clone()]))
            }
        )]
    );

    hub.handle_command(
        T0,
        N1,
        BackboneCommand::PresenceRemove {
            channel: "p".into(),
            info: alice.clone(),
            announce: true,
        },
    );
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::PresenceRemove {
            channel: "p".into(),
            info: bob.clone(),
            announce: false,
        },
    );
    let leave = BackboneEvent::Leave {
        channel: "p".into(),
        info: alice,
    };
    assert_eq!(drain(&mut hub), vec![(N1, leave.clone()), (N2, leave)]);
    assert!(hub.presence("p").is_empty());
    assert!(hub.presence("unknown").is_empty());
}

#[test]
fn remove_node_drops_its_subscriptions_presence_and_queued_events() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "a");
    sub(&mut hub, N2, "a");
    sub(&mut hub, N2, "b");
    let c1 = ClientInfo {
        client: "c1".into(),
        user: "u".into(),
        conn_info: None,
        chan_info: None,
    };
    let c2 = ClientInfo {
        client: "c2".into(),
        user: "u".into(),
        conn_info: None,
        chan_info: None,
    };
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::PresenceAdd {
            channel: "a".into(),
            info: c1.clone(),
            announce: true,
        },
    );
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::PresenceAdd {
            channel: "a".into(),
            info: c2.clone(),
            announce: false,
        },
    );
    hub.publish(T0, "a", data(1), None, policy(0, 10));
    drain(&mut hub);
    hub.publish(T0, "a", data(2), None, policy(0, 10)); // queued for N1 and N2
    hub.remove_node(T0, N2);
    let events = drain(&mut hub);
    assert_eq!(
        events,
        vec![
            (
                N1,
                BackboneEvent::Publication {
                    channel: "a".into(),
                    epoch: epoch_of(&hub, "a").unwrap(),
                    publication: Publication {
                        offset: 2,
                        data: data(2),
                        info: None,
                    }
                }
            ),
            (
                N1,
                BackboneEvent::Leave {
                    channel: "a".into(),
                    info: c1
                }
            ),
        ],
        "N2's queued events are gone; only the announced client's leave is announced"
    );
    assert!(hub.presence("a").is_empty());
    let stats = hub.channels();
    assert_eq!(stats.len(), 1, "b had nothing else and is dropped");
    assert_eq!(
        (stats[0].name.as_str(), stats[0].nodes.as_slice()),
        ("a", &[N1][..])
    );
    hub.remove_node(T0, N1);
    assert!(hub.channels().is_empty());
    assert!(drain(&mut hub).is_empty());
}

/// One scripted run; returns everything observable.
/// A client with a `conn_info` (from its connection token) and, if
/// given, a `chan_info` (from its subscription token).
fn with_infos(client: &str, conn: &str, chan: Option<&str>) -> ClientInfo {
    ClientInfo {
        client: client.into(),
        user: format!("user of {client}"),
        conn_info: Some(Payload::from_json(conn.as_bytes()).expect("valid JSON")),
        chan_info: chan.map(|c| Payload::from_json(c.as_bytes()).expect("valid JSON")),
    }
}

#[test]
fn presence_join_and_leave_carry_conn_info_and_chan_info() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "p");
    let ann = with_infos("c1", r#"{"name":"Ann"}"#, Some(r#"{"role":"mod"}"#));
    let bob = with_infos("c2", r#"{"name":"Bob"}"#, None);
    let add = |info: &ClientInfo| BackboneCommand::PresenceAdd {
        channel: "p".into(),
        info: info.clone(),
        announce: true,
    };
    hub.handle_command(T0, N2, add(&ann));
    hub.handle_command(T0, N2, add(&bob));
    let join = |info: &ClientInfo| {
        (
            N1,
            BackboneEvent::Join {
                channel: "p".into(),
                info: info.clone(),
            },
        )
    };
    assert_eq!(drain(&mut hub), vec![join(&ann), join(&bob)]);
    assert_eq!(hub.presence("p"), vec![ann.clone(), bob.clone()]);
    hub.handle_command(
        T0,
        N1,
        BackboneCommand::Presence {
            request: RequestId(1),
            channel: "p".into(),
        },
    );
    assert_eq!(
        drain(&mut hub),
        vec![(
            N1,
            BackboneEvent::Reply {
                request: RequestId(1),
                reply: BackboneReply::Presence(Ok(vec![ann.clone(), bob.clone()])),
            }
        )]
    );

    // Added again with another info (a refreshed subscription token): no
    // second join, and presence shows the latest.
    let ann2 = with_infos("c1", r#"{"name":"Ann"}"#, Some(r#"{"role":"owner"}"#));
    hub.handle_command(T0, N2, add(&ann2));
    assert!(drain(&mut hub).is_empty());
    assert_eq!(hub.presence("p"), vec![ann2.clone(), bob.clone()]);

    // The leave shows the client as it was present, even when the remove
    // names it by its client id alone.
    hub.handle_command(
        T0,
        N2,
        BackboneCommand::PresenceRemove {
            channel: "p".into(),
            info: ClientInfo {
                client: "c1".into(),
                user: String::new(),
                conn_info: None,
                chan_info: None,
            },
            announce: true,
        },
    );
    assert_eq!(
        drain(&mut hub),
        vec![(
            N1,
            BackboneEvent::Leave {
                channel: "p".into(),
                info: ann2,
            }
        )]
    );
    // A node that goes away: its clients' leaves carry their infos too.
    hub.remove_node(T0, N2);
    assert_eq!(
        drain(&mut hub),
        vec![(
            N1,
            BackboneEvent::Leave {
                channel: "p".into(),
                info: bob,
            }
        )]
    );
    assert!(hub.presence("p").is_empty());
}

#[test]
fn a_publications_sender_is_delivered_and_kept_with_its_infos() {
    let mut hub = Hub::new(1);
    sub(&mut hub, N1, "h");
    let ann = with_infos("c1", r#"{"name":"Ann"}"#, Some("[1,2]"));
    let sent = hub.publish(T0, "h", data(1), Some(Box::new(ann.clone())), keep_all());
    let publication = Publication {
        offset: 1,
        data: data(1),
        info: Some(Box::new(ann)),
    };
    assert_eq!(
        drain(&mut hub),
        vec![(
            N1,
            BackboneEvent::Publication {
                channel: "h".into(),
                epoch: sent.epoch.clone(),
                publication: publication.clone(),
            }
        )]
    );
    let page = hub.history(T0, "h", Some(&pos(&sent.epoch, 0)), None);
    assert!(page.complete);
    assert_eq!(page.publications, vec![publication]);
}

/// What a publication of `data` by `info` counts against the byte budget.
fn cost_with(data: &Payload, info: &ClientInfo) -> usize {
    let json = |j: &Option<Payload>| j.as_ref().map_or(0, |j| j.len() + INFO_JSON_OVERHEAD);
    data.len()
        + ENTRY_OVERHEAD
        + info.client.len()
        + info.user.len()
        + json(&info.conn_info)
        + json(&info.chan_info)
        + INFO_OVERHEAD
}

#[test]
fn the_history_budget_counts_the_senders_infos() {
    // The overhead covers the sender's box.
    assert!(std::mem::size_of::<ClientInfo>() < INFO_OVERHEAD);
    let big_info = format!("\"{}\"", "i".repeat(10_000));
    let ann = with_infos("c1", &big_info, Some(r#"{"role":"mod"}"#));
    let small = data(1);
    let one = cost_with(&small, &ann);
    assert!(one > 10_000 + small.len() + ENTRY_OVERHEAD);

    // Exactly what is kept is counted.
    let mut hub = Hub::new(3);
    hub.publish(
        T0,
        "a",
        small.clone(),
        Some(Box::new(ann.clone())),
        keep_all(),
    );
    assert_eq!(hub.history_bytes(), one);
    hub.publish(T0, "a", small.clone(), None, keep_all());
    assert_eq!(hub.history_bytes(), one + cost(small.len()));
    let plain = ClientInfo {
        conn_info: None,
        chan_info: None,
        ..ann.clone()
    };
    hub.publish(
        T0,
        "a",
        small.clone(),
        Some(Box::new(plain.clone())),
        keep_all(),
    );
    assert_eq!(
        hub.history_bytes(),
        one + cost(small.len()) + cost_with(&small, &plain)
    );

    // A budget of three tiny publications holds two of them with a big
    // info: the info does not slip past it.
    let budget = HistoryBudget {
        max_channels: 10,
        max_bytes: 2 * one + one / 2,
    };
    let mut hub = Hub::with_budget(3, budget);
    for i in 1..=5 {
        hub.publish(T0, "a", data(i), Some(Box::new(ann.clone())), keep_all());
        assert!(hub.history_bytes() <= budget.max_bytes, "after {i}");
    }
    assert_eq!(offsets(&hub.history(T0, "a", None, None)), vec![4, 5]);
    assert_eq!(hub.history_bytes(), 2 * one);

    // An info larger than the whole budget: delivered, not kept.
    let mut hub = Hub::with_budget(
        3,
        HistoryBudget {
            max_channels: 10,
            max_bytes: 8_000,
        },
    );
    sub(&mut hub, N1, "a");
    hub.publish(
        T0,
        "a",
        small.clone(),
        Some(Box::new(ann.clone())),
        keep_all(),
    );
    assert_eq!(hub.history_bytes(), 0);
    assert_eq!(offsets_to(&drain(&mut hub), N1, "a"), vec![1]);
    assert!(hub.history(T0, "a", None, None).publications.is_empty());
}

fn scripted_run(seed: u64) -> (Vec<(NodeId, BackboneEvent)>, Vec<HistoryPage>) {
    let mut hub = Hub::new(seed);
    let mut pages = Vec::new();
    for i in 0..40u64 {
        let now = secs(i);
        let channel = format!("c{}", i % 3);
        let node = NodeId(u32::try_from(i % 4).unwrap());
        match i % 5 {
            0 => hub.handle_command(now, node, BackboneCommand::Subscribe { channel }),
            1 | 2 => hub.handle_command(
                now,
                node,
                BackboneCommand::Publish {
                    request: RequestId(i),
                    channel,
                    data: data(i),
                    history: policy(4, 7),
                    info: None,
                },
            ),
            3 => pages.push(hub.history(now, &channel, None, None)),
            _ => {
                hub.handle_timeout(now);
                if i % 10 == 4 {
                    hub.remove_node(now, node);
                }
            }
        }
    }
    (drain(&mut hub), pages)
}

#[test]
fn same_seed_same_inputs_same_events() {
    let a = scripted_run(42);
    assert!(!a.0.is_empty() && !a.1.is_empty());
    assert_eq!(a, scripted_run(42));
    let other = scripted_run(43);
    assert_ne!(a.1[0].epoch, other.1[0].epoch, "epochs depend on the seed");
}

#[test]
fn epochs_never_repeat_within_a_hub() {
    let mut hub = Hub::new(0);
    let mut seen = BTreeSet::new();
    for _ in 0..1000 {
        // Size 0 and nobody subscribed: each publication drops the channel.
        let p = hub.publish(T0, "x", data(0), None, policy(0, 1));
        assert_eq!(p.offset, 1);
        assert!(!p.epoch.is_empty() && p.epoch != NO_EPOCH);
        assert!(seen.insert(p.epoch), "epoch repeated");
    }
}

// ---------------------------------------------------------------------------
// Model-based: random operations against an obviously-correct reference.

const CHANNELS: [&str; 2] = ["a", "b"];
const TTL_SECS: u64 = 10;

#[derive(Debug, Clone)]
enum Since {
    None,
    /// Current epoch, offset `k % (top + 3)` (so sometimes beyond top).
    Current(u64),
    /// An earlier epoch of the channel (if any), offset k.
    Old(usize, u64),
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(u32, usize),
    Unsubscribe(u32, usize),
    /// Client k of a node joins a channel (announced).
    Join(u32, usize, u8),
    /// Client k leaves a channel (announced).
    Leave(u32, usize, u8),
    Publish {
        node: Option<u32>,
        channel: usize,
        size: usize,
    },
    History {
        channel: usize,
        since: Since,
        limit: Option<usize>,
    },
    Advance(u64),
    Timeout,
    RemoveNode(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0u32..3;
    let channel = 0..CHANNELS.len();
    let since = prop_oneof![
        Just(Since::None),
        any::<u64>().prop_map(Since::Current),
        (0usize..4, 0u64..8).prop_map(|(i, k)| Since::Old(i, k)),
    ];
    prop_oneof![
        2 => (node.clone(), channel.clone()).prop_map(|(n, c)| Op::Subscribe(n, c)),
        1 => (node.clone(), channel.clone()).prop_map(|(n, c)| Op::Unsubscribe(n, c)),
        5 => (proptest::option::of(node.clone()), channel.clone(), prop_oneof![Just(0usize), 1usize..6, Just(100)])
            .prop_map(|(node, channel, size)| Op::Publish { node, channel, size }),
        3 => (channel.clone(), since, proptest::option::of(0usize..6)).prop_map(|(channel, since, limit)| Op::History { channel, since, limit }),
        2 => (0u64..6).prop_map(Op::Advance),
        1 => Just(Op::Timeout),
        1 => node.clone().prop_map(Op::RemoveNode),
        1 => (node.clone(), channel.clone(), 0u8..3).prop_map(|(n, c, k)| Op::Join(n, c, k)),
        1 => (node, channel, 0u8..3).prop_map(|(n, c, k)| Op::Leave(n, c, k)),
    ]
}

/// The reference: every publication of the current epoch, and the offset
/// below which history is gone.
#[derive(Debug, Default)]
struct ModelChannel {
    epoch: String,
    /// (data, published at), offset = index + 1.
    pubs: Vec<(Payload, Timestamp)>,
    kept_from: u64,
    subs: BTreeSet<u32>,
    /// Present clients and their node.
    presence: BTreeMap<u8, u32>,
}

impl ModelChannel {
    fn top(&self) -> u64 {
        self.pubs.len() as u64
    }
    fn expire(&mut self, now: Timestamp) {
        let ttl = Duration::from_secs(TTL_SECS);
        while self.kept_from <= self.top()
            && self.pubs[(self.kept_from - 1) as usize].1 + ttl <= now
        {
            self.kept_from += 1;
        }
    }
    fn kept(&self) -> Vec<Publication> {
        (self.kept_from..=self.top())
            .map(|o| Publication {
                offset: o,
                data: self.pubs[(o - 1) as usize].0.clone(),
                info: None,
            })
            .collect()
    }
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.presence.is_empty() && self.kept_from > self.top()
    }
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    channels: BTreeMap<usize, ModelChannel>,
    /// Every epoch each channel has had, oldest first.
    epochs: BTreeMap<usize, Vec<String>>,
    all_epochs: BTreeSet<String>,
    counter: u64,
}

impl Model {
    /// Drops what is empty at the current time (the hub's rule).
    fn settle(&mut self) {
        let now = secs(self.now);
        for ch in self.channels.values_mut() {
            ch.expire(now);
        }
        self.channels.retain(|_, ch| !ch.is_empty());
    }

    /// The channel, created if need be; `true` when created (its epoch is
    /// then learned from the hub).
    fn ensure(&mut self, c: usize) -> bool {
        let created = !self.channels.contains_key(&c);
        self.channels.entry(c).or_insert_with(|| ModelChannel {
            kept_from: 1,
            ..ModelChannel::default()
        });
        created
    }

    fn learn_epoch(&mut self, c: usize, epoch: String) -> Result<(), TestCaseError> {
        prop_assert!(
            self.all_epochs.insert(epoch.clone()),
            "a new channel reused epoch {}",
            epoch
        );
        self.epochs.entry(c).or_default().push(epoch.clone());
        if let Some(ch) = self.channels.get_mut(&c) {
            ch.epoch = epoch;
        }
        Ok(())
    }
}

/// Checks a history page against the reference: exactly the kept
/// publications after the position, and `complete` iff they are exactly
/// all publications after it up to top.
fn check_page(
    model: Option<&ModelChannel>,
    page: &HistoryPage,
    since: Option<&StreamPosition>,
    limit: Option<usize>,
) -> Result<(), TestCaseError> {
    let Some(ch) = model else {
        prop_assert_eq!(&page.epoch, NO_EPOCH);
        prop_assert_eq!(page.top, 0);
        prop_assert!(page.publications.is_empty());
        // Only the position "nothing seen, no epoch" continues it.
        let nothing = since.is_none_or(|p| p.epoch == NO_EPOCH && p.offset == 0);
        prop_assert_eq!(page.complete, nothing);
        return Ok(());
    };
    prop_assert_eq!(&page.epoch, &ch.epoch);
    prop_assert_eq!(page.top, ch.top());
    let kept = ch.kept();
    let (after, same_stream) = match since {
        None => (0, true),
        Some(p) if p.epoch == ch.epoch && p.offset <= ch.top() => (p.offset, true),
        Some(_) => (0, false),
    };
    let mut want: Vec<Publication> = kept.into_iter().filter(|p| p.offset > after).collect();
    let all_after = want.len();
    want.truncate(limit.unwrap_or(usize::MAX));
    // Complete iff the answer is exactly offsets after+1..=top.
    let exact = same_stream
        && want.len() == all_after
        && want.iter().map(|p| p.offset).eq(after + 1..=ch.top());
    prop_assert_eq!(&page.publications, &want);
    prop_assert_eq!(
        page.complete,
        exact,
        "completeness of {:?} limit {:?}",
        since,
        limit
    );
    Ok(())
}

fn client(k: u8) -> ClientInfo {
    ClientInfo {
        client: format!("c{k}"),
        user: format!("u{k}"),
        conn_info: None,
        chan_info: None,
    }
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut hub = Hub::new(99);
    let mut model = Model::default();
    for op in ops {
        let now = secs(model.now);
        match op {
            Op::Subscribe(n, c) => {
                model.settle();
                let created = model.ensure(c);
                hub.handle_command(
                    now,
                    NodeId(n),
                    BackboneCommand::Subscribe {
                        channel: CHANNELS[c].into(),
                    },
                );
                model.channels.get_mut(&c).unwrap().subs.insert(n);
                if created {
                    model
                        .learn_epoch(c, epoch_of(&hub, CHANNELS[c]).expect("subscribe creates"))?;
                }
                prop_assert!(drain(&mut hub).is_empty());
            }
            Op::Unsubscribe(n, c) => {
                hub.handle_command(
                    now,
                    NodeId(n),
                    BackboneCommand::Unsubscribe {
                        channel: CHANNELS[c].into(),
                    },
                );
                if let Some(ch) = model.channels.get_mut(&c) {
                    ch.subs.remove(&n);
                }
                model.settle();
                prop_assert!(drain(&mut hub).is_empty());
            }
            Op::Publish {
                node,
                channel: c,
                size,
            } => {
                model.settle();
                let created = model.ensure(c);
                model.counter += 1;
                let payload = data(model.counter);
                let history = HistoryPolicy {
                    size,
                    ttl: Duration::from_secs(TTL_SECS),
                };
                let (position, delivered) = match node {
                    None => {
                        let p = hub.publish(now, CHANNELS[c], payload.clone(), None, history);
                        (p, drain(&mut hub))
                    }
                    Some(n) => {
                        let request = RequestId(model.counter);
                        let cmd = BackboneCommand::Publish {
                            request,
                            channel: CHANNELS[c].into(),
                            data: payload.clone(),
                            history,
                            info: None,
                        };
                        hub.handle_command(now, NodeId(n), cmd);
                        // The reply is the publisher's last event.
                        let mut events = drain(&mut hub);
                        let Some((
                            to,
                            BackboneEvent::Reply {
                                request: r,
                                reply: BackboneReply::Published(Ok(p)),
                            },
                        )) = events.pop()
                        else {
                            return Err(TestCaseError::fail(format!("no reply last: {events:?}")));
                        };
                        prop_assert_eq!((to, r), (NodeId(n), request));
                        (p, events)
                    }
                };
                if created {
                    model.learn_epoch(c, position.epoch.clone())?;
                }
                let ch = model.channels.get_mut(&c).unwrap();
                ch.pubs.push((payload.clone(), now));
                let top = ch.top();
                ch.kept_from = ch
                    .kept_from
                    .max(top + 1 - size.min(top as usize) as u64)
                    .max(1);
                prop_assert_eq!(
                    &position,
                    &pos(&ch.epoch, top),
                    "offset = top + 1 in the current epoch"
                );
                let expected: Vec<(NodeId, BackboneEvent)> = ch
                    .subs
                    .iter()
                    .map(|&n| {
                        let publication = Publication {
                            offset: top,
                            data: payload.clone(),
                            info: None,
                        };
                        (
                            NodeId(n),
                            BackboneEvent::Publication {
                                channel: CHANNELS[c].into(),
                                epoch: ch.epoch.clone(),
                                publication,
                            },
                        )
                    })
                    .collect();
                prop_assert_eq!(
                    delivered,
                    expected,
                    "one copy to each subscribed node, in node order"
                );
                model.settle();
            }
            Op::History {
                channel: c,
                since,
                limit,
            } => {
                model.settle();
                let since_pos = match (&since, model.channels.get(&c)) {
                    (Since::None, _) => None,
                    (Since::Current(k), Some(ch)) => Some(pos(&ch.epoch, k % (ch.top() + 3))),
                    (Since::Current(k), None) => Some(pos("feedfacefeedface", k % 3)),
                    (Since::Old(i, k), _) => {
                        let olds = model.epochs.get(&c).cloned().unwrap_or_default();
                        Some(pos(
                            olds.get(*i).map_or("0000000000000000", String::as_str),
                            *k,
                        ))
                    }
                };
                let page = hub.history(now, CHANNELS[c], since_pos.as_ref(), limit);
                check_page(model.channels.get(&c), &page, since_pos.as_ref(), limit)?;
            }
            Op::Advance(s) => model.now += s,
            Op::Timeout => {
                hub.handle_timeout(now);
                model.settle();
                // After a timeout, memory matches the reference exactly.
                let stats = hub.channels();
                let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
                let want: Vec<&str> = model.channels.keys().map(|&c| CHANNELS[c]).collect();
                prop_assert_eq!(names, want);
                for s in &stats {
                    let c = CHANNELS.iter().position(|n| *n == s.name).unwrap();
                    let ch = &model.channels[&c];
                    prop_assert_eq!(s.kept as u64, ch.top() + 1 - ch.kept_from);
                    prop_assert_eq!(
                        s.nodes.iter().map(|n| n.0).collect::<BTreeSet<_>>(),
                        ch.subs.clone()
                    );
                }
                if let Some(next) = hub.poll_timeout() {
                    prop_assert!(next > now, "handle_timeout leaves nothing due");
                }
            }
            Op::RemoveNode(n) => {
                hub.remove_node(now, NodeId(n));
                let mut expected = Vec::new();
                for (&c, ch) in model.channels.iter_mut() {
                    ch.subs.remove(&n);
                    let gone: Vec<u8> = ch
                        .presence
                        .iter()
                        .filter(|(_, m)| **m == n)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in gone {
                        ch.presence.remove(&k);
                        for &s in &ch.subs {
                            expected.push((
                                NodeId(s),
                                BackboneEvent::Leave {
                                    channel: CHANNELS[c].into(),
                                    info: client(k),
                                },
                            ));
                        }
                    }
                }
                model.settle();
                prop_assert_eq!(
                    drain(&mut hub),
                    expected,
                    "leaves of the node's clients to the others"
                );
            }
            Op::Join(n, c, k) => {
                model.settle();
                let created = model.ensure(c);
                let cmd = BackboneCommand::PresenceAdd {
                    channel: CHANNELS[c].into(),
                    info: client(k),
                    announce: true,
                };
                hub.handle_command(now, NodeId(n), cmd);
                if created {
                    model.learn_epoch(c, epoch_of(&hub, CHANNELS[c]).expect("presence creates"))?;
                }
                let ch = model.channels.get_mut(&c).unwrap();
                let mut expected = Vec::new();
                if !ch.presence.contains_key(&k) {
                    for &s in &ch.subs {
                        expected.push((
                            NodeId(s),
                            BackboneEvent::Join {
                                channel: CHANNELS[c].into(),
                                info: client(k),
                            },
                        ));
                    }
                }
                // The same client id from another node replaces the entry.
                ch.presence.insert(k, n);
                prop_assert_eq!(drain(&mut hub), expected);
            }
            Op::Leave(n, c, k) => {
                let cmd = BackboneCommand::PresenceRemove {
                    channel: CHANNELS[c].into(),
                    info: client(k),
                    announce: true,
                };
                hub.handle_command(now, NodeId(n), cmd);
                let mut expected = Vec::new();
                if let Some(ch) = model.channels.get_mut(&c) {
                    if ch.presence.remove(&k).is_some() {
                        for &s in &ch.subs {
                            expected.push((
                                NodeId(s),
                                BackboneEvent::Leave {
                                    channel: CHANNELS[c].into(),
                                    info: client(k),
                                },
                            ));
                        }
                    }
                }
                model.settle();
                prop_assert_eq!(drain(&mut hub), expected);
            }
        }
        // Always: known channels agree on epoch, top and presence, and the
        // next timeout is never later than the first expiry.
        let ttl = Duration::from_secs(TTL_SECS);
        let first_expiry = model
            .channels
            .values()
            .filter(|ch| ch.kept_from <= ch.top())
            .map(|ch| ch.pubs[(ch.kept_from - 1) as usize].1 + ttl)
            .min();
        if let Some(first) = first_expiry {
            prop_assert!(
                hub.poll_timeout().is_some_and(|t| t <= first),
                "timeout {:?} later than {:?}",
                hub.poll_timeout(),
                first
            );
        }
        for (c, name) in CHANNELS.iter().enumerate() {
            let want: Vec<ClientInfo> = model
                .channels
                .get(&c)
                .map(|ch| ch.presence.keys().map(|&k| client(k)).collect())
                .unwrap_or_default();
            prop_assert_eq!(hub.presence(name), want);
        }
        let stats = hub.channels();
        for (c, ch) in &model.channels {
            let s = stats.iter().find(|s| s.name == CHANNELS[*c]);
            prop_assert!(s.is_some(), "channel {} missing", CHANNELS[*c]);
            let s = s.unwrap();
            prop_assert_eq!((&s.epoch, s.top), (&ch.epoch, ch.top()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn hub_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(ops)?;
    }
}

// ---------------------------------------------------------------------------
// The memory budget of history (HistoryBudget).

fn big(i: u64, len: usize) -> Payload {
    // A JSON string of `len` bytes in all, quotes included.
    let body = format!("{i:0>width$}", width = len - 2);
    Payload::from_json(format!("\"{body}\"").as_bytes()).expect("valid JSON")
}

fn cost(len: usize) -> usize {
    len + ENTRY_OVERHEAD
}

#[test]
fn a_flood_of_large_publications_to_fresh_channels_stays_within_the_budget() {
    let budget = HistoryBudget {
        max_channels: 100,
        max_bytes: 2 << 20,
    };
    let mut hub = Hub::with_budget(5, budget);
    let default_policy = policy(100, 300);
    let mut positions = Vec::new();
    for i in 0..1200u64 {
        let p = hub.publish(
            T0,
            &format!("flood{i}"),
            big(i, 60_000),
            None,
            default_policy,
        );
        assert!(hub.history_bytes() <= budget.max_bytes, "after {i}");
        assert!(
            hub.channels_with_history() <= budget.max_channels,
            "after {i}"
        );
        assert!(
            hub.channels().len() <= budget.max_channels,
            "nothing else holds them"
        );
        positions.push(p);
    }
    // 2 MiB holds 34 such publications: the budget is full, not empty.
    let fit = budget.max_bytes / cost(60_000);
    assert_eq!(hub.channels_with_history(), fit);
    assert_eq!(hub.history_bytes(), fit * cost(60_000));
    // The newest are kept and recover exactly.
    let last = positions.len() - 1;
    let page = hub.history(T0, "flood1199", Some(&pos(&positions[last].epoch, 0)), None);
    assert!(page.complete);
    assert_eq!(page.publications[0].data, big(1199, 60_000));
    // An evicted one is gone: recovery from it is incomplete, and its next
    // use starts a new epoch.
    let page = hub.history(T0, "flood0", Some(&pos(&positions[0].epoch, 0)), None);
    assert!(!page.complete);
    assert!(page.publications.is_empty());
    let again = hub.publish(T0, "flood0", data(1), None, default_policy);
    assert_ne!(again.epoch, positions[0].epoch);
    assert_eq!(again.offset, 1);
}

#[test]
fn eviction_takes_the_hubs_oldest_publication_first() {
    let mut hub = Hub::with_budget(
        2,
        HistoryBudget {
            max_channels: 10,
            max_bytes: 3 * cost(100),
        },
    );
    sub(&mut hub, N1, "a");
    sub(&mut hub, N1, "b");
    hub.publish(T0, "a", big(1, 100), None, keep_all()); // a:1
    hub.publish(T0, "b", big(2, 100), None, keep_all()); // b:1
    hub.publish(T0, "a", big(3, 100), None, keep_all()); // a:2
    assert_eq!(hub.history_bytes(), 3 * cost(100));
    hub.publish(T0, "b", big(4, 100), None, keep_all()); // b:2 evicts a:1
    assert_eq!(offsets(&hub.history(T0, "a", None, None)), vec![2]);
    assert_eq!(offsets(&hub.history(T0, "b", None, None)), vec![1, 2]);
    hub.publish(T0, "a", big(5, 100), None, keep_all()); // a:3 evicts b:1
    assert_eq!(offsets(&hub.history(T0, "a", None, None)), vec![2, 3]);
    assert_eq!(offsets(&hub.history(T0, "b", None, None)), vec![2]);
    // A bigger one evicts as many as it needs, oldest first.
    hub.publish(T0, "b", big(6, 200), None, keep_all()); // b:3 evicts a:2, b:2
    assert_eq!(offsets(&hub.history(T0, "a", None, None)), vec![3]);
    assert_eq!(offsets(&hub.history(T0, "b", None, None)), vec![3]);
    assert_eq!(hub.history_bytes(), cost(100) + cost(200));
}

#[test]
fn over_the_channel_budget_the_channel_with_the_oldest_history_goes() {
    let mut hub = Hub::with_budget(
        2,
        HistoryBudget {
            max_channels: 2,
            max_bytes: usize::MAX,
        },
    );
    let a = hub.publish(T0, "a", data(1), None, keep_all());
    hub.publish(T0, "b", data(2), None, keep_all());
    hub.publish(T0, "a", data(3), None, keep_all());
    hub.publish(T0, "c", data(4), None, keep_all()); // a holds the oldest: all of a goes
    assert_eq!(hub.channels_with_history(), 2);
    let names: Vec<String> = hub.channels().into_iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["b", "c"], "a had nothing else: dropped");
    let page = hub.history(T0, "a", Some(&a), None);
    assert!(!page.complete, "a's offset 2 is gone");
    // A channel with subscribers and no history does not count.
    for i in 0..10 {
        sub(&mut hub, N2, &format!("live{i}"));
        hub.publish(T0, &format!("live{i}"), data(i), None, policy(0, 60));
    }
    assert_eq!(hub.channels_with_history(), 2);
    assert_eq!(hub.channels().len(), 12);
    let names: Vec<String> = hub.channels().into_iter().map(|c| c.name).collect();
    assert!(names.contains(&"b".to_owned()) && names.contains(&"c".to_owned()));
}

/// Eviction only trims a channel's history from the front, so a recovery
/// from any position before the first kept offset is incomplete, and one
/// from after it is exact: no epoch change is needed for that. A channel
/// kept alive by a subscriber keeps its epoch even when eviction empties
/// its history.
#[test]
fn recovery_from_an_evicted_position_is_incomplete_and_from_a_kept_one_exact() {
    let mut hub = Hub::with_budget(
        4,
        HistoryBudget {
            max_channels: 10,
            max_bytes: 10 * cost(100),
        },
    );
    sub(&mut hub, N1, "r");
    for i in 1..=10 {
        hub.publish(T0, "r", big(i, 100), None, keep_all());
    }
    let epoch = epoch_of(&hub, "r").unwrap();
    // Four publications elsewhere evict r:1..=4.
    for i in 0..4 {
        hub.publish(T0, "other", big(i, 100), None, keep_all());
    }
    assert_eq!(
        offsets(&hub.history(T0, "r", None, None)),
        vec![5, 6, 7, 8, 9, 10]
    );
    for seen in 0..=10 {
        let page = hub.history(T0, "r", Some(&pos(&epoch, seen)), None);
        assert_eq!(page.epoch, epoch);
        if seen < 4 {
            assert!(!page.complete, "offsets {}..=4 were evicted", seen + 1);
        } else {
            assert!(page.complete, "nothing after {seen} was evicted");
            assert_eq!(offsets(&page), (seen + 1..=10).collect::<Vec<_>>());
        }
    }
    // Ten more elsewhere evict the rest of r; its subscriber keeps it.
    for i in 4..14 {
        hub.publish(T0, "other", big(i, 100), None, keep_all());
    }
    let page = hub.history(T0, "r", Some(&pos(&epoch, 9)), None);
    assert_eq!((page.epoch.as_str(), page.top), (epoch.as_str(), 10));
    assert!(!page.complete && page.publications.is_empty());
    let page = hub.history(T0, "r", Some(&pos(&epoch, 10)), None);
    assert!(page.complete, "a client at top lost nothing");
}

#[test]
fn a_publication_larger_than_the_byte_budget_is_delivered_but_not_kept() {
    let mut hub = Hub::with_budget(
        6,
        HistoryBudget {
            max_channels: 10,
            max_bytes: 1000,
        },
    );
    sub(&mut hub, N1, "c");
    hub.publish(T0, "c", big(1, 100), None, keep_all());
    let p = hub.publish(T0, "c", big(2, 2000), None, keep_all());
    assert_eq!(p.offset, 2);
    let events = drain(&mut hub);
    assert_eq!(offsets_to(&events, N1, "c"), vec![1, 2]);
    assert_eq!(hub.history_bytes(), 0);
    let page = hub.history(T0, "c", Some(&pos(&p.epoch, 0)), None);
    assert!(!page.complete && page.publications.is_empty());
    assert_eq!(page.top, 2);
    // Without a subscriber the channel is dropped at once.
    let q = hub.publish(T0, "lonely", big(3, 2000), None, keep_all());
    assert!(hub.channels().iter().all(|c| c.name != "lonely"));
    assert_ne!(
        hub.publish(T0, "lonely", data(1), None, keep_all()).epoch,
        q.epoch
    );
}

// Random operations under a small budget: after every one, the kept bytes
// and channels are within it and match what a full read returns; every page
// is contiguous, holds what was published at those offsets, and is never
// `complete` unless it holds every publication after the position.

const BUDGET_CHANNELS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum BudgetOp {
    Publish {
        channel: usize,
        len: usize,
        size: usize,
    },
    Subscribe(usize),
    Unsubscribe(usize),
    /// From the `k`th position handed out for the channel (or none).
    History {
        channel: usize,
        k: usize,
        limit: Option<usize>,
    },
    Advance(u64),
    Timeout,
}

fn budget_op() -> impl Strategy<Value = BudgetOp> {
    let channel = 0..BUDGET_CHANNELS.len();
    prop_oneof![
        6 => (channel.clone(), prop_oneof![2usize..40, 100usize..400, Just(2000usize)], prop_oneof![Just(0usize), 1usize..8, Just(100)])
            .prop_map(|(channel, len, size)| BudgetOp::Publish { channel, len, size }),
        1 => channel.clone().prop_map(BudgetOp::Subscribe),
        1 => channel.clone().prop_map(BudgetOp::Unsubscribe),
        3 => (channel, any::<usize>(), proptest::option::of(0usize..6))
            .prop_map(|(channel, k, limit)| BudgetOp::History { channel, k, limit }),
        1 => (0u64..6).prop_map(BudgetOp::Advance),
        1 => Just(BudgetOp::Timeout),
    ]
}

fn run_budget_ops(
    max_channels: usize,
    max_bytes: usize,
    ops: Vec<BudgetOp>,
) -> Result<(), TestCaseError> {
    let budget = HistoryBudget {
        max_channels,
        max_bytes,
    };
    let mut hub = Hub::with_budget(11, budget);
    // Every publication ever made, by (epoch, offset); and each channel's
    // positions handed out, to recover from.
    let mut log: BTreeMap<(String, u64), Payload> = BTreeMap::new();
    let mut handed: BTreeMap<usize, Vec<StreamPosition>> = BTreeMap::new();
    let mut now = 0u64;
    let mut n = 0u64;
    for op in ops {
        let t = secs(now);
        match op {
            BudgetOp::Publish { channel, len, size } => {
                n += 1;
                let payload = big(n, len.max(3));
                let p = hub.publish(
                    t,
                    BUDGET_CHANNELS[channel],
                    payload.clone(),
                    None,
                    policy(size, 10),
                );
                prop_assert!(log.insert((p.epoch.clone(), p.offset), payload).is_none());
                handed.entry(channel).or_default().push(p);
            }
            BudgetOp::Subscribe(c) => sub(&mut hub, N1, BUDGET_CHANNELS[c]),
            BudgetOp::Unsubscribe(c) => hub.handle_command(
                t,
                N1,
                BackboneCommand::Unsubscribe {
                    channel: BUDGET_CHANNELS[c].into(),
                },
            ),
            BudgetOp::History { channel, k, limit } => {
                let list = handed.get(&channel).cloned().unwrap_or_default();
                let since = (!list.is_empty()).then(|| list[k % list.len()].clone());
                let page = hub.history(t, BUDGET_CHANNELS[channel], since.as_ref(), limit);
                let offs = offsets(&page);
                prop_assert!(
                    offs.windows(2).all(|w| w[1] == w[0] + 1),
                    "contiguous: {:?}",
                    offs
                );
                prop_assert!(offs.last().is_none_or(|&o| o <= page.top));
                for p in &page.publications {
                    prop_assert_eq!(log.get(&(page.epoch.clone(), p.offset)), Some(&p.data));
                }
                if page.complete {
                    let after = match &since {
                        None => 0,
                        Some(s) => {
                            prop_assert_eq!(&s.epoch, &page.epoch, "complete across epochs");
                            s.offset
                        }
                    };
                    prop_assert!(
                        offs.iter().copied().eq(after + 1..=page.top),
                        "complete but {:?} is not all of {}..={}",
                        offs,
                        after + 1,
                        page.top
                    );
                }
            }
            BudgetOp::Advance(s) => now += s,
            BudgetOp::Timeout => hub.handle_timeout(t),
        }
        drain(&mut hub);
        prop_assert!(hub.history_bytes() <= budget.max_bytes);
        prop_assert!(hub.channels_with_history() <= budget.max_channels);
        let stats = hub.channels();
        prop_assert!(stats.iter().all(|s| s.kept as u64 <= s.top));
        let counted = stats.iter().filter(|s| s.kept > 0).count();
        prop_assert_eq!(counted, hub.channels_with_history());
    }
    // The accounting matches what is kept: read everything (which also
    // drops what expired).
    let t = secs(now);
    let mut bytes = 0;
    let mut channels = 0;
    for name in BUDGET_CHANNELS {
        let page = hub.history(t, name, None, None);
        bytes += page
            .publications
            .iter()
            .map(|p| cost(p.data.len()))
            .sum::<usize>();
        channels += usize::from(!page.publications.is_empty());
    }
    prop_assert_eq!(hub.history_bytes(), bytes);
    prop_assert_eq!(hub.channels_with_history(), channels);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn history_stays_within_the_budget_and_never_claims_complete_over_an_eviction(
        max_channels in 0usize..4,
        max_bytes in prop_oneof![Just(0usize), 100usize..3000],
        ops in proptest::collection::vec(budget_op(), 1..80),
    ) {
        run_budget_ops(max_channels, max_bytes, ops)?;
    }
}
