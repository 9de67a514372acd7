//! The connection state machine: ping/pong (RFC 6455 5.5.2-5.5.3), the close
//! handshake (section 7), heartbeats, the byte budget, and release of
//! everything once closed. Driven with explicit timestamps, no clock.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use wavecast_core::connection::{
    CloseCause, Connection, ConnectionConfig, Event, SendError, State,
};
use wavecast_core::frame::{self, Frame, FrameDecoder, OpCode};
use wavecast_core::message::{self, CloseCode};
use wavecast_core::Timestamp;

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

fn config() -> ConnectionConfig {
    ConnectionConfig {
        heartbeat_interval: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_secs(5),
        max_message_size: 1000,
        max_queued_bytes: 100,
        close_timeout: Duration::from_secs(2),
        ..ConnectionConfig::default()
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn client_frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    common::masked(fin, op, payload, MASK).to_vec()
}

/// Takes everything queued as the client would read it.
fn written(conn: &mut Connection) -> Vec<Frame> {
    let bytes = common::take_queued(conn.queue());
    let mut buf = BytesMut::from(&bytes[..]);
    let mut dec = FrameDecoder::client(1 << 20);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf).expect("server frames are valid") {
        frames.push(f);
    }
    assert!(buf.is_empty());
    frames
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn close_code(f: &Frame) -> Option<u16> {
    assert_eq!(f.opcode, OpCode::Close);
    message::parse_close(&f.payload).unwrap().map(|c| c.code.0)
}

#[test]
fn ping_is_answered_with_pong_of_same_payload() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Ping, b"are you there"));
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].opcode, OpCode::Pong);
    assert_eq!(&out[0].payload[..], b"are you there");
}

#[test]
fn empty_and_max_size_pings_are_answered() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Ping, b""));
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert!(out[0].payload.is_empty());
    c.handle_read(t(1), &client_frame(true, OpCode::Ping, &[7; 125]));
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].payload[..], &[7; 125][..]);
}

#[test]
fn pings_not_yet_answered_get_one_pong_for_the_latest() {
    // RFC 6455 5.5.3: an endpoint may answer only the most recent of the
    // pings it has not answered yet. At most one pong waits at a time.
    let mut c = Connection::new(t(0), config());
    let mut input = client_frame(true, OpCode::Ping, b"one");
    input.extend(client_frame(true, OpCode::Ping, b"two"));
    input.extend(client_frame(true, OpCode::Text, b"msg"));
    input.extend(client_frame(true, OpCode::Ping, b"three"));
    c.handle_read(t(1), &input);
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].opcode, OpCode::Pong);
    assert_eq!(&out[0].payload[..], b"three");
    assert_eq!(
        events(&mut c),
        vec![Event::Text(Bytes::from_static(b"msg"))]
    );
}

#[test]
fn a_ping_flood_that_never_reads_holds_one_pong_and_is_closed_as_slow() {
    let mut c = Connection::new(t(0), config());
    let ping = client_frame(true, OpCode::Ping, &[1; 125]);
    let mut burst = Vec::new();
    for _ in 0..100 {
        burst.extend_from_slice(&ping);
    }
    // Ten thousand pings over 20 s, nothing ever written: the queue holds
    // one pong, never more, and every read is a sign of life...
    let mut ms = 0;
    while c.state() == State::Open {
        assert!(ms <= 15_000, "still open after 15 s");
        c.handle_read(t(ms), &burst);
        // One pong (2 + 125 bytes) and at most one heartbeat ping (2).
        assert!(
            c.queued_bytes() <= 129,
            "one pong at most, not {}",
            c.queued_bytes()
        );
        c.handle_timeout(t(ms));
        ms += 200;
    }
    // ...but the peer took none of our bytes for interval + timeout (15 s
    // after the first pong waited): it is closed as a slow consumer.
    assert_eq!(ms, 15_200);
    let out = written(&mut c);
    assert_eq!(
        close_code(out.last().unwrap()),
        Some(CloseCode::POLICY_VIOLATION.0)
    );
    c.handle_timeout(t(40_000));
    assert!(c.is_finished());
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::WriteStalled)]
    );
}

