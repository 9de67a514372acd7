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
        let events = self.open_and_accept_with(now, Vec::new());
        assert_eq!(events, vec![]);
    }

    /// The transport opens: `connect` goes out; returns its id.
    fn open(&mut self, now: Timestamp) -> u64 {
        self.client.handle_open(now);
        self.expect_connect()
    }

    /// The one command sent must be `connect` (with the configured token);
    /// returns its id.
    fn expect_connect(&mut self) -> u64 {
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0].command,
            Command::Connect {
                token: self.client.config.token.clone(),
                data: None,
                ping: false,
            }
        );
        assert_eq!(self.client.state(), State::Connecting);
        sent[0].id
    }

    /// The transport opens and the server accepts `connect`, having
    /// subscribed the connection to `subs`; returns the events after
    /// [`Event::Connected`].
    fn open_and_accept_with(
        &mut self,
        now: Timestamp,
        subs: Vec<(String, StreamPosition)>,
    ) -> Vec<Event> {
        let id = self.open(now);
        self.accept(id, subs)
    }

    /// The server accepts `connect` `id`; returns the events after
    /// [`Event::Connected`].
    fn accept(&mut self, id: u64, subs: Vec<(String, StreamPosition)>) -> Vec<Event> {
        self.reply(
            id,
            Reply::Connect {
                client: "c1".into(),
                user: String::new(),
                ttl: None,
                data: None,
                subs,
                ping: None,
            },
        );
        let mut events = self.events();
        assert_eq!(
            events.first(),
            Some(&Event::Connected {
                client: "c1".into(),
                user: String::new(),
                ttl: None,
                data: None,
            }),
            "{events:?}"
        );
        assert_eq!(self.client.state(), State::Connected);
        events.remove(0);
        events
    }

    /// The transport ends with `code` and the client reconnects once the
    /// backoff passed; returns the time it did.
    fn reconnect(&mut self, now: Timestamp, code: Option<CloseCode>) -> Timestamp {
        self.client.handle_close(now, code, "");
        let at = self
            .client
            .poll_timeout()
            .expect("a reconnect is scheduled");
        self.client.handle_timeout(at);
        let events = self.events();
        assert!(
            matches!(
                events[..],
                [
                    Event::Disconnected {
                        reconnect: true,
                        ..
                    },
                    Event::Connecting
                ]
            ),
            "{events:?}"
        );
        at
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
        self.reply_at(T0, id, reply);
    }

    fn reply_at(&mut self, now: Timestamp, id: u64, reply: Reply) {
        let bytes = encode_reply(Encoding::Json, id, &reply);
        self.client.handle_message(now, &bytes).unwrap();
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
        self.subscribed_with(channel, None, epoch, offset);
    }

    /// Subscribes with a subscription token and answers: the channel is at
    /// `epoch`/`offset`.
    fn subscribed_with(&mut self, channel: &str, token: Option<&str>, epoch: &str, offset: u64) {
        let options = SubscribeOptions {
            since: None,
            token: token.map(Into::into),
        };
        self.client.subscribe_with(channel, options).unwrap();
        let id = self.expect_subscribe_with(channel, None, token);
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
                recovered: false,
                server_side: false,
            }]
        );
    }

    /// The one command sent must be a subscribe to `channel` recovering
    /// from `recover`; returns its id.
    fn expect_subscribe(&mut self, channel: &str, recover: Option<StreamPosition>) -> u64 {
        self.expect_subscribe_with(channel, recover, None)
    }

    /// The one command sent must be a subscribe to `channel` recovering
    /// from `recover` with subscription token `token`; returns its id.
    fn expect_subscribe_with(
        &mut self,
        channel: &str,
        recover: Option<StreamPosition>,
        token: Option<&str>,
    ) -> u64 {
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0].command,
            Command::Subscribe {
                channel: channel.into(),
                recover,
                token: token.map(Into::into),
            }
        );
        sent[0].id
    }
}

