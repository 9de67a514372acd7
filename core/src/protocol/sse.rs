//! The Server-Sent Events wire format (`GET /sse`, docs/PROTOCOL.md
//! "Server-Sent Events"): the events a stream carries, and the encoding of
//! a stream's positions in its event ids ([`write_id`], [`parse_id`]).
//!
//! An event is a few `field: value` lines and a blank line. Every `data`
//! is one line of JSON: JSON strings never hold a raw CR or LF (they are
//! escaped), so the CR and LF bytes a published payload may carry are
//! whitespace between tokens, and are sent as spaces.
//!
//! A publication's event is written once per publication and shared by
//! every stream ([`pub_event`]); the id line before it is each stream's
//! own ([`id_line`]), since it holds that stream's positions.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;

use super::command::StreamPosition;
use super::payload::Payload;
use super::reply::{ClientInfo, Publication};
use super::tree::Tree;
use super::write::{push_json_str, push_u64};

/// The heartbeat comment, sent every heartbeat interval: one static
/// buffer, so every stream's queue holds the same bytes.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Why a channel of a stream could not be resumed from its position (the
/// `reason` of a `gap` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The channel's stream has another epoch: its history was lost.
    EpochChanged,
    /// History no longer reaches back to the position (size or age).
    HistoryExpired,
    /// The position is past the channel's last offset.
    UnknownPosition,
}

impl GapReason {
    /// The reason the server gives for not recovering `asked`, the
    /// channel being at `now`.
    pub fn of(asked: &StreamPosition, now: &StreamPosition) -> GapReason {
        if asked.epoch != now.epoch {
            GapReason::EpochChanged
        } else if asked.offset > now.offset {
            GapReason::UnknownPosition
        } else {
            GapReason::HistoryExpired
        }
    }

    /// As the event says it.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::EpochChanged => "epoch changed",
            GapReason::HistoryExpired => "history expired",
            GapReason::UnknownPosition => "unknown position",
        }
    }
}

/// One channel of an `open` event: where the stream starts in it, and, for
/// a channel resumed from a position, whether everything after that
/// position follows (`Some(true)`) or a `gap` event does (`Some(false)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpenChannel {
    /// The channel.
    pub channel: String,
    /// Its position in the stream (the id's entry).
    pub position: StreamPosition,
    /// `None`: subscribed afresh; `Some`: resumed, and whether recovered.
    pub recovered: Option<bool>,
}

/// The `open` event's contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Open {
    /// The stream's client id.
    pub client: String,
    /// Its user (empty: anonymous).
    pub user: String,
    /// Seconds until its token expires (`None`: it does not).
    pub ttl: Option<u64>,
    /// Its channels, in the stream's order.
    pub channels: Vec<OpenChannel>,
}

/// `id: ...\n`: the positions of a stream in each of its channels, in the
/// stream's order (see [`write_id`]).
pub fn id_line<'a>(positions: impl ExactSizeIterator<Item = &'a StreamPosition>) -> Bytes {
    let mut out = Vec::with_capacity(8 + positions.len() * 28);
    out.extend_from_slice(b"id: ");
    write_id(&mut out, positions.map(Some));
    out.push(b'\n');
    Bytes::from(out)
}

/// `event: pub` and its data, up to the blank line that ends the event:
/// the part of a publication's event that every stream shares (the id
/// line goes before it).
pub fn pub_event(channel: &str, publication: &Publication) -> Bytes {
    let data = publication.data.as_json();
    let mut out = Vec::with_capacity(data.len() + channel.len() + 64);
    out.extend_from_slice(b"event: pub\ndata: {\"channel\":");
    push_json_str(&mut out, channel);
    out.extend_from_slice(b",\"offset\":");
    push_u64(&mut out, publication.offset);
    out.extend_from_slice(b",\"data\":");
    let start = out.len();
    out.extend_from_slice(data);
    one_line(&mut out[start..]);
    if let Some(info) = &publication.info {
        out.extend_from_slice(b",\"info\":");
        let start = out.len();
        client_tree(info, None).write(super::Encoding::Json, &mut out);
        one_line(&mut out[start..]);
    }
    out.extend_from_slice(b"}\n\n");
    Bytes::from(out)
}