#[test]
fn a_pong_counts_against_the_budget() {
    let mut c = Connection::new(t(0), config());
    c.send(t(1), frame::encode(OpCode::Text, &[b'a'; 120]))
        .unwrap();
    c.handle_write_blocked();
    c.handle_read(t(2), &client_frame(true, OpCode::Ping, b"p"));
    assert_eq!(c.state(), State::Closing, "over budget: closed, not queued");
    let out = written(&mut c);
    assert_eq!(out.len(), 1, "queued data dropped, only the close frame");
    assert_eq!(close_code(&out[0]), Some(CloseCode::POLICY_VIOLATION.0));
}

#[test]
fn a_reader_that_takes_bytes_is_never_stalled() {
    let mut c = Connection::new(t(0), config());
    let frame = frame::encode(OpCode::Text, &[b'a'; 40]);
    // Something always waits, but the peer takes a little every second.
    for s in 0..60u64 {
        let now = t(s * 1000);
        c.send(now, frame.clone()).unwrap();
        c.handle_read(now, &client_frame(true, OpCode::Pong, b""));
        c.handle_written(now, if s == 0 { 30 } else { 42 });
        c.handle_timeout(now);
        assert_eq!(c.state(), State::Open, "second {s}");
    }
}

#[test]
fn bytes_waiting_with_no_progress_close_a_peer_that_still_sends() {
    let mut c = Connection::new(t(0), config());
    c.send(t(0), frame::encode(OpCode::Text, b"hello")).unwrap();
    c.handle_written(t(0), 2);
    assert_eq!(c.poll_timeout(), Some(t(10_000)), "the ping comes first");
    for s in 1..15u64 {
        c.handle_read(t(s * 1000), &client_frame(true, OpCode::Text, b"x"));
        c.handle_timeout(t(s * 1000));
        assert_eq!(c.state(), State::Open);
    }
    // Last progress at 0: stalled at interval + timeout = 15 s.
    assert_eq!(c.poll_timeout(), Some(t(15_000)));
    c.handle_timeout(t(15_000));
    assert_eq!(c.state(), State::Closing);
}

#[test]
fn unsolicited_pong_is_ignored() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Pong, b"x"));
    assert!(written(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
    assert_eq!(c.state(), State::Open);
}

#[test]
fn ping_between_fragments_is_answered_first() {
    let mut c = Connection::new(t(0), config());
    let mut input = client_frame(false, OpCode::Text, b"frag");
    input.extend(client_frame(true, OpCode::Ping, b"p"));
    input.extend(client_frame(true, OpCode::Continuation, b"ment"));
    c.handle_read(t(1), &input);
    let out = written(&mut c);
    assert_eq!(out[0].opcode, OpCode::Pong);
    assert_eq!(
        events(&mut c),
        vec![Event::Text(Bytes::from_static(b"fragment"))]
    );
}

#[test]
fn client_close_is_echoed_and_connection_finishes() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(
        t(1),
        &client_frame(
            true,
            OpCode::Close,
            &message::encode_close_payload(CloseCode::NORMAL, "bye"),
        ),
    );
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(close_code(&out[0]), Some(1000));
    assert_eq!(c.state(), State::Closed);
    assert!(c.is_finished());
    let ev = events(&mut c);
    assert!(
        matches!(&ev[..], [Event::Closed(CloseCause::Peer(Some(f)))] if f.code == CloseCode::NORMAL && f.reason == "bye")
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Close, b""));
    let out = written(&mut c);
    assert_eq!(close_code(&out[0]), None);
}

