//! Property tests of permessage-deflate: every message compressed by our
//! codec inflates back to itself, however the compressed bytes are cut
//! into frames and the frames into reads; and the inflater's answer to any
//! bytes is a message within the limit or an error, never more.

// proptest's `prop_oneof!` builds its union strategy with `std::sync::Arc`;
// that is the test harness, not core, so core's no-Arc rule does not apply.
#![allow(clippy::disallowed_types)]

mod common;

use proptest::prelude::*;
use wavecast_core::connection::{Connection, ConnectionConfig, Event};
use wavecast_core::deflate::{Codec, InflateError};
use wavecast_core::frame::{self, OpCode};
use wavecast_core::Timestamp;

const MAX: usize = 64 * 1024;

/// Messages that compress (repetitive) and ones that do not (any bytes).
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (proptest::collection::vec(0u8..4, 1..40), 0usize..200)
            .prop_map(|(unit, n)| { unit.iter().cycle().take(unit.len() * n).copied().collect() }),
    ]
}

/// Cuts `data` at the given points (taken modulo its length).
fn cut(data: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = points
        .iter()
        .map(|p| if data.is_empty() { 0 } else { p % data.len() })
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for p in at {
        if p > start {
            out.push(data[start..p].to_vec());
            start = p;
        }
    }
    out.push(data[start..].to_vec());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// compress then inflate is the identity, at every level.
    #[test]
    fn codec_round_trip(msg in message(), level in 0u32..10) {
        let mut c = Codec::new(level);
        let z = c.compress(&msg).unwrap().to_vec();
        prop_assert_eq!(c.inflate(&z, msg.len()), Ok(msg.clone()));
        if !msg.is_empty() {
            prop_assert_eq!(
                c.inflate(&z, msg.len() - 1),
                Err(InflateError::TooLarge { max: msg.len() - 1 })
            );
        }
    }

    /// Through a connection: fragments at any cut points (RSV1 on the
    /// first), the wire bytes read at any cut points.
    #[test]
    fn connection_round_trip_at_every_chunking(
        msg in message(),
        binary in any::<bool>(),
        frags in proptest::collection::vec(any::<usize>(), 0..6),
        reads in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let op = if binary { OpCode::Binary } else { OpCode::Text };
        // Text is made valid UTF-8 before it is compressed.
        let msg = if binary { msg } else { String::from_utf8_lossy(&msg).into_owned().into_bytes() };
        let z = Codec::new(1).compress(&msg).unwrap().to_vec();
        let pieces = cut(&z, &frags);
        let mut wire = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let opcode = if i == 0 { op } else { OpCode::Continuation };
            let mut f = common::masked(i + 1 == pieces.len(), opcode, p, [1, 2, 3, 4]);
            if i == 0 {
                frame::set_rsv1(&mut f);
            }
            wire.extend_from_slice(&f);
        }
        let mut c = Connection::new(Timestamp::ZERO, ConnectionConfig { max_message_size: MAX, ..ConnectionConfig::default() });
        c.enable_deflate();
        let mut codec = Codec::new(1);
        for r in cut(&wire, &reads) {
            c.handle_read_with(Timestamp::ZERO, &r, Some(&mut codec));
        }
        let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        let expected = if binary { Event::Binary(msg.into()) } else { Event::Text(msg.into()) };
        prop_assert_eq!(events, vec![expected]);
    }

    /// Any bytes: the inflater gives at most `max` bytes or an error.
    #[test]
    fn inflate_of_any_bytes_is_bounded(data in proptest::collection::vec(any::<u8>(), 0..2000), max in 0usize..5000) {
        let mut c = Codec::new(1);
        if let Ok(out) = c.inflate(&data, max) {
            prop_assert!(out.len() <= max);
        }
    }
}
