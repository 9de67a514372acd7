//! The client state machine against scripted server messages, encoded by
//! the server's own encoders.

use super::*;
use crate::protocol::{close, decode_request, encode_push, encode_reply, ErrorCode, Recovery};

const T0: Timestamp = Timestamp::ZERO;

fn data(n: u64) -> Payload {
    Payload::from_json(n.to_string().as_bytes()).unwrap()
}

fn publication(offset: u64) -> Publication {
    Publication {
        offset,
        data: data(offset),
        info: None,
    }
}

fn pos(epoch: &str, offset: u64) -> StreamPosition {
    StreamPosition {
        epoch: epoch.into(),
        offset,
    }
}

/// A client with a test's view of it: what it sent and what it said.
struct Harness {
    client: Client,
}

impl Harness {
    fn connected() -> Harness {
        let mut h = Harness {
            client: Client::new(ClientConfig::default(), 7),
        };
        h.client.connect(T0);
        assert_eq!(h.events(), vec![Event::Connecting]);
        h.open_and_accept(T0);
        h
    }

    /// The transport opens: `connect` goes out; the server accepts it.
    fn open_and_accept(&mut self, now: Timestamp) {
        self.client.handle_open(now);
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0].command,
            Command::Connect {
                token: self.client.config.token.clone()
            }
        );
        assert_eq!(self.client.state(), State::Connecting);
        self.reply(
            sent[0].id,
            Reply::Connect {
                client: "c1".into(),
                user: String::new(),
                ttl: None,
            },
        );
        assert_eq!(
            self.events(),
            vec![Event::Connected {
                client: "c1".into(),
                user: String::new(),
                ttl: None
            }]
        );
        assert_eq!(self.client.state(), State::Connected);
    }

    fn sent(&mut self) -> Vec<Request> {
        std::iter::from_fn(|| self.client.poll_transmit())
            .map(|b| decode_request(Encoding::Json, &b).expect("the client sends valid commands"))
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    fn reply(&mut self, id: u64, reply: Reply) {
        let bytes = encode_reply(Encoding::Json, id, &reply);
        self.client.handle_message(T0, &bytes).unwrap();
    }

    fn push(&mut self, push: Push) {
        let bytes = encode_push(Encoding::Json, &push);
        self.client.handle_message(T0, &bytes).unwrap();
    }

    fn publish(&mut self, channel: &str, offset: u64) {
        self.push(Push::Pub {
            channel: channel.into(),
            publication: publication(offset),
        });
    }

    /// Subscribes and answers: the channel is at `epoch`/`offset`.
    fn subscribed(&mut self, channel: &str, epoch: &str, offset: u64) {
        self.client.subscribe(channel, None).unwrap();
        let id = self.expect_subscribe(channel, None);
        self.reply(
            id,
            Reply::Subscribe {
                epoch: epoch.into(),
                offset,
                recovery: None,
            },
        );
        assert_eq!(
            self.events(),
            vec![Event::Subscribed {
                channel: channel.into(),
                epoch: epoch.into(),
                offset,
                recovered: false
            }]
        );
    }

    /// The one command sent must be a subscribe to `channel` recovering
    /// from `recover`; returns its id.
    fn expect_subscribe(&mut self, channel: &str, recover: Option<StreamPosition>) -> u64 {
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0].command,
            Command::Subscribe {
                channel: channel.into(),
                recover,
                token: None,
            }
        );
        sent[0].id
    }
}

fn delivered(channel: &str, offsets: impl IntoIterator<Item = u64>) -> Vec<Event> {
    offsets
        .into_iter()
        .map(|o| Event::Publication {
            channel: channel.into(),
            publication: publication(o),
        })
        .collect()
}

#[test]
fn publications_are_delivered_in_order_and_duplicates_dropped() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 3);
    h.publish("a", 4);
    h.publish("a", 5);
    h.publish("a", 5);
    let events = h.events();
    assert_eq!(events[..2], delivered("a", [4, 5])[..]);
    assert!(matches!(&events[2], Event::Anomaly(_)), "{events:?}");
    assert_eq!(events.len(), 3);
    assert_eq!(h.client.position("a"), Some(&pos("e", 5)));
}