#[test]
fn data_after_close_is_ignored() {
    let mut c = Connection::new(t(0), config());
    let mut input = client_frame(true, OpCode::Close, b"");
    input.extend(client_frame(true, OpCode::Text, b"late"));
    input.extend(client_frame(true, OpCode::Ping, b"late"));
    c.handle_read(t(1), &input);
    let out = written(&mut c);
    assert_eq!(out.len(), 1, "only the close reply: {out:?}");
    assert_eq!(events(&mut c).len(), 1);
}

#[test]
fn invalid_close_codes_fail_with_protocol_error() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 5000] {
        let mut c = Connection::new(t(0), config());
        c.handle_read(
            t(1),
            &client_frame(true, OpCode::Close, &code.to_be_bytes()),
        );
        let out = written(&mut c);
        assert_eq!(close_code(&out[0]), Some(1002), "code {code}");
        assert_eq!(c.state(), State::Closed);
    }
}

#[test]
fn one_byte_close_payload_is_protocol_error() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Close, &[3]));
    assert_eq!(close_code(&written(&mut c)[0]), Some(1002));
}

#[test]
fn close_reason_invalid_utf8_is_1007() {
    let mut c = Connection::new(t(0), config());
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend([0xff, 0xfe]);
    c.handle_read(t(1), &client_frame(true, OpCode::Close, &payload));
    assert_eq!(close_code(&written(&mut c)[0]), Some(1007));
}

#[test]
fn server_close_waits_for_peer_close_then_finishes() {
    let mut c = Connection::new(t(0), config());
    c.close(t(1), CloseCode::GOING_AWAY, "shutdown");
    let out = written(&mut c);
    assert_eq!(close_code(&out[0]), Some(1001));
    assert_eq!(c.state(), State::Closing);
    // Messages arriving meanwhile are discarded, pings not answered.
    c.handle_read(t(2), &client_frame(true, OpCode::Text, b"x"));
    c.handle_read(t(2), &client_frame(true, OpCode::Ping, b"x"));
    assert!(written(&mut c).is_empty());
    c.handle_read(
        t(3),
        &client_frame(true, OpCode::Close, &1001u16.to_be_bytes()),
    );
    assert!(c.is_finished());
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::Local(CloseCode::GOING_AWAY))]
    );
}

#[test]
fn server_close_times_out_without_peer_answer() {
    let mut c = Connection::new(t(0), config());
    c.close(t(1000), CloseCode::NORMAL, "");
    written(&mut c);
    assert_eq!(c.poll_timeout(), Some(t(3000)));
    c.handle_timeout(t(2999));
    assert_eq!(c.state(), State::Closing);
    c.handle_timeout(t(3000));
    assert!(c.is_finished());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn heartbeat_pings_every_interval_and_expires_silent_peer() {
    let mut c = Connection::new(t(0), config());
    assert_eq!(c.poll_timeout(), Some(t(10_000)));
    c.handle_timeout(t(9_999)); // early: nothing
    assert!(written(&mut c).is_empty());
    c.handle_timeout(t(10_000));
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].opcode, OpCode::Ping);
    // interval + timeout after the last sign of life (t=0): expiry at 15 s.
    assert_eq!(c.poll_timeout(), Some(t(15_000)));
    c.handle_timeout(t(15_000));
    let out = written(&mut c);
    assert_eq!(close_code(&out[0]), Some(CloseCode::GOING_AWAY.0));
    assert_eq!(c.state(), State::Closing);
    c.handle_timeout(t(17_000));
    assert!(c.is_finished());
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::HeartbeatTimeout)]
    );
}

#[test]
fn pong_keeps_connection_alive() {
    let mut c = Connection::new(t(0), config());
    for round in 1..=10u64 {
        let at = round * 10_000;
        c.handle_timeout(t(at));
        let out = written(&mut c);
        assert_eq!(out.last().unwrap().opcode, OpCode::Ping, "round {round}");
        c.handle_read(t(at + 100), &client_frame(true, OpCode::Pong, b""));
        assert_eq!(c.state(), State::Open);
    }
}