/// The `open` event without its id line: `retry:` (the browser's
/// reconnection delay), `event: open` and its data.
pub fn open_event(retry: Duration, open: &Open) -> Bytes {
    let channels = open
        .channels
        .iter()
        .map(|c| {
            let mut fields = vec![
                ("epoch", Tree::Str(&c.position.epoch)),
                ("offset", Tree::U64(c.position.offset)),
            ];
            if let Some(recovered) = c.recovered {
                fields.push(("recovered", Tree::Bool(recovered)));
            }
            (c.channel.as_str(), Tree::Map(fields))
        })
        .collect();
    let mut fields = vec![
        ("client", Tree::Str(&open.client)),
        ("user", Tree::Str(&open.user)),
        ("expires", Tree::Bool(open.ttl.is_some())),
    ];
    if let Some(ttl) = open.ttl {
        fields.push(("ttl", Tree::U64(ttl)));
    }
    fields.push(("channels", Tree::Map(channels)));
    let mut out = Vec::with_capacity(128);
    let _ = writeln!(Lines(&mut out), "retry: {}", retry.as_millis());
    event(out, "open", &Tree::Map(fields))
}

/// The `gap` event without its id line: `channel` goes on from `at`.
pub fn gap_event(channel: &str, at: &StreamPosition, reason: GapReason) -> Bytes {
    let data = Tree::Map(vec![
        ("channel", Tree::Str(channel)),
        ("epoch", Tree::Str(&at.epoch)),
        ("offset", Tree::U64(at.offset)),
        ("reason", Tree::Str(reason.as_str())),
    ]);
    event(Vec::with_capacity(96), "gap", &data)
}

/// A `join` or `leave` event (`kind`), which has no id.
pub fn presence_event(kind: &str, channel: &str, info: &ClientInfo) -> Bytes {
    event(
        Vec::with_capacity(96),
        kind,
        &client_tree(info, Some(channel)),
    )
}

/// An `unsubscribe` event: the server ended a channel of the stream for
/// good (a code the client would not resubscribe after).
pub fn unsubscribe_event(channel: &str, code: u16, reason: &str) -> Bytes {
    let data = Tree::Map(vec![
        ("channel", Tree::Str(channel)),
        ("code", Tree::U64(code.into())),
        ("reason", Tree::Str(reason)),
    ]);
    event(Vec::with_capacity(96), "unsubscribe", &data)
}

/// The `close` event: the server ends the stream with a close code.
pub fn close_event(code: u16, reason: &str) -> Bytes {
    let data = Tree::Map(vec![
        ("code", Tree::U64(code.into())),
        ("reason", Tree::Str(reason)),
    ]);
    event(Vec::with_capacity(64), "close", &data)
}