#[test]
fn a_hole_is_healed_by_resubscribing_with_recover_from_the_last_offset() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 0);
    h.publish("a", 1);
    h.publish("a", 3);
    let events = h.events();
    assert_eq!(events[0], delivered("a", [1])[0]);
    assert!(matches!(&events[1], Event::Anomaly(_)), "{events:?}");
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![
            Command::Unsubscribe {
                channel: "a".into()
            },
            Command::Subscribe {
                channel: "a".into(),
                recover: Some(pos("e", 1)),
                token: None,
            }
        ]
    );
    assert_eq!(h.client.sub_state("a"), SubState::Subscribing);
    // Pushes of the old subscription until the reply are not delivered.
    h.publish("a", 4);
    h.reply(sent[0].id, Reply::Unsubscribe);
    h.reply(
        sent[1].id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 4,
            recovery: Some(Recovery {
                recovered: true,
                publications: vec![publication(2), publication(3), publication(4)],
            }),
        },
    );
    let mut expected = vec![Event::Subscribed {
        channel: "a".into(),
        epoch: "e".into(),
        offset: 4,
        recovered: true,
    }];
    expected.extend(delivered("a", [2, 3, 4]));
    assert_eq!(h.events(), expected);
    h.publish("a", 5);
    assert_eq!(h.events(), delivered("a", [5]));
}

#[test]
fn a_reconnect_resubscribes_with_recover_and_reports_a_lost_position_as_a_gap() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 0);
    h.subscribed("b", "f", 10);
    h.publish("a", 1);
    h.events();
    let now = Timestamp::from_millis(1_000);
    h.client
        .handle_close(now, Some(close::SHUTDOWN), "server shutdown");
    assert_eq!(
        h.events(),
        vec![Event::Disconnected {
            code: Some(close::SHUTDOWN),
            reason: "server shutdown".into(),
            reconnect: true
        }]
    );
    assert_eq!(h.client.state(), State::Connecting);
    assert_eq!(h.client.sub_state("a"), SubState::Subscribing);
    // Nothing happens before the backoff passes.
    let at = h.client.poll_timeout().expect("a reconnect is scheduled");
    assert!(at >= now + Duration::from_millis(250) && at <= now + Duration::from_millis(500));
    h.client.handle_timeout(at - Duration::from_micros(1));
    assert_eq!(h.events(), vec![]);
    h.client.handle_timeout(at);
    assert_eq!(h.events(), vec![Event::Connecting]);
    h.open_and_accept(at);
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![
            Command::Subscribe {
                channel: "a".into(),
                recover: Some(pos("e", 1)),
                token: None,
            },
            Command::Subscribe {
                channel: "b".into(),
                recover: Some(pos("f", 10)),
                token: None,
            }
        ]
    );
    h.reply(
        sent[0].id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 2,
            recovery: Some(Recovery {
                recovered: true,
                publications: vec![publication(2)],
            }),
        },
    );
    // b was recreated while we were away: a new epoch.
    h.reply(
        sent[1].id,
        Reply::Subscribe {
            epoch: "g".into(),
            offset: 0,
            recovery: Some(Recovery {
                recovered: false,
                publications: vec![],
            }),
        },
    );
    let mut expected = vec![Event::Subscribed {
        channel: "a".into(),
        epoch: "e".into(),
        offset: 2,
        recovered: true,
    }];
    expected.extend(delivered("a", [2]));
    expected.push(Event::Subscribed {
        channel: "b".into(),
        epoch: "g".into(),
        offset: 0,
        recovered: false,
    });
    expected.push(Event::Gap {
        channel: "b".into(),
        epoch: "g".into(),
        offset: 0,
        reason: GapReason::NotRecovered,
    });
    assert_eq!(h.events(), expected);
    assert_eq!(h.client.position("b"), Some(&pos("g", 0)));
}