fn subscribed(channel: &str, epoch: &str, offset: u64, recovered: bool) -> Event {
    Event::Subscribed {
        channel: channel.into(),
        epoch: epoch.into(),
        offset,
        recovered,
        server_side: false,
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
        server_side: false,
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
        server_side: false,
    }];
    expected.extend(delivered("a", [2]));
    expected.push(Event::Subscribed {
        channel: "b".into(),
        epoch: "g".into(),
        offset: 0,
        recovered: false,
        server_side: false,
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
    let error = ErrorReply::new(ErrorCode::NotAvailable, "presence is off");
    h.reply(presence, Reply::Error(error.clone()));
    assert_eq!(
        h.events(),
        vec![Event::Reply {
            id: presence,
            reply: Err(ClientError::Server(error))
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
        conn_info: None,
        chan_info: None,
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
            token: Some("old".into()),
            data: None,
            ping: false,
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
            token: Some("new".into()),
            data: None,
            ping: false,
        }
    );
    h.reply(
        sent[0].id,
        Reply::Connect {
            client: "c9".into(),
            user: "42".into(),
            ttl: Some(600),
            data: None,
            subs: Vec::new(),
            ping: None,
        },
    );
    assert_eq!(
        h.events(),
        vec![Event::Connected {
            client: "c9".into(),
            user: "42".into(),
            ttl: Some(600),
            data: None,
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

fn expired_push(channel: &str) -> Push {
    Push::Unsubscribe {
        channel: channel.into(),
        code: unsubscribe_code::TOKEN_EXPIRED,
        reason: "subscription token expired".into(),
    }
}

fn error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error(ErrorReply::new(code, message))
}

#[test]
fn a_subscription_token_is_sent_on_subscribe_and_on_every_resubscribe() {
    let mut h = Harness::connected();
    h.subscribed_with("vip:a", Some("t1"), "e", 3);
    h.publish("vip:a", 4);
    h.events();
    // Reconnect: resubscribed with recover and the token.
    let now = h.reconnect(T0, Some(close::SHUTDOWN));
    h.open_and_accept(now);
    let id = h.expect_subscribe_with("vip:a", Some(pos("e", 4)), Some("t1"));
    h.reply(
        id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 4,
            recovery: Some(Recovery {
                recovered: true,
                publications: vec![],
            }),
        },
    );
    assert_eq!(h.events(), vec![subscribed("vip:a", "e", 4, true)]);
    // A gap the server announces: resubscribed with the token too.
    h.push(Push::Unsubscribe {
        channel: "vip:a".into(),
        code: unsubscribe_code::INSUFFICIENT_STATE,
        reason: "insufficient state".into(),
    });
    h.expect_subscribe_with("vip:a", Some(pos("e", 4)), Some("t1"));
    // A subscription without a token sends none.
    h.subscribed("b", "f", 0);
}

#[test]
fn an_expired_subscription_token_waits_for_a_new_one_then_resubscribes_with_recover() {
    let mut h = Harness::connected();
    h.subscribed_with("vip:a", Some("t1"), "e", 3);
    h.publish("vip:a", 4);
    h.events();
    h.push(expired_push("vip:a"));
    assert_eq!(
        h.events(),
        vec![Event::SubTokenExpired {
            channel: "vip:a".into()
        }]
    );
    assert_eq!(h.sent(), vec![], "no resubscribe without a new token");
    assert!(h.client.waits_for_sub_token("vip:a"));
    assert_eq!(h.client.sub_state("vip:a"), SubState::Subscribing);
    // Pushes of the ended subscription are not delivered.
    h.publish("vip:a", 5);
    assert_eq!(h.events(), vec![]);
    // Still waiting after a reconnect: the other subscriptions come back.
    h.subscribed("b", "f", 0);
    let now = h.reconnect(T0, None);
    h.open_and_accept(now);
    h.expect_subscribe("b", Some(pos("f", 0)));
    // The new token: subscribed again with it, from the last position.
    h.client.set_sub_token("vip:a", "t2".into()).unwrap();
    assert!(!h.client.waits_for_sub_token("vip:a"));
    let id = h.expect_subscribe_with("vip:a", Some(pos("e", 4)), Some("t2"));
    h.reply(
        id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 5,
            recovery: Some(Recovery {
                recovered: true,
                publications: vec![publication(5)],
            }),
        },
    );
    let mut expected = vec![subscribed("vip:a", "e", 5, true)];
    expected.extend(delivered("vip:a", [5]));
    assert_eq!(h.events(), expected);

    // A subscribe refused with 111 waits the same way.
    h.client
        .subscribe_with(
            "vip:c",
            SubscribeOptions {
                since: None,
                token: Some("old".into()),
            },
        )
        .unwrap();
    let id = h.expect_subscribe_with("vip:c", None, Some("old"));
    h.reply(id, error(ErrorCode::TokenExpired, "token expired"));
    assert_eq!(
        h.events(),
        vec![Event::SubTokenExpired {
            channel: "vip:c".into()
        }]
    );
    assert_eq!(h.sent(), vec![]);
    h.client.set_sub_token("vip:c", "fresh".into()).unwrap();
    h.expect_subscribe_with("vip:c", None, Some("fresh"));
    // Set while disconnected: sent once connected.
    h.push(expired_push("vip:a"));
    h.events();
    h.client.disconnect(T0);
    h.client.set_sub_token("vip:a", "t3".into()).unwrap();
    assert_eq!(h.sent(), vec![]);
    h.client.connect(T0);
    h.events();
    h.open_and_accept(T0);
    let sent = h.sent();
    assert!(
        sent.iter().any(|r| r.command
            == Command::Subscribe {
                channel: "vip:a".into(),
                recover: Some(pos("e", 5)),
                token: Some("t3".into()),
            }),
        "{sent:?}"
    );
}

#[test]
fn a_token_replaced_while_the_server_holds_the_old_one_is_used_without_waiting() {
    let mut h = Harness::connected();
    // Replaced while the subscribe is on its way, which is then refused as
    // expired: subscribed again with the new one at once.
    h.client
        .subscribe_with(
            "vip:a",
            SubscribeOptions {
                since: None,
                token: Some("t1".into()),
            },
        )
        .unwrap();
    let id = h.expect_subscribe_with("vip:a", None, Some("t1"));
    h.client.set_sub_token("vip:a", "t2".into()).unwrap();
    assert_eq!(h.sent(), vec![]);
    h.reply(id, error(ErrorCode::TokenExpired, "token expired"));
    assert_eq!(h.events(), vec![]);
    let id = h.expect_subscribe_with("vip:a", None, Some("t2"));
    // Replaced while in flight, and accepted with the old one: refreshed.
    h.client.set_sub_token("vip:a", "t3".into()).unwrap();
    h.reply(
        id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 0,
            recovery: None,
        },
    );
    assert_eq!(h.events(), vec![subscribed("vip:a", "e", 0, false)]);
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![Command::SubRefresh {
            channel: "vip:a".into(),
            token: "t3".into()
        }]
    );
    // The 2501 push crosses that sub_refresh: subscribed again with t3 at
    // once, and the refresh's late 106 changes nothing.
    h.push(expired_push("vip:a"));
    assert_eq!(h.events(), vec![]);
    h.expect_subscribe_with("vip:a", Some(pos("e", 0)), Some("t3"));
    h.reply(
        sent[0].id,
        error(ErrorCode::NotSubscribed, "not subscribed"),
    );
    assert_eq!(h.events(), vec![]);
}

#[test]
fn set_sub_token_on_a_live_subscription_is_a_sub_refresh() {
    let mut h = Harness::connected();
    h.subscribed_with("vip:a", Some("t1"), "e", 0);
    h.client.set_sub_token("vip:a", "t2".into()).unwrap();
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![Command::SubRefresh {
            channel: "vip:a".into(),
            token: "t2".into()
        }]
    );
    h.reply(sent[0].id, Reply::SubRefresh { ttl: Some(600) });
    assert_eq!(
        h.events(),
        vec![Event::SubRefreshed {
            channel: "vip:a".into(),
            ttl: Some(600)
        }]
    );
    // Refused: said, and the subscription stays.
    h.client.set_sub_token("vip:a", "bad".into()).unwrap();
    let id = h.sent()[0].id;
    h.reply(id, error(ErrorCode::Unauthorized, "bad token"));
    assert_eq!(
        h.events(),
        vec![Event::SubTokenRefused {
            channel: "vip:a".into(),
            code: 112,
            message: "bad token".into()
        }]
    );
    assert_eq!(h.client.sub_state("vip:a"), SubState::Subscribed);
    // After the accepted refresh, the 2501 push is about the newest token:
    // wait for another.
    h.client.set_sub_token("vip:a", "t3".into()).unwrap();
    let id = h.sent()[0].id;
    h.reply(id, Reply::SubRefresh { ttl: None });
    h.events();
    h.push(expired_push("vip:a"));
    assert_eq!(
        h.events(),
        vec![Event::SubTokenExpired {
            channel: "vip:a".into()
        }]
    );
    assert_eq!(
        h.client.set_sub_token("nope", "t".into()),
        Err(ClientError::NotSubscribed("nope".into()))
    );
}