/// `event: KIND\ndata: JSON\n\n` after what `out` holds.
fn event(mut out: Vec<u8>, kind: &str, data: &Tree<'_>) -> Bytes {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let start = out.len();
    data.write(super::Encoding::Json, &mut out);
    one_line(&mut out[start..]);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A client as a `join`/`leave` event or a sender shows it, with the
/// channel first when given.
fn client_tree<'a>(info: &'a ClientInfo, channel: Option<&'a str>) -> Tree<'a> {
    let mut fields = Vec::with_capacity(5);
    if let Some(channel) = channel {
        fields.push(("channel", Tree::Str(channel)));
    }
    fields.push(("client", Tree::Str(&info.client)));
    fields.push(("user", Tree::Str(&info.user)));
    let payloads: [(&str, &Option<Payload>); 2] = [
        ("conn_info", &info.conn_info),
        ("chan_info", &info.chan_info),
    ];
    for (key, value) in payloads {
        if let Some(value) = value {
            fields.push((key, Tree::Data(value)));
        }
    }
    Tree::Map(fields)
}

/// JSON text as one line: CR and LF can only be whitespace between
/// tokens (inside strings they are escaped), so they become spaces.
fn one_line(json: &mut [u8]) {
    for b in json.iter_mut() {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Lines<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Lines<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Bytes of an epoch kept as they are in an id; every other byte is
/// written `%XX`, so `.` and `,` (the id's separators) never occur in one.
fn id_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// Writes an id: one entry per channel in the stream's order, joined by
/// `,`; an entry is `EPOCH.OFFSET` (the epoch with every byte outside
/// `A-Z a-z 0-9 - _ ~` as `%XX`, the offset in decimal), or empty for a
/// channel without a position (in a `since` only: the server always knows
/// its streams' positions).
pub fn write_id<'a>(
    out: &mut Vec<u8>,
    positions: impl Iterator<Item = Option<&'a StreamPosition>>,
) {
    for (i, position) in positions.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(p) = position else { continue };
        for &b in p.epoch.as_bytes() {
            if id_safe(b) {
                out.push(b);
            } else {
                let _ = write!(Lines(out), "%{b:02X}");
            }
        }
        out.push(b'.');
        push_u64(out, p.offset);
    }
}

/// The id of these positions, as [`write_id`] writes it (for clients and
/// tests; a `since` may leave channels without one).
pub fn encode_id(positions: &[Option<StreamPosition>]) -> String {
    let mut out = Vec::new();
    write_id(&mut out, positions.iter().map(Option::as_ref));
    // Only ASCII is written.
    String::from_utf8(out).unwrap_or_default()
}

/// Why an id (a `Last-Event-ID` or a `since`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// It has another number of entries than the stream has channels.
    #[error("{found} positions for {expected} channels")]
    Count {
        /// The stream's channels.
        expected: usize,
        /// The id's entries.
        found: usize,
    },
    /// An entry is not `EPOCH.OFFSET` (or empty).
    #[error("position {index} is malformed: {why}")]
    Entry {
        /// Which entry, from 0.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Reads an id of a stream of `channels` channels: one position (or none)
/// per channel, in the stream's order.
pub fn parse_id(text: &str, channels: usize) -> Result<Vec<Option<StreamPosition>>, IdError> {
    let entries: Vec<&str> = text.split(',').collect();
    if entries.len() != channels {
        return Err(IdError::Count {
            expected: channels,
            found: entries.len(),
        });
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| parse_entry(entry).map_err(|why| IdError::Entry { index, why }))
        .collect()
}

fn parse_entry(entry: &str) -> Result<Option<StreamPosition>, &'static str> {
    if entry.is_empty() {
        return Ok(None);
    }
    let (epoch, offset) = entry.split_once('.').ok_or("no `.` before the offset")?;
    if offset.is_empty() || offset.len() > 20 || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the offset is not a decimal number");
    }
    let offset: u64 = offset.parse().map_err(|_| "the offset is too large")?;
    let mut bytes = Vec::with_capacity(epoch.len());
    let mut rest = epoch.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or("a `%` without two hex digits")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a `%` without two hex digits")?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| "a `%` without two hex digits")?;
            bytes.push(v);
            rest = &tail[2..];
        } else if id_safe(b) {
            bytes.push(b);
            rest = tail;
        } else {
            return Err("the epoch has a byte that should be %-encoded");
        }
    }
    let epoch = String::from_utf8(bytes).map_err(|_| "the epoch is not UTF-8")?;
    Ok(Some(StreamPosition { epoch, offset }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn ids_round_trip_with_odd_epochs_and_empty_entries() {
        let cases: Vec<Vec<Option<StreamPosition>>> = vec![
            vec![Some(pos("9f2c41d07a5be310", 41))],
            vec![
                Some(pos("1712345678000123-42", 0)),
                None,
                Some(pos("e", u64::MAX)),
            ],
            vec![None],
            vec![None, None],
            vec![Some(pos("a.b,c%d é", 7)), Some(pos("", 3))],
        ];
        for positions in cases {
            let id = encode_id(&positions);
            assert!(id.is_ascii(), "{id}");
            assert_eq!(id.matches(',').count(), positions.len() - 1, "{id}");
            assert_eq!(
                parse_id(&id, positions.len()),
                Ok(positions.clone()),
                "{id}"
            );
        }
        assert_eq!(
            encode_id(&[Some(pos("a.b,c", 7))]),
            "a%2Eb%2Cc.7",
            "separators inside an epoch are escaped"
        );
        assert_eq!(
            &id_line([pos("E", 11), pos("F", 0)].iter())[..],
            b"id: E.11,F.0\n"
        );
    }

    #[test]
    fn malformed_ids_are_refused_not_guessed() {
        assert_eq!(
            parse_id("E.1,F.2", 3),
            Err(IdError::Count {
                expected: 3,
                found: 2
            })
        );
        for bad in [
            "E",
            "E.",
            "E.x",
            "E.-1",
            "E.+1",
            "E.1.2",
            "E f.1",
            "E%2.1",
            "E%zz.1",
            "E%FF.1",
            ".1x",
            "E.123456789012345678901",
        ] {
            assert!(
                matches!(parse_id(bad, 1), Err(IdError::Entry { index: 0, .. })),
                "accepted {bad:?}"
            );
        }
        assert_eq!(
            parse_id("E.18446744073709551615", 1).unwrap()[0]
                .as_ref()
                .unwrap()
                .offset,
            u64::MAX
        );
        assert!(parse_id("E.18446744073709551616", 1).is_err());
    }

    #[test]
    fn events_are_one_line_of_json_each() {
        let publication = Publication {
            offset: 12,
            data: Payload::from_json(b"{\n  \"text\": \"a\\nb\"\r\n}").unwrap(),
            info: Some(Box::new(ClientInfo {
                client: "c-1".into(),
                user: "42".into(),
                conn_info: Some(Payload::from_json(b"[1,\n2]").unwrap()),
                chan_info: None,
            })),
        };
        let event = pub_event("chat:room", &publication);
        assert_eq!(
            std::str::from_utf8(&event).unwrap(),
            "event: pub\ndata: {\"channel\":\"chat:room\",\"offset\":12,\"data\":{   \"text\": \"a\\nb\"  },\"info\":{\"client\":\"c-1\",\"user\":\"42\",\"conn_info\":[1, 2]}}\n\n"
        );
        let json = &event["event: pub\ndata: ".len()..event.len() - 2];
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(v["data"]["text"], "a\nb", "string contents are kept");
        let plain = Publication {
            offset: 1,
            data: Payload::from_json(b"null").unwrap(),
            info: None,
        };
        assert_eq!(
            &pub_event("a", &plain)[..],
            b"event: pub\ndata: {\"channel\":\"a\",\"offset\":1,\"data\":null}\n\n"
        );
        let open = Open {
            client: "c".into(),
            user: String::new(),
            ttl: Some(60),
            channels: vec![
                OpenChannel {
                    channel: "a".into(),
                    position: pos("E", 3),
                    recovered: Some(true),
                },
                OpenChannel {
                    channel: "b".into(),
                    position: pos("F", 0),
                    recovered: None,
                },
            ],
        };
        assert_eq!(
            std::str::from_utf8(&open_event(Duration::from_millis(2417), &open)).unwrap(),
            "retry: 2417\nevent: open\ndata: {\"client\":\"c\",\"user\":\"\",\"expires\":true,\"ttl\":60,\"channels\":{\"a\":{\"epoch\":\"E\",\"offset\":3,\"recovered\":true},\"b\":{\"epoch\":\"F\",\"offset\":0}}}\n\n"
        );
        assert_eq!(
            &gap_event("a", &pos("G", 0), GapReason::EpochChanged)[..],
            b"event: gap\ndata: {\"channel\":\"a\",\"epoch\":\"G\",\"offset\":0,\"reason\":\"epoch changed\"}\n\n"
        );
        assert_eq!(
            &close_event(4005, "token expired")[..],
            b"event: close\ndata: {\"code\":4005,\"reason\":\"token expired\"}\n\n"
        );
        assert_eq!(
            GapReason::of(&pos("E", 9), &pos("E", 5)),
            GapReason::UnknownPosition
        );
        assert_eq!(
            GapReason::of(&pos("E", 2), &pos("E", 5)),
            GapReason::HistoryExpired
        );
        assert_eq!(
            GapReason::of(&pos("D", 2), &pos("E", 5)),
            GapReason::EpochChanged
        );
    }
}