#[test]
fn close_codes_that_say_do_not_reconnect_leave_the_client_disconnected() {
    for (code, reconnect) in [
        (None, true),
        (Some(close::HEARTBEAT_TIMEOUT), true),
        (Some(close::INSUFFICIENT_STATE), true),
        (Some(close::BAD_COMMAND), false),
        (Some(close::FORCE_DISCONNECT), false),
        (Some(CloseCode::PROTOCOL_ERROR), false),
    ] {
        let mut h = Harness::connected();
        h.client.handle_close(T0, code, "");
        assert_eq!(
            h.events(),
            vec![Event::Disconnected {
                code,
                reason: String::new(),
                reconnect
            }],
            "{code:?}"
        );
        let expected = if reconnect {
            State::Connecting
        } else {
            State::Disconnected
        };
        assert_eq!(h.client.state(), expected, "{code:?}");
        assert_eq!(h.client.poll_timeout().is_some(), reconnect, "{code:?}");
    }
}

#[test]
fn backoff_grows_with_failed_attempts_and_resets_once_connected() {
    let mut h = Harness::connected();
    let mut now = T0;
    let mut windows = Vec::new();
    for _ in 0..6 {
        h.client.handle_close(now, None, "");
        let at = h.client.poll_timeout().unwrap();
        windows.push(at.saturating_since(now));
        now = at;
        h.client.handle_timeout(now);
        h.events();
    }
    // Attempt n waits at most min * 2^n.
    for (n, d) in windows.iter().enumerate() {
        assert!(
            *d <= Duration::from_millis(500) * 2u32.pow(n as u32),
            "{n}: {d:?}"
        );
    }
    h.open_and_accept(now);
    h.client.handle_close(now, None, "");
    let d = h.client.poll_timeout().unwrap().saturating_since(now);
    assert!(
        d <= Duration::from_millis(500),
        "reset after connecting: {d:?}"
    );
}

#[test]
fn disconnect_fails_calls_in_flight_and_keeps_subscriptions_for_the_next_connect() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 5);
    let id = h.client.publish(T0, "a", data(1)).unwrap();
    h.sent();
    h.client.disconnect(T0);
    assert_eq!(
        h.events(),
        vec![
            Event::CallFailed {
                id,
                reason: CallFailure::Disconnected
            },
            Event::Disconnected {
                code: Some(CloseCode::NORMAL),
                reason: "disconnect called".into(),
                reconnect: false
            }
        ]
    );
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(
        h.client.publish(T0, "a", data(2)),
        Err(ClientError::NotConnected)
    );
    h.client.connect(T0);
    h.events();
    h.open_and_accept(T0);
    h.expect_subscribe("a", Some(pos("e", 5)));
}

#[test]
fn calls_get_their_reply_or_fail_at_their_timeout() {
    let mut h = Harness::connected();
    let history = h.client.history(T0, "a", None, Some(2)).unwrap();
    let presence = h.client.presence(T0, "a").unwrap();
    assert_eq!(h.sent().len(), 2);
    let reply = Reply::Error(ErrorReply::new(ErrorCode::NotAvailable, "presence is off"));
    h.reply(presence, reply.clone());
    assert_eq!(
        h.events(),
        vec![Event::Reply {
            id: presence,
            reply
        }]
    );
    let due = h.client.poll_timeout().unwrap();
    assert_eq!(due, T0 + Duration::from_secs(5));
    h.client.handle_timeout(due);
    assert_eq!(
        h.events(),
        vec![Event::CallFailed {
            id: history,
            reason: CallFailure::Timeout
        }]
    );
    // A late reply is not delivered twice.
    h.reply(
        history,
        Reply::History {
            epoch: "e".into(),
            offset: 0,
            publications: vec![],
        },
    );
    assert!(matches!(h.events()[..], [Event::Anomaly(_)]));
}

#[test]
fn unsubscribe_pushes_end_or_restore_a_subscription_by_their_code() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 2);
    h.subscribed("b", "e", 0);
    h.push(Push::Unsubscribe {
        channel: "a".into(),
        code: unsubscribe_code::INSUFFICIENT_STATE,
        reason: "insufficient state".into(),
    });
    assert_eq!(h.events(), vec![]);
    h.expect_subscribe("a", Some(pos("e", 2)));
    h.push(Push::Unsubscribe {
        channel: "b".into(),
        code: unsubscribe_code::SERVER,
        reason: "unsubscribed".into(),
    });
    assert_eq!(
        h.events(),
        vec![Event::Unsubscribed {
            channel: "b".into(),
            code: unsubscribe_code::SERVER,
            reason: "unsubscribed".into()
        }]
    );
    assert_eq!(h.client.sub_state("b"), SubState::Unsubscribed);
    assert_eq!(h.sent(), vec![]);
}