#[test]
fn unsubscribe_pushes_follow_the_protocol_table() {
    // (code, resubscribes with recover)
    for (code, resubscribes) in [
        (unsubscribe_code::SERVER, false),
        (unsubscribe_code::PERMISSION_REVOKED, false),
        (2499, false),
        (unsubscribe_code::INSUFFICIENT_STATE, true),
        (2502, true),
        (2999, true),
    ] {
        let mut h = Harness::connected();
        h.subscribed("a", "e", 2);
        h.push(Push::Unsubscribe {
            channel: "a".into(),
            code,
            reason: "r".into(),
        });
        if resubscribes {
            assert_eq!(h.events(), vec![], "{code}");
            h.expect_subscribe("a", Some(pos("e", 2)));
        } else {
            assert_eq!(
                h.events(),
                vec![Event::Unsubscribed {
                    channel: "a".into(),
                    code,
                    reason: "r".into()
                }],
                "{code}"
            );
            assert_eq!(h.sent(), vec![], "{code}");
            assert_eq!(h.client.sub_state("a"), SubState::Unsubscribed);
            // Not restored by a reconnect either.
            let now = h.reconnect(T0, None);
            h.open_and_accept(now);
            assert_eq!(h.sent(), vec![], "{code}");
        }
    }
}

#[test]
fn a_subscribe_refused_as_unauthorized_forbidden_or_by_the_backend_ends_it() {
    for (reply, code) in [
        (error(ErrorCode::Unauthorized, "bad token"), 112),
        (error(ErrorCode::PermissionDenied, "denied"), 104),
        (
            Reply::AppError {
                code: 403,
                message: "denied".into(),
            },
            403,
        ),
    ] {
        let mut h = Harness::connected();
        h.client
            .subscribe_with(
                "vip:a",
                SubscribeOptions {
                    since: None,
                    token: Some("t".into()),
                },
            )
            .unwrap();
        let id = h.expect_subscribe_with("vip:a", None, Some("t"));
        h.reply(id, reply);
        let events = h.events();
        assert!(
            matches!(&events[..], [Event::Unsubscribed { channel, code: c, .. }] if channel == "vip:a" && *c == code),
            "{events:?}"
        );
        assert_eq!(h.client.sub_state("vip:a"), SubState::Unsubscribed);
        assert_eq!(h.sent(), vec![]);
    }
}

