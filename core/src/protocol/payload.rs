//! Publication data ([`Payload`]): held as validated JSON text, built from
//! JSON (validated once, with a depth bound) or MessagePack (transcoded
//! once).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::encoding::MAX_DATA_DEPTH;
use super::error::PayloadError;
use super::transcode::msgpack_to_json;
use super::write::mp_value;

/// Publication data in canonical form: one valid JSON value as text, shared
/// (cloning is a reference count). Built from JSON bytes (validated) or from
/// a MessagePack value (transcoded once). Its invariant, which the encoders
/// rely on: the bytes are one JSON value of nesting depth at most
/// [`MAX_DATA_DEPTH`] whose numbers fit an `f64`, without leading or trailing
/// whitespace; so it can be spliced into JSON and transcoded to MessagePack.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// Validates JSON bytes (an HTTP body, a test literal) and copies them.
    pub fn from_json(json: &[u8]) -> Result<Payload, PayloadError> {
        let trimmed = trim_json_whitespace(json);
        validate_json(trimmed)?;
        Ok(Payload(Bytes::copy_from_slice(trimmed)))
    }

    /// Validates JSON bytes and keeps them without a copy.
    pub fn from_json_bytes(json: Bytes) -> Result<Payload, PayloadError> {
        let trimmed = trim_json_whitespace(&json);
        validate_json(trimmed)?;
        Ok(Payload(json.slice_ref(trimmed)))
    }

    /// Transcodes one MessagePack value to JSON text. Values with no JSON
    /// equivalent (binary, extensions, non-string map keys, NaN and
    /// infinities) are refused.
    pub fn from_msgpack(msgpack: &[u8]) -> Result<Payload, PayloadError> {
        let json = msgpack_to_json(msgpack, MAX_DATA_DEPTH).map_err(PayloadError::MsgPack)?;
        Ok(Payload(Bytes::from(json)))
    }

    /// The JSON `null`.
    pub fn null() -> Payload {
        Payload(Bytes::from_static(b"null"))
    }

    /// The data as JSON text (valid UTF-8).
    pub fn as_json(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes of the JSON text.
    pub fn json_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The data as one MessagePack value (maps with string keys; integers as
    /// MessagePack integers, other numbers as float 64).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len());
        self.write_msgpack(&mut out);
        out
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a JSON value is at least one byte long. Present because
    /// `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn write_msgpack(&self, out: &mut Vec<u8>) {
        match serde_json::from_slice::<serde_json::Value>(&self.0) {
            Ok(value) => mp_value(out, &value),
            // Unreachable: the constructors validated the text with the same
            // parser and a tighter depth limit. Writing nil keeps the frame
            // well-formed rather than panicking in the server.
            Err(_) => {
                debug_assert!(false, "Payload invariant broken");
                out.push(0xc0);
            }
        }
    }
}

pub(super) fn trim_json_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn validate_json(json: &[u8]) -> Result<(), PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    ValidateSeed { depth: 0 }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| PayloadError::Json(e.to_string()))
}

/// Walks a JSON value without building it, checking what serde_json's
/// skipping parser does not: numbers in range, strings (keys included) fully
/// decoded (lone surrogates), and the depth limit.
struct ValidateSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValidateSeed {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValidateSeed {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        while seq.next_element_seed(ValidateSeed { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        while map.next_key::<StrOnly>()?.is_some() {
            map.next_value_seed(ValidateSeed { depth })?;
        }
        Ok(())
    }
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    let depth = depth.saturating_add(1);
    if depth > MAX_DATA_DEPTH {
        Err(E::custom(format_args!(
            "nested deeper than {MAX_DATA_DEPTH} levels"
        )))
    } else {
        Ok(depth)
    }
}

/// A map key that must be a string (forces full decoding of its escapes).
struct StrOnly;

impl<'de> Deserialize<'de> for StrOnly {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<StrOnly, D::Error> {
        deserializer.deserialize_str(StrOnly)
    }
}

impl Visitor<'_> for StrOnly {
    type Value = StrOnly;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, _: &str) -> Result<StrOnly, E> {
        Ok(StrOnly)
    }
}