#[test]
fn a_refused_subscribe_ends_the_subscription_with_the_error_code() {
    let mut h = Harness::connected();
    h.client.subscribe("nope:x", None).unwrap();
    let id = h.expect_subscribe("nope:x", None);
    h.reply(
        id,
        Reply::Error(ErrorReply::new(
            ErrorCode::UnknownNamespace,
            "unknown namespace",
        )),
    );
    assert_eq!(
        h.events(),
        vec![Event::Unsubscribed {
            channel: "nope:x".into(),
            code: 103,
            reason: "unknown namespace".into()
        }]
    );
    assert_eq!(
        h.client.unsubscribe("nope:x"),
        Err(ClientError::NotSubscribed("nope:x".into()))
    );
}

#[test]
fn an_unsubscribe_while_subscribing_ignores_the_late_reply_and_its_pushes() {
    let mut h = Harness::connected();
    h.client.subscribe("a", None).unwrap();
    let id = h.expect_subscribe("a", None);
    h.client.unsubscribe("a").unwrap();
    assert_eq!(
        h.sent()[0].command,
        Command::Unsubscribe {
            channel: "a".into()
        }
    );
    h.reply(
        id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 0,
            recovery: None,
        },
    );
    h.publish("a", 1);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn join_and_leave_reach_a_live_subscription() {
    let mut h = Harness::connected();
    h.subscribed("a", "e", 0);
    let info = ClientInfo {
        client: "c1".into(),
        user: "ann".into(),
    };
    h.push(Push::Join {
        channel: "a".into(),
        info: info.clone(),
    });
    h.push(Push::Leave {
        channel: "a".into(),
        info: info.clone(),
    });
    assert_eq!(
        h.events(),
        vec![
            Event::Join {
                channel: "a".into(),
                info: info.clone()
            },
            Event::Leave {
                channel: "a".into(),
                info
            }
        ]
    );
}

#[test]
fn a_message_that_does_not_decode_is_an_error_for_the_driver() {
    let mut h = Harness::connected();
    assert!(h.client.handle_message(T0, b"{\"id\":1}").is_err());
    assert!(h.client.handle_message(T0, b"not json").is_err());
}

#[test]
fn a_token_is_sent_in_connect_and_a_refused_one_can_be_replaced() {
    let mut h = Harness {
        client: Client::new(
            ClientConfig {
                token: Some("old".into()),
                ..ClientConfig::default()
            },
            1,
        ),
    };
    h.client.subscribe("a", None).unwrap();
    h.client.connect(T0);
    h.client.handle_open(T0);
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![Command::Connect {
            token: Some("old".into())
        }],
        "nothing but connect before it is accepted"
    );
    h.reply(
        sent[0].id,
        Reply::Error(ErrorReply::new(ErrorCode::TokenExpired, "token expired")),
    );
    h.events();
    assert_eq!(h.client.state(), State::Connecting);
    h.client.set_token("new".into());
    let sent = h.sent();
    assert_eq!(
        sent[0].command,
        Command::Connect {
            token: Some("new".into())
        }
    );
    h.reply(
        sent[0].id,
        Reply::Connect {
            client: "c9".into(),
            user: "42".into(),
            ttl: Some(600),
        },
    );
    assert_eq!(
        h.events(),
        vec![Event::Connected {
            client: "c9".into(),
            user: "42".into(),
            ttl: Some(600)
        }]
    );
    h.expect_subscribe("a", None);
    // While connected, a new token is a refresh.
    h.client.set_token("newer".into());
    let sent = h.sent();
    assert_eq!(
        sent[0].command,
        Command::Refresh {
            token: "newer".into()
        }
    );
    h.reply(sent[0].id, Reply::Refresh { ttl: Some(900) });
    assert_eq!(h.events(), vec![Event::Refreshed { ttl: Some(900) }]);
}