#[test]
fn handle_timeout_twice_is_harmless() {
    let mut c = Connection::new(t(0), config());
    c.handle_timeout(t(10_000));
    c.handle_timeout(t(10_000));
    assert_eq!(written(&mut c).len(), 1);
}

#[test]
fn a_burst_queued_between_two_writes_reaches_a_reader_that_keeps_up() {
    // Ten times the budget queued before the driver gets to write: the
    // reader has not been too slow, the burst was large. It is kept.
    let mut c = Connection::new(t(0), config());
    let frame = frame::encode(OpCode::Text, &[b'a'; 60]);
    for _ in 0..16 {
        c.send(t(1), frame.clone()).unwrap();
    }
    assert_eq!(c.queued_bytes(), 16 * 62);
    // The transport takes it all: still nothing against the reader.
    c.handle_written(t(2), 16 * 62);
    for _ in 0..16 {
        c.send(t(3), frame.clone()).unwrap();
    }
    // Now the transport refuses part of it: the reader is behind, and the
    // next frame past the budget closes it.
    c.handle_written(t(4), 100);
    c.handle_write_blocked();
    let err = c.send(t(4), frame.clone()).unwrap_err();
    assert!(matches!(err, SendError::SlowConsumer(_)));
    assert_eq!(c.state(), State::Closing);
}

#[test]
fn a_drained_queue_lifts_the_budget_again() {
    let mut c = Connection::new(t(0), config());
    let frame = frame::encode(OpCode::Text, &[b'a'; 60]);
    c.send(t(1), frame.clone()).unwrap();
    c.handle_write_blocked();
    c.handle_written(t(2), 62); // it caught up
    for _ in 0..4 {
        c.send(t(3), frame.clone()).unwrap();
    }
    assert_eq!(c.state(), State::Open);
}

#[test]
fn slow_consumer_is_closed_and_queue_dropped() {
    let mut c = Connection::new(t(0), config());
    let frame = frame::encode(OpCode::Text, &[b'a'; 60]);
    c.send(t(1), frame.clone()).unwrap();
    c.send(t(1), frame.clone()).unwrap(); // 124 queued: over budget now
    c.handle_write_blocked(); // and the reader takes nothing
    let err = c.send(t(1), frame.clone()).unwrap_err();
    assert!(matches!(err, SendError::SlowConsumer(_)));
    assert_eq!(c.state(), State::Closing);
    let out = written(&mut c);
    assert_eq!(out.len(), 1, "queued data dropped, only the close frame");
    assert_eq!(close_code(&out[0]), Some(CloseCode::POLICY_VIOLATION.0));
    assert_eq!(c.send(t(2), frame), Err(SendError::NotOpen));
}

#[test]
fn eof_releases_everything() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(false, OpCode::Text, b"partial"));
    c.handle_read(t(1), &client_frame(true, OpCode::Text, b"xyz")[..3]);
    assert!(c.buffered_input() > 0);
    c.send(t(1), frame::encode(OpCode::Text, b"queued"))
        .unwrap();
    c.handle_eof(t(2));
    assert!(c.is_finished());
    assert_eq!(c.buffered_input(), 0);
    assert_eq!(c.queued_bytes(), 0);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(events(&mut c), vec![Event::Closed(CloseCause::Abnormal)]);
}

#[test]
fn eof_while_flushing_the_close_reply_finishes_at_once() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Close, b""));
    assert!(!c.is_finished(), "close reply not written yet");
    c.handle_eof(t(2));
    assert!(
        c.is_finished(),
        "the transport is gone: nothing left to flush"
    );
    assert_eq!(c.queued_bytes(), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn idle_connection_holds_no_input_buffer() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Text, b"hello"));
    assert_eq!(c.buffered_input(), 0);
    assert_eq!(
        events(&mut c),
        vec![Event::Text(Bytes::from_static(b"hello"))]
    );
}

