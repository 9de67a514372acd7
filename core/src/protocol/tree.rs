//! [`Tree`], the shape of an outgoing message, written by one JSON and one
//! MessagePack writer so both encodings have the same fields by
//! construction. Replies, pushes and encoded commands are built as trees;
//! only the fan-out's publication push (`encode_pub`) is written by hand.

use super::encoding::Encoding;
use super::payload::Payload;
use super::write::{mp_array_len, mp_map_len, mp_str, mp_uint, push_json_str, push_u64};

/// The shape of an outgoing message, written by one JSON and one
/// MessagePack writer so both encodings have the same fields by
/// construction.
pub(super) enum Tree<'a> {
    Map(Vec<(&'a str, Tree<'a>)>),
    Array(Vec<Tree<'a>>),
    Str(&'a str),
    U64(u64),
    Bool(bool),
    Data(&'a Payload),
}

impl Tree<'_> {
    pub(super) fn write(&self, encoding: Encoding, out: &mut Vec<u8>) {
        match encoding {
            Encoding::Json => self.write_json(out),
            Encoding::MsgPack => self.write_msgpack(out),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Map(entries) => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_str(out, key);
                    out.push(b':');
                    value.write_json(out);
                }
                out.push(b'}');
            }
            Tree::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Tree::Str(s) => push_json_str(out, s),
            Tree::U64(n) => push_u64(out, *n),
            Tree::Bool(b) => out.extend_from_slice(if *b { b"true" as &[u8] } else { b"false" }),
            Tree::Data(payload) => out.extend_from_slice(payload.as_json()),
        }
    }

    fn write_msgpack(&self, out: &mut Vec<u8>) {
        match self {
            Tree::Map(entries) => {
                mp_map_len(out, entries.len());
                for (key, value) in entries {
                    mp_str(out, key);
                    value.write_msgpack(out);
                }
            }
            Tree::Array(items) => {
                mp_array_len(out, items.len());
                for item in items {
                    item.write_msgpack(out);
                }
            }
            Tree::Str(s) => mp_str(out, s),
            Tree::U64(n) => mp_uint(out, *n),
            Tree::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Tree::Data(payload) => payload.write_msgpack(out),
        }
    }
}
