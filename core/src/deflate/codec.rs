//! The message codec of permessage-deflate without context takeover
//! (RFC 7692 section 7.2): one deflater and one inflater, reset for every
//! message, shared by every connection of a shard.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::close::CloseCode;

/// The four bytes a sync flush ends with (an empty stored block, section
/// 7.2.1): removed from every compressed message, appended again before
/// inflating one (section 7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Bytes inflated per step: the output is checked against the limit after
/// every step, so a bomb costs at most the limit, never more.
const CHUNK: usize = 16 * 1024;

/// A compressed message the peer sent that cannot be accepted. The peer is
/// at fault; fail the connection with [`InflateError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InflateError {
    /// Inflated, the message would be larger than the endpoint accepts
    /// (found while inflating: the output never grows past the limit).
    #[error("peer sent a compressed message that inflates past {max} bytes")]
    TooLarge {
        /// Configured limit (`max_message_size`).
        max: usize,
    },
    /// The payload is not a valid deflate stream (RFC 1951), or carries
    /// bytes after the end of one.
    #[error("peer sent invalid deflate data")]
    Invalid,
}

impl InflateError {
    /// 1009 (message too big) past the limit; 1007 (invalid payload data)
    /// for data that does not inflate: the message's payload is not
    /// consistent with its type, as for invalid UTF-8.
    pub fn close_code(&self) -> CloseCode {
        match self {
            InflateError::TooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            InflateError::Invalid => CloseCode::INVALID_PAYLOAD,
        }
    }
}

/// A shard's deflater and inflater (raw deflate, 32 KiB window), reset
/// before every message: there is no context between messages, so one
/// codec serves every connection of the shard.
///
/// The state machine that owns it must stay `Clone + Eq + Hash` (the
/// model checker hashes nodes): a clone is a fresh codec of the same
/// level, and two codecs are equal when their levels are, which is exact
/// because no state survives a call.
pub struct Codec {
    level: u32,
    deflate: Compress,
    inflate: Decompress,
    /// Output of the compressor, kept between messages (a shard's one
    /// buffer, not a connection's).
    compressed: Vec<u8>,
    /// One step of the inflater's output.
    chunk: Vec<u8>,
}

impl Codec {
    /// A codec compressing at `level` (0-9, clamped).
    pub fn new(level: u32) -> Self {
        let level = level.min(9);
        Codec {
            level,
            deflate: Compress::new(Compression::new(level), false),
            inflate: Decompress::new(false),
            compressed: Vec::new(),
            chunk: Vec::new(),
        }
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Compresses one message (section 7.2.1): a raw deflate stream ended
    /// with a sync flush, its `00 00 ff ff` tail removed. The result is the
    /// payload of a frame with RSV1 set. `None` only if the deflater
    /// reports an error (then send the message uncompressed).
    pub fn compress(&mut self, message: &[u8]) -> Option<&[u8]> {
        self.deflate.reset();
        self.compressed.clear();
        let start = self.deflate.total_in();
        loop {
            let consumed = usize::try_from(self.deflate.total_in() - start).ok()?;
            let rest = message.get(consumed..)?;
            // Room for the rest at no compression plus the flush's bytes;
            // the loop goes on while a call fills all the room it had.
            self.compressed.reserve(rest.len() / 2 + 64);
            let before = self.compressed.len();
            let room = self.compressed.capacity() - before;
            self.deflate
                .compress_vec(rest, &mut self.compressed, FlushCompress::Sync)
                .ok()?;
            let produced = self.compressed.len() - before;
            let all_in = usize::try_from(self.deflate.total_in() - start).ok()? == message.len();
            if all_in && produced < room {
                break;
            }
        }
        if self.compressed.ends_with(&TAIL) {
            self.compressed.truncate(self.compressed.len() - TAIL.len());
        }
        Some(&self.compressed)
    }

    /// Inflates one message (section 7.2.2): `data` (the payloads of its
    /// frames, joined) followed by the `00 00 ff ff` tail. Inflation goes
    /// in steps of 16 KiB and stops with [`InflateError::TooLarge`] at the
    /// first step that would take the message past `max` bytes, so the
    /// output never holds more than `max`.
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        self.inflate.reset(false);
        self.chunk.resize(CHUNK, 0);
        let mut out = Vec::new();
        let tail = TAIL;
        for input in [data, &tail[..]] {
            let start = self.inflate.total_in();
            loop {
                let pos = usize::try_from(self.inflate.total_in() - start)
                    .map_err(|_| InflateError::Invalid)?;
                let rest = input.get(pos..).unwrap_or(&[]);
                let before = self.inflate.total_out();
                let status = self
                    .inflate
                    .decompress(rest, &mut self.chunk, FlushDecompress::None)
                    .map_err(|_| InflateError::Invalid)?;
                let produced = usize::try_from(self.inflate.total_out() - before)
                    .map_err(|_| InflateError::Invalid)?;
                let consumed = usize::try_from(self.inflate.total_in() - start)
                    .map_err(|_| InflateError::Invalid)?
                    - pos;
                match out.len().checked_add(produced) {
                    Some(total) if total <= max => {}
                    _ => return Err(InflateError::TooLarge { max }),
                }
                out.extend_from_slice(self.chunk.get(..produced).unwrap_or(&[]));
                if status == Status::StreamEnd {
                    // A final block (BFINAL) ended the stream (section
                    // 7.2.3.4): what follows it is not data (the RFC's
                    // own example has a byte there), and is ignored, as
                    // zlib-based peers do.
                    return Ok(out);
                }
                let exhausted = consumed == rest.len();
                if exhausted && produced < CHUNK {
                    break;
                }
                if consumed == 0 && produced == 0 {
                    // No progress with input left: not a deflate stream.
                    return Err(InflateError::Invalid);
                }
            }
        }
        Ok(out)
    }
}