#[test]
fn protocol_error_closes_with_code_and_stops_reading() {
    let mut c = Connection::new(t(0), config());
    let mut bad = client_frame(true, OpCode::Text, b"x");
    bad[0] |= 0x40; // RSV1 without an extension
    bad.extend(client_frame(true, OpCode::Text, b"after"));
    c.handle_read(t(1), &bad);
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(close_code(&out[0]), Some(1002));
    assert!(c.is_finished());
    let ev = events(&mut c);
    assert!(matches!(&ev[..], [Event::Closed(CloseCause::Frame(_))]));
}

#[test]
fn closed_connection_with_unread_close_frame_gives_up_after_close_timeout() {
    let mut c = Connection::new(t(0), config());
    c.handle_read(t(1), &client_frame(true, OpCode::Close, b""));
    assert_eq!(c.state(), State::Closed);
    assert!(!c.is_finished(), "close reply not written yet");
    assert_eq!(c.poll_timeout(), Some(t(2001)));
    c.handle_timeout(t(2001));
    assert!(c.is_finished());
}

/// The ping allowance: `rate` a second, and the code wavecast's `/ws`
/// closes a flood with.
fn ping_config(rate: u32) -> ConnectionConfig {
    ConnectionConfig {
        ping_rate: rate,
        ping_flood_close_code: CloseCode(4504),
        heartbeat_interval: Duration::from_secs(3600),
        ..config()
    }
}

/// One ping read at `now` (alone in its read), and the pongs it got,
/// everything queued taken as the client would read it.
fn ping(c: &mut Connection, now: Timestamp, payload: &[u8]) -> Vec<Frame> {
    c.handle_read(now, &client_frame(true, OpCode::Ping, payload));
    written(c)
}

#[test]
fn pings_within_the_allowance_are_all_answered() {
    let mut c = Connection::new(t(0), ping_config(10));
    // The burst, twice the rate, at once: each ping answered.
    for i in 0..20u8 {
        let out = ping(&mut c, t(0), &[i]);
        assert_eq!(out.len(), 1, "ping {i} of the burst");
        assert_eq!(
            (out[0].opcode, &out[0].payload[..]),
            (OpCode::Pong, &[i][..])
        );
    }
    // Then the rate, for a minute: every one answered, never closed.
    for ms in (100..60_000).step_by(100) {
        let out = ping(&mut c, t(ms), b"steady");
        assert_eq!(out.len(), 1, "the ping at {ms} ms");
        assert_eq!(out[0].opcode, OpCode::Pong);
    }
    assert_eq!(c.state(), State::Open);
}

#[test]
fn pings_over_the_burst_get_no_pong_and_the_connection_stays() {
    let mut c = Connection::new(t(0), ping_config(10));
    for _ in 0..20 {
        assert_eq!(ping(&mut c, t(0), b"p").len(), 1);
    }
    // The 21st at the same instant, and one 99 ms later (a tenth of a
    // ping refilled, not a whole one): no pong, nothing else either.
    assert!(ping(&mut c, t(0), b"over").is_empty());
    assert!(ping(&mut c, t(99), b"over").is_empty());
    assert_eq!(c.state(), State::Open);
    assert!(events(&mut c).is_empty());
    // 100 ms after the burst one ping has refilled: answered.
    let out = ping(&mut c, t(100), b"again");
    assert_eq!(&out[0].payload[..], b"again");
}