#[test]
fn server_side_subscriptions_are_tracked_and_not_resubscribed_on_reconnect() {
    let mut h = Harness {
        client: Client::new(ClientConfig::default(), 3),
    };
    h.client.subscribe("own", None).unwrap();
    h.client.connect(T0);
    h.events();
    let events = h.open_and_accept_with(T0, vec![("news".into(), pos("e", 17))]);
    assert_eq!(
        events,
        vec![Event::Subscribed {
            channel: "news".into(),
            epoch: "e".into(),
            offset: 17,
            recovered: false,
            server_side: true,
        }]
    );
    assert!(h.client.is_server_side("news"));
    assert_eq!(h.client.sub_state("news"), SubState::Subscribed);
    // Only the application's own subscription is sent.
    let id = h.expect_subscribe("own", None);
    h.reply(
        id,
        Reply::Subscribe {
            epoch: "o".into(),
            offset: 0,
            recovery: None,
        },
    );
    h.events();
    h.publish("news", 18);
    assert_eq!(h.events(), delivered("news", [18]));
    assert_eq!(h.client.position("news"), Some(&pos("e", 18)));
    // A duplicate is dropped, as on any subscription.
    h.publish("news", 18);
    assert!(matches!(h.events()[..], [Event::Anomaly(_)]));

    // Reconnect: the server lists it again where it was; nothing missed.
    let now = h.reconnect(T0, Some(close::SHUTDOWN));
    assert_eq!(h.client.sub_state("news"), SubState::Subscribing);
    let events = h.open_and_accept_with(now, vec![("news".into(), pos("e", 18))]);
    assert_eq!(
        events,
        vec![Event::Subscribed {
            channel: "news".into(),
            epoch: "e".into(),
            offset: 18,
            recovered: true,
            server_side: true,
        }]
    );
    h.expect_subscribe("own", Some(pos("o", 0)));

    // Again, further on: a gap the application can fill from history.
    let now = h.reconnect(now, None);
    let events = h.open_and_accept_with(now, vec![("news".into(), pos("e", 25))]);
    assert_eq!(
        events,
        vec![
            Event::Subscribed {
                channel: "news".into(),
                epoch: "e".into(),
                offset: 25,
                recovered: false,
                server_side: true,
            },
            Event::Gap {
                channel: "news".into(),
                epoch: "e".into(),
                offset: 25,
                reason: GapReason::Missed {
                    since: pos("e", 18)
                },
            }
        ]
    );
    h.expect_subscribe("own", Some(pos("o", 0)));
    h.publish("news", 26);
    assert_eq!(h.events(), delivered("news", [26]));

    // In another epoch: not recoverable.
    let now = h.reconnect(now, None);
    let events = h.open_and_accept_with(now, vec![("news".into(), pos("x", 1))]);
    assert!(
        matches!(
            &events[1],
            Event::Gap {
                reason: GapReason::NotRecovered,
                ..
            }
        ),
        "{events:?}"
    );
    h.sent();

    // No longer listed: it ends; the application's own stays.
    let now = h.reconnect(now, None);
    let events = h.open_and_accept_with(now, vec![]);
    assert_eq!(
        events,
        vec![Event::Unsubscribed {
            channel: "news".into(),
            code: unsubscribe_code::SERVER,
            reason: "no longer a server-side subscription".into(),
        }]
    );
    assert_eq!(h.client.sub_state("news"), SubState::Unsubscribed);
    h.expect_subscribe("own", Some(pos("o", 0)));
}

