//! MessagePack to JSON: transcodes one MessagePack value to compact JSON
//! text, refusing what JSON cannot express and nesting past a bound. Used
//! for MessagePack publish data and MessagePack command frames.

use std::fmt;
use std::io::Cursor;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::write::{push_json_str, push_u64};

/// Transcodes exactly one MessagePack value to compact JSON text, refusing
/// what JSON cannot express and nesting deeper than `max_depth`.
pub(super) fn msgpack_to_json(bytes: &[u8], max_depth: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
    // The reader-based deserializer (not the slice one) reports how far it
    // read, which the trailing-bytes check needs; it copies strings into a
    // scratch buffer, which the output copies anyway.
    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    ToJson {
        out: &mut out,
        depth: 0,
        max_depth,
        comma: false,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    ensure_consumed(de.position(), bytes.len())?;
    Ok(out)
}

/// Writes the value it is given as JSON to `out`, after a comma if `comma`
/// (the seed is only run when an element exists, which is how elements get
/// their separators without knowing the count).
struct ToJson<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    max_depth: usize,
    comma: bool,
}

impl ToJson<'_> {
    fn child(&mut self, comma: bool) -> Result<ToJson<'_>, String> {
        let depth = self.depth.saturating_add(1);
        if depth > self.max_depth {
            return Err(format!("nested deeper than {} levels", self.max_depth));
        }
        Ok(ToJson {
            out: self.out,
            depth,
            max_depth: self.max_depth,
            comma,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ToJson<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b',');
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToJson<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value with a JSON equivalent")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        push_u64(self.out, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        if v < 0 {
            self.out.push(b'-');
        }
        push_u64(self.out, v.unsigned_abs());
        Ok(())
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("NaN or infinity has no JSON equivalent"));
        }
        // Debug formatting of a finite float is a valid JSON number that
        // reads back as the same value ("1.0", "1e-7"), and keeps a
        // fraction so the value stays a float on the way back.
        self.out.extend_from_slice(format!("{v:?}").as_bytes());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("NaN or infinity has no JSON equivalent"));
        }
        self.out.extend_from_slice(format!("{v:?}").as_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        push_json_str(self.out, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.child(false).map_err(de::Error::custom)?;
        self.out.push(b'[');
        let mut first = true;
        while seq
            .next_element_seed(self.child(!first).map_err(de::Error::custom)?)?
            .is_some()
        {
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.child(false).map_err(de::Error::custom)?;
        self.out.push(b'{');
        let mut first = true;
        while map
            .next_key_seed(KeyToJson {
                out: self.out,
                comma: !first,
            })?
            .is_some()
        {
            first = false;
            self.out.push(b':');
            map.next_value_seed(self.child(false).map_err(de::Error::custom)?)?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// Writes a map key, which must be a string (JSON has no other keys).
struct KeyToJson<'o> {
    out: &'o mut Vec<u8>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for KeyToJson<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyToJson<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string map key (JSON has no other keys)")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.comma {
            self.out.push(b',');
        }
        push_json_str(self.out, v);
        Ok(())
    }
}

pub(super) fn ensure_consumed(position: u64, len: usize) -> Result<(), String> {
    if usize::try_from(position).ok() == Some(len) {
        Ok(())
    } else {
        Err("trailing bytes after the value".into())
    }
}