#[test]
fn a_ping_flood_still_over_five_seconds_later_is_closed_with_its_code() {
    let mut c = Connection::new(t(0), ping_config(10));
    // A hundred pings a second against an allowance of ten.
    let mut first_refused = None;
    let mut pongs = 0;
    let mut ms = 0;
    while c.state() == State::Open {
        assert!(ms <= 10_000, "a flood still open after 10 s");
        let out = ping(&mut c, t(ms), b"flood");
        match out.first().map(|f| f.opcode) {
            Some(OpCode::Pong) => pongs += 1,
            None => {
                first_refused.get_or_insert(ms);
            }
            Some(OpCode::Close) => {
                assert_eq!(close_code(&out[0]), Some(4504));
                let close = message::parse_close(&out[0].payload).unwrap().unwrap();
                assert_eq!(close.reason, "too many requests");
            }
            other => panic!("unexpected {other:?}"),
        }
        ms += 10;
    }
    let first = first_refused.expect("some pings refused");
    let closed_at = ms - 10;
    // Closed at the first refused ping 5 s after the first refusal, not
    // before (one ping every 10 ms: within 10 ms of it).
    assert!(
        (first + 5_000..first + 5_010).contains(&closed_at),
        "first refused at {first} ms, closed at {closed_at} ms"
    );
    // Meanwhile: the burst, then the allowance's rate, no more.
    assert!(pongs <= 20 + closed_at / 100 + 1, "{pongs} pongs");
    assert_eq!(c.state(), State::Closing);
    // More pings while closing: no pong.
    assert!(ping(&mut c, t(closed_at + 1), b"more").is_empty());
    // The peer answers our close: done, with the cause.
    c.handle_read(
        t(closed_at + 2),
        &client_frame(true, OpCode::Close, &4504u16.to_be_bytes()),
    );
    assert!(c.is_finished());
    let ev = events(&mut c);
    assert_eq!(ev, vec![Event::Closed(CloseCause::PingFlood)]);
    let Event::Closed(cause) = &ev[0] else {
        unreachable!()
    };
    assert_eq!(cause.code(c.config()), CloseCode(4504));
}

#[test]
fn a_ping_flood_closes_with_policy_violation_by_default() {
    // The default code (what a raw RFC 6455 endpoint, `/echo`, uses).
    let mut c = Connection::new(
        t(0),
        ConnectionConfig {
            ping_rate: 1,
            ..config()
        },
    );
    let mut ms = 0;
    while c.state() == State::Open {
        assert!(ms <= 10_000);
        c.handle_read(t(ms), &client_frame(true, OpCode::Ping, b""));
        ms += 100;
    }
    let out = written(&mut c);
    assert_eq!(close_code(out.last().unwrap()), Some(1008));
    c.handle_timeout(t(ms + 60_000));
    assert!(c.is_finished());
    assert_eq!(
        events(&mut c),
        vec![Event::Closed(CloseCause::PingFlood)],
        "the cause survives the close timeout"
    );
}

#[test]
fn slowing_down_until_the_allowance_refills_is_forgiven() {
    let mut c = Connection::new(t(0), ping_config(10));
    let flood = |c: &mut Connection, from: u64, to: u64| {
        let mut refused = 0;
        for ms in (from..to).step_by(10) {
            if ping(c, t(ms), b"f").is_empty() {
                refused += 1;
            }
            assert_eq!(c.state(), State::Open, "closed at {ms} ms");
        }
        refused
    };
    // Over the allowance for about four seconds...
    assert!(flood(&mut c, 0, 4_500) > 0);
    // ...then two seconds of silence refill the burst: a new stretch.
    assert!(flood(&mut c, 6_500, 11_000) > 0);
    // The same without the full pause is one stretch: closed.
    let mut c = Connection::new(t(0), ping_config(10));
    flood(&mut c, 0, 4_500);
    for ms in (5_500..6_000).step_by(10) {
        ping(&mut c, t(ms), b"f");
    }
    assert_eq!(c.state(), State::Closing);
}

#[test]
fn a_ping_rate_of_zero_is_no_limit() {
    let mut c = Connection::new(t(0), ping_config(0));
    for i in 0..10_000u32 {
        let out = ping(&mut c, t(1), &i.to_be_bytes());
        assert_eq!(out.len(), 1, "ping {i}");
        assert_eq!(&out[0].payload[..], &i.to_be_bytes()[..]);
    }
    assert_eq!(c.state(), State::Open);
}
