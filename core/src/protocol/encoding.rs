//! Encodings and limits: the two subprotocols (JSON in text frames,
//! MessagePack in binary frames), [`Encoding`], and the bounds every decoder
//! applies (nesting depth, channel name length).

use crate::frame::OpCode;

/// Subprotocol name of the JSON encoding (also the default when the client
/// asks for no subprotocol).
pub const SUBPROTOCOL_JSON: &str = "wavecast.json";
/// Subprotocol name of the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "wavecast.msgpack";
/// The subprotocols the server offers, in its order of preference when a
/// client offers several (JSON first: it is the documented default).
pub const SUBPROTOCOLS: [&str; 2] = [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK];

/// Deepest nesting of arrays and objects allowed inside publication data
/// (`[]` is depth 1, `[[1]]` depth 2). Bounds recursion in every decoder and
/// transcoder, so hostile data cannot exhaust the stack; the same limit holds
/// in both encodings, so any valid payload can be sent to any client.
pub const MAX_DATA_DEPTH: usize = 64;

/// Depth allowed for a whole MessagePack frame while it is transcoded: the
/// envelope and the command body wrap the data in two more levels.
pub(super) const MAX_FRAME_DEPTH: usize = MAX_DATA_DEPTH + 2;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Separates a channel's namespace from the rest of its name (`chat:room1`).
pub const NAMESPACE_SEPARATOR: char = ':';

/// The encoding of one connection, chosen once by subprotocol at the
/// handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    /// JSON in text frames (`wavecast.json`, or no subprotocol).
    Json,
    /// MessagePack in binary frames (`wavecast.msgpack`).
    MsgPack,
}

impl Encoding {
    /// Every encoding, in [`Encoding::index`] order: fan-out encodes a
    /// publication at most once per entry.
    pub const ALL: [Encoding; 2] = [Encoding::Json, Encoding::MsgPack];

    /// The encoding named by the negotiated subprotocol: `None` (the client
    /// asked for none) and `wavecast.json` mean JSON, `wavecast.msgpack`
    /// means MessagePack; any other name is not ours and gives `None`.
    pub fn from_subprotocol(subprotocol: Option<&str>) -> Option<Encoding> {
        match subprotocol {
            None | Some(SUBPROTOCOL_JSON) => Some(Encoding::Json),
            Some(SUBPROTOCOL_MSGPACK) => Some(Encoding::MsgPack),
            Some(_) => None,
        }
    }

    /// The subprotocol name of this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// The frame type this encoding travels in, both ways: JSON in text
    /// frames, MessagePack in binary frames. A message of the other type on
    /// a connection is a bad command.
    pub fn frame_opcode(self) -> OpCode {
        match self {
            Encoding::Json => OpCode::Text,
            Encoding::MsgPack => OpCode::Binary,
        }
    }

    /// A dense index (0 for JSON, 1 for MessagePack) for per-encoding arrays
    /// such as "this publication, encoded once per encoding".
    pub fn index(self) -> usize {
        match self {
            Encoding::Json => 0,
            Encoding::MsgPack => 1,
        }
    }
}