#[test]
fn a_hole_on_a_server_side_subscription_is_recovered_by_the_client() {
    let mut h = Harness {
        client: Client::new(ClientConfig::default(), 3),
    };
    h.client.connect(T0);
    h.events();
    h.open_and_accept_with(T0, vec![("news".into(), pos("e", 1))]);
    h.publish("news", 3);
    assert!(matches!(h.events()[..], [Event::Anomaly(_)]));
    let sent = h.sent();
    assert_eq!(
        sent.iter().map(|r| r.command.clone()).collect::<Vec<_>>(),
        vec![
            Command::Unsubscribe {
                channel: "news".into()
            },
            Command::Subscribe {
                channel: "news".into(),
                recover: Some(pos("e", 1)),
                token: None,
            }
        ]
    );
    h.reply(
        sent[1].id,
        Reply::Subscribe {
            epoch: "e".into(),
            offset: 3,
            recovery: Some(Recovery {
                recovered: true,
                publications: vec![publication(2), publication(3)],
            }),
        },
    );
    let mut expected = vec![Event::Subscribed {
        channel: "news".into(),
        epoch: "e".into(),
        offset: 3,
        recovered: true,
        server_side: true,
    }];
    expected.extend(delivered("news", [2, 3]));
    assert_eq!(h.events(), expected);
    // Still the server's on the next connect: not sent by the client.
    let now = h.reconnect(T0, None);
    let events = h.open_and_accept_with(now, vec![("news".into(), pos("e", 3))]);
    assert!(matches!(
        events[..],
        [Event::Subscribed {
            recovered: true,
            server_side: true,
            ..
        }]
    ));
    assert_eq!(h.sent(), vec![]);
}