impl Clone for Codec {
    fn clone(&self) -> Self {
        Codec::new(self.level)
    }
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        self.level == other.level
    }
}

impl Eq for Codec {}

impl std::hash::Hash for Codec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.level.hash(state);
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("level", &self.level).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section 7.2.3.1: "Hello" compressed without context takeover is
    /// `f2 48 cd c9 c9 07 00`; we inflate the RFC's bytes.
    #[test]
    fn rfc_7_2_3_1_hello_inflates() {
        let mut c = Codec::new(1);
        let out = c.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100);
        assert_eq!(out.as_deref(), Ok(&b"Hello"[..]));
    }

    /// Section 7.2.3.3: a stored (uncompressed) block is valid too.
    #[test]
    fn rfc_7_2_3_3_stored_block() {
        let mut c = Codec::new(1);
        let data = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(c.inflate(&data, 100).as_deref(), Ok(&b"Hello"[..]));
    }

    /// Section 7.2.3.4: a message may end with a final block (BFINAL):
    /// `f3 48 cd c9 c9 07 00 00`; what follows the final block (here a
    /// byte, then the appended tail) is not data.
    #[test]
    fn rfc_7_2_3_4_bfinal_block() {
        let mut c = Codec::new(1);
        let out = c.inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 100);
        assert_eq!(out.as_deref(), Ok(&b"Hello"[..]));
        let out = c.inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100);
        assert_eq!(out.as_deref(), Ok(&b"Hello"[..]));
    }

    /// Section 7.2.1: the sender removes the `00 00 ff ff` tail; our output
    /// of "Hello" is the RFC's bytes (7.2.3.1).
    #[test]
    fn rfc_7_2_1_tail_removed() {
        let mut c = Codec::new(6);
        let out = c.compress(b"Hello").map(<[u8]>::to_vec);
        assert_eq!(
            out.as_deref(),
            Some(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00][..])
        );
        let again = c.compress(b"Hello").map(<[u8]>::to_vec);
        // No context takeover: the second message compresses the same.
        assert_eq!(out, again);
    }

    /// Section 7.2.3.6 (an empty message): compressed to one `00` byte
    /// once the tail is gone, and back to nothing.
    #[test]
    fn empty_message_round_trip() {
        let mut c = Codec::new(1);
        let z = c.compress(b"").map(<[u8]>::to_vec).unwrap_or_default();
        assert!(z.len() <= 2, "{z:?}");
        assert_eq!(c.inflate(&z, 0).as_deref(), Ok(&b""[..]));
        assert_eq!(c.inflate(&[], 0).as_deref(), Ok(&b""[..]));
    }

    /// A bomb: 10 MB of zeros compress to about 10 KB; with a 64 KiB limit
    /// inflation stops with TooLarge, never holding more than the limit.
    #[test]
    fn bomb_stops_at_the_limit() {
        let mut c = Codec::new(9);
        let zeros = vec![0u8; 10_000_000];
        let z = c.compress(&zeros).map(<[u8]>::to_vec).unwrap_or_default();
        assert!(z.len() < 20_000, "{}", z.len());
        assert_eq!(
            c.inflate(&z, 65536),
            Err(InflateError::TooLarge { max: 65536 })
        );
        assert_eq!(
            InflateError::TooLarge { max: 1 }.close_code(),
            CloseCode::MESSAGE_TOO_BIG
        );
        // At exactly the size it passes.
        let z = c
            .compress(&zeros[..65536])
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        assert_eq!(c.inflate(&z, 65536).map(|v| v.len()), Ok(65536));
        assert_eq!(
            c.inflate(&z, 65535),
            Err(InflateError::TooLarge { max: 65535 })
        );
    }

    /// The one inflater serves every connection of a shard: a message that
    /// refers back before its own start (a client keeping context it was
    /// told not to, or an attacker fishing for the previous connection's
    /// message in the window) is invalid, never inflated from what the
    /// inflater saw last.
    #[test]
    fn no_back_reference_into_the_previous_message() {
        let secret = b"another user's secret message, long enough to be referred to".repeat(4);
        let mut keep = Compress::new(Compression::new(6), false);
        let mut first = Vec::with_capacity(4096);
        keep.compress_vec(&secret, &mut first, FlushCompress::Sync)
            .unwrap();
        let mut second = Vec::with_capacity(4096);
        keep.compress_vec(&secret, &mut second, FlushCompress::Sync)
            .unwrap();
        first.truncate(first.len() - 4);
        second.truncate(second.len() - 4);
        let mut c = Codec::new(1);
        assert_eq!(c.inflate(&first, 1 << 16).as_deref(), Ok(&secret[..]));
        assert_eq!(c.inflate(&second, 1 << 16), Err(InflateError::Invalid));
    }

    /// Garbage is 1007: block type 3 is reserved (RFC 1951 3.2.3).
    #[test]
    fn invalid_block_type() {
        let mut c = Codec::new(1);
        let out = c.inflate(&[0xff, 0xff, 0xff], 100);
        assert_eq!(out, Err(InflateError::Invalid));
        assert_eq!(
            InflateError::Invalid.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        // The codec is usable again after an error.
        assert_eq!(
            c.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100)
                .as_deref(),
            Ok(&b"Hello"[..])
        );
    }
}