#[test]
fn application_errors_reach_the_call_that_got_them() {
    let mut h = Harness::connected();
    let id = h.client.publish(T0, "a", data(1)).unwrap();
    h.sent();
    h.reply(
        id,
        Reply::AppError {
            code: 1403,
            message: "muted".into(),
        },
    );
    let events = h.events();
    assert_eq!(
        events,
        vec![Event::Reply {
            id,
            reply: Err(ClientError::App {
                code: 1403,
                message: "muted".into()
            })
        }]
    );
    let Event::Reply { reply: Err(e), .. } = &events[0] else {
        unreachable!()
    };
    assert_eq!(e.code(), Some(1403));
    assert_eq!(e.to_string(), "application error 1403: muted");
    let id = h.client.publish(T0, "a", data(2)).unwrap();
    h.sent();
    h.reply(id, Reply::Publish { offset: 9 });
    assert_eq!(
        h.events(),
        vec![Event::Reply {
            id,
            reply: Ok(Reply::Publish { offset: 9 })
        }]
    );
}

#[test]
fn a_connect_failing_for_now_is_retried_after_a_growing_backoff() {
    let mut h = Harness {
        client: Client::new(ClientConfig::default(), 11),
    };
    h.client.subscribe("a", None).unwrap();
    h.client.connect(T0);
    h.events();
    let mut id = h.open(T0);
    let mut now = T0;
    let failures = [
        Reply::AppError {
            code: 503,
            message: "backend busy".into(),
        },
        error(ErrorCode::Internal, "connect proxy down"),
        error(ErrorCode::NotAvailable, "try later"),
    ];
    for (n, reply) in failures.into_iter().enumerate() {
        let error = ClientError::from_reply(reply.clone()).unwrap_err();
        h.reply_at(now, id, reply);
        assert_eq!(h.events(), vec![Event::ConnectFailed { error }]);
        assert_eq!(h.client.state(), State::Connecting);
        let at = h.client.poll_timeout().expect("a retry is scheduled");
        let wait = at.saturating_since(now);
        assert!(
            wait >= Duration::from_millis(250) && wait <= Duration::from_millis(500) * (1 << n),
            "{n}: {wait:?}"
        );
        h.client.handle_timeout(at - Duration::from_micros(1));
        assert_eq!(h.sent(), vec![], "nothing before the backoff passed");
        h.client.handle_timeout(at);
        now = at;
        // Again on the same transport.
        id = h.expect_connect();
    }
    assert_eq!(h.accept(id, vec![]), vec![]);
    h.expect_subscribe("a", None);
    // Reset once connected.
    h.client.handle_close(now, None, "");
    let wait = h.client.poll_timeout().unwrap().saturating_since(now);
    assert!(wait <= Duration::from_millis(500), "{wait:?}");
}

#[test]
fn a_connect_timeout_while_retrying_reconnects() {
    let mut h = Harness {
        client: Client::new(ClientConfig::default(), 5),
    };
    h.client.connect(T0);
    h.events();
    let id = h.open(T0);
    h.reply(id, error(ErrorCode::Internal, "connect proxy down"));
    h.events();
    // The server's connect timeout ends the transport before the retry.
    let now = h.reconnect(T0, Some(close::CONNECT_TIMEOUT));
    assert_eq!(h.client.state(), State::Connecting);
    h.open_and_accept(now);
}

#[test]
fn connect_data_and_the_reply_data_travel() {
    let mut h = Harness {
        client: Client::new(
            ClientConfig {
                connect_data: Some(data(7)),
                ..ClientConfig::default()
            },
            1,
        ),
    };
    h.client.connect(T0);
    h.events();
    h.client.handle_open(T0);
    let sent = h.sent();
    assert_eq!(
        sent[0].command,
        Command::Connect {
            token: None,
            data: Some(data(7)),
            ping: false,
        }
    );
    h.reply(
        sent[0].id,
        Reply::Connect {
            client: "c2".into(),
            user: "42".into(),
            ttl: None,
            data: Some(data(8)),
            subs: vec![],
            ping: None,
        },
    );
    assert_eq!(
        h.events(),
        vec![Event::Connected {
            client: "c2".into(),
            user: "42".into(),
            ttl: None,
            data: Some(data(8)),
        }]
    );
}
