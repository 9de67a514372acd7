//! RFC 6455 section 5: the frame codec.
//!
//! Decoding is incremental and zero-copy: [`FrameDecoder::decode`] looks at
//! the front of a [`BytesMut`], validates the header as soon as the header
//! bytes are there (so a peer announcing a 2^62-byte payload is rejected
//! before it sends one byte of it), and only once the whole frame is present
//! splits it off, unmasks it in place and freezes it into [`Bytes`].
//! An incomplete frame is `Ok(None)`, never an error, and leaves the buffer
//! untouched, so a driver may call `decode` after every read regardless of
//! how the bytes were chunked.
//!
//! Every rule of section 5.2 - 5.5 that a frame can break has its own
//! [`FrameError`] variant; each maps to the close code the server must send
//! ([`FrameError::close_code`]).
//!
//! Encoding writes unmasked server frames ([`encode_frame`], [`encode`],
//! [`encode_header`]) and, for test clients and the load tool, masked client
//! frames ([`encode_masked`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::close::CloseCode;

/// Largest payload of a control frame (close, ping, pong), RFC 6455 5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest possible frame header: 2 fixed bytes, 8 bytes of 64-bit length,
/// 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
/// RSV1 alone, as the 3-bit value of `RSV_BITS`.
const RSV1_VALUE: u8 = 0x4;
/// RSV1 in the first header byte.
const RSV1_BIT: u8 = 0x40;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LEN7_BITS: u8 = 0x7F;
/// 7-bit length value announcing a 16-bit extended length.
const LEN16_MARKER: u8 = 126;
/// 7-bit length value announcing a 64-bit extended length.
const LEN64_MARKER: u8 = 127;

/// A frame opcode (RFC 6455 5.2). The reserved opcodes 3-7 and 11-15 have no
/// variant: [`OpCode::from_u8`] returns `None` for them and the decoder
/// rejects them with [`FrameError::ReservedOpcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented text or binary message.
    Continuation,
    /// 0x1: first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: first (or only) frame of a binary message.
    Binary,
    /// 0x8: close; payload is empty or a 2-byte code plus UTF-8 reason.
    Close,
    /// 0x9: ping; the receiver answers with a pong carrying the same payload.
    Ping,
    /// 0xA: pong; an answer to a ping, or an unsolicited heartbeat.
    Pong,
}

impl OpCode {
    /// Close, ping and pong are control frames: at most 125 bytes of payload,
    /// never fragmented, and allowed between the fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// The opcode for a 4-bit wire value; `None` for reserved values and for
    /// anything above 15.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }
}

/// One decoded frame. The payload is already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of its message (always true for control frames).
    pub fin: bool,
    /// What the payload is.
    pub opcode: OpCode,
    /// RSV1: with permessage-deflate negotiated, the first frame of a
    /// compressed message (RFC 7692 section 6); always false otherwise
    /// (the decoder refuses the bit).
    pub rsv1: bool,
    /// Application data, unmasked. Shares the decoder's read buffer.
    pub payload: Bytes,
}

/// A frame that breaks a rule of RFC 6455 section 5. In every case the peer
/// that sent the frame is at fault; the connection must be failed with
/// [`FrameError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FrameError {
    /// The peer set RSV1/RSV2/RSV3 (value is the 3 bits, RSV1 = 4) although
    /// no extension that defines them was negotiated (5.2).
    #[error("peer set reserved bits {0:#05b} with no extension negotiated")]
    ReservedBits(u8),
    /// The peer set RSV1 on a control frame (RFC 7692 section 6.1: the
    /// "Per-Message Compressed" bit is for data messages only).
    #[error("peer set RSV1 on a control frame")]
    CompressedControlFrame,
    /// The peer set RSV1 on a continuation frame (RFC 7692 section 6.1:
    /// only the first frame of a message carries it).
    #[error("peer set RSV1 on a continuation frame")]
    CompressedContinuation,
    /// The peer used a reserved opcode (3-7 or 11-15) (5.2).
    #[error("peer used reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// The peer sent a control frame with more than 125 bytes of payload (5.5).
    #[error("peer sent a control frame with a {0}-byte payload (max 125)")]
    ControlFrameTooLong(u64),
    /// The peer sent a control frame without FIN: control frames must not be
    /// fragmented (5.5).
    #[error("peer sent a fragmented control frame")]
    FragmentedControlFrame,
    /// A client sent an unmasked frame; clients must mask every frame (5.1).
    #[error("client sent an unmasked frame")]
    UnmaskedFrame,
    /// A server sent a masked frame; servers must not mask (5.1).
    #[error("server sent a masked frame")]
    MaskedFrame,
    /// The peer encoded a length in more bytes than needed (5.2: "the minimal
    /// number of bytes MUST be used").
    #[error("peer used a non-minimal payload length encoding")]
    NonMinimalLength,
    /// The peer set the most significant bit of a 64-bit length (5.2).
    #[error("peer set the top bit of a 64-bit payload length")]
    LengthTopBitSet,
    /// The peer announced a frame payload larger than this endpoint accepts.
    #[error("peer announced a {len}-byte frame payload, limit is {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
}

impl FrameError {
    /// The close code to fail the connection with: 1009 (message too big)
    /// for [`FrameError::FrameTooLarge`], 1002 (protocol error) for every
    /// rule violation.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::FrameTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            FrameError::ReservedBits(_)
            | FrameError::CompressedControlFrame
            | FrameError::CompressedContinuation
            | FrameError::ReservedOpcode(_)
            | FrameError::ControlFrameTooLong(_)
            | FrameError::FragmentedControlFrame
            | FrameError::UnmaskedFrame
            | FrameError::MaskedFrame
            | FrameError::NonMinimalLength
            | FrameError::LengthTopBitSet => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Incremental frame decoder for one direction of one connection.
///
/// It keeps no bytes of its own: everything pending stays in the caller's
/// buffer, so an idle connection holds no decoder allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameDecoder {
    max_payload: usize,
    /// Server side decodes client frames, which must be masked; client side
    /// decodes server frames, which must not be.
    expect_masked: bool,
    /// permessage-deflate was negotiated: RSV1 is allowed on the first
    /// frame of a data message. (The connection's only compression state.)
    allow_rsv1: bool,
}

impl FrameDecoder {
    /// Server side: every client frame must be masked.
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder {
            max_payload,
            expect_masked: true,
            allow_rsv1: false,
        }
    }

    /// Client side (for test clients and the load tool): frames must NOT be
    /// masked.
    pub fn client(max_payload: usize) -> Self {
        FrameDecoder {
            max_payload,
            expect_masked: false,
            allow_rsv1: false,
        }
    }

    /// Accepts RSV1 on the first frame of data messages (permessage-deflate
    /// was negotiated, RFC 7692 section 6).
    pub fn with_rsv1(mut self) -> Self {
        self.allow_rsv1 = true;
        self
    }

    /// True if permessage-deflate was negotiated (RSV1 is accepted).
    pub fn allows_rsv1(&self) -> bool {
        self.allow_rsv1
    }

    /// The largest frame payload this decoder accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Decodes one frame from the front of `buf`, removing its bytes.
    /// `Ok(None)` = incomplete (not an error, `buf` untouched).
    ///
    /// The header is validated as soon as its bytes are there, in a fixed
    /// order (RSV bits, opcode, mask bit, FIN of control frames, length
    /// encoding, control length, size limit), so the first error a byte
    /// stream produces does not depend on how it was chunked. After an error
    /// `buf` is left as it was; the connection is to be failed, not resumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.parse_header(buf)? else {
            return Ok(None);
        };
        // header.payload_len <= max_payload (a usize), so the sum can only
        // overflow with an absurd limit near usize::MAX; treat that as too large.
        let Some(total) = header.header_len.checked_add(header.payload_len) else {
            return Err(FrameError::FrameTooLarge {
                len: header.payload_len as u64,
                max: self.max_payload,
            });
        };
        if buf.len() < total {
            return Ok(None);
        }
        // Skip the header, then split the payload off without copying.
        // (`advance` rather than `split_to`: no reference count traffic.)
        buf.advance(header.header_len);
        let mut payload = buf.split_to(header.payload_len);
        if let Some(mask) = header.mask {
            apply_mask(&mut payload, mask);
        }
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            rsv1: header.rsv1,
            payload: payload.freeze(),
        }))
    }

    /// Validates as much of the header as is present; `Ok(None)` if the
    /// header is not complete yet.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let rsv = (b0 & RSV_BITS) >> 4;
        let rsv1 = rsv == RSV1_VALUE && self.allow_rsv1;
        if rsv != 0 && !rsv1 {
            return Err(FrameError::ReservedBits(rsv));
        }
        let raw_opcode = b0 & OPCODE_BITS;
        let opcode = OpCode::from_u8(raw_opcode).ok_or(FrameError::ReservedOpcode(raw_opcode))?;
        if rsv1 {
            if opcode.is_control() {
                return Err(FrameError::CompressedControlFrame);
            }
            if opcode == OpCode::Continuation {
                return Err(FrameError::CompressedContinuation);
            }
        }
        let fin = b0 & FIN_BIT != 0;
        let masked = b1 & MASK_BIT != 0;
        match (self.expect_masked, masked) {
            (true, false) => return Err(FrameError::UnmaskedFrame),
            (false, true) => return Err(FrameError::MaskedFrame),
            _ => {}
        }
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControlFrame);
        }

        let len7 = b1 & LEN7_BITS;
        let (payload_len, len_bytes): (u64, usize) = match len7 {
            LEN16_MARKER => {
                let Some(&[x0, x1]) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([x0, x1]);
                if len < u16::from(LEN16_MARKER) {
                    return Err(FrameError::NonMinimalLength);
                }
                (u64::from(len), 2)
            }
            LEN64_MARKER => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthTopBitSet);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, 8)
            }
            short => (u64::from(short), 0),
        };
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlFrameTooLong(payload_len));
        }
        let payload_len = match usize::try_from(payload_len) {
            Ok(len) if len <= self.max_payload => len,
            _ => {
                return Err(FrameError::FrameTooLarge {
                    len: payload_len,
                    max: self.max_payload,
                })
            }
        };

        let mask_at = 2 + len_bytes;
        let mask = if masked {
            let Some(&[m0, m1, m2, m3]) = buf.get(mask_at..mask_at + 4) else {
                return Ok(None);
            };
            Some([m0, m1, m2, m3])
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
            header_len: mask_at + if masked { 4 } else { 0 },
        }))
    }
}

/// A validated frame header.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: usize,
    header_len: usize,
}

/// Writes a header (masked if `mask` is given) into `out`, returns its length.
fn write_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    out[0] = (if fin { FIN_BIT } else { 0 }) | opcode.as_u8();
    let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
    // The minimal length encoding, as 5.2 requires.
    let mut n = match u16::try_from(payload_len) {
        Ok(len) if len < u16::from(LEN16_MARKER) => {
            // Fits in 7 bits: the match guard keeps len below 126.
            out[1] = mask_bit | len as u8;
            2
        }
        Ok(len) => {
            out[1] = mask_bit | LEN16_MARKER;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            4
        }
        Err(_) => {
            out[1] = mask_bit | LEN64_MARKER;
            out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    if let Some(mask) = mask {
        out[n..n + 4].copy_from_slice(&mask);
        n += 4;
    }
    n
}

/// Writes just the header of an unmasked frame into `out`, returns its
/// length (2, 4 or 10). Lets a writer send header and a shared payload as two
/// slices of one vectored write.
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    write_header(fin, opcode, payload_len, None, out)
}

/// Appends one unmasked (server) frame.
///
/// The caller keeps control frames within [`MAX_CONTROL_PAYLOAD`] and
/// unfragmented; this function encodes what it is given.
pub fn encode_frame(fin: bool, opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = write_header(fin, opcode, payload.len(), None, &mut header);
    out.reserve(n + payload.len());
    out.put_slice(&header[..n]);
    out.put_slice(payload);
}

/// One complete (fin) unmasked frame with RSV1 set, a message compressed
/// with permessage-deflate (RFC 7692 section 6): `payload` is the deflated
/// message without its `00 00 ff ff` tail ([`crate::deflate::Codec`]).
/// One allocation, shared by every subscriber that negotiated compression.
pub fn encode_compressed(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = write_header(true, opcode, payload.len(), None, &mut header);
    header[0] |= RSV1_BIT;
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.put_slice(&header[..n]);
    out.put_slice(payload);
    out.freeze()
}

/// The payload of a whole unmasked frame as [`encode`] wrote it (empty if
/// `frame` is shorter than its header says).
pub fn server_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & LEN7_BITS) {
        Some(LEN16_MARKER) => 4,
        Some(LEN64_MARKER) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

/// With RSV1 set on a masked client frame's header (test clients and the
/// load tool: the first frame of a compressed message). `frame` starts with
/// the header as [`encode_masked`] wrote it.
pub fn set_rsv1(frame: &mut [u8]) {
    if let Some(b0) = frame.first_mut() {
        *b0 |= RSV1_BIT;
    }
}

/// One complete (fin) unmasked frame as shared bytes, for fan-out: encode a
/// publication once and hand every subscriber's queue a reference.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + payload.len());
    encode_frame(true, opcode, payload, &mut out);
    out.freeze()
}

/// Appends one masked (client) frame.
pub fn encode_masked(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = write_header(fin, opcode, payload.len(), Some(mask), &mut header);
    out.reserve(n + payload.len());
    out.put_slice(&header[..n]);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the mask (RFC 6455 5.3), starting at mask byte 0.
/// Masking and unmasking are the same operation.
///
/// Works a 64-bit word at a time: the 4-byte key repeated twice is XORed
/// into each 8-byte chunk. Native byte order is correct on either endianness
/// because the word is both loaded and stored in native order, so byte `i` of
/// the chunk always meets byte `i % 4` of the key.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let [m0, m1, m2, m3] = mask;
    let key = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence of 4: key index restarts at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mask(data: &mut [u8], mask: [u8; 4]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }

    #[test]
    fn apply_mask_matches_bytewise_definition_for_every_tail_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = orig.clone();
            let mut slow = orig.clone();
            apply_mask(&mut fast, mask);
            naive_mask(&mut slow, mask);
            assert_eq!(fast, slow, "len {len}");
            apply_mask(&mut fast, mask);
            assert_eq!(fast, orig, "masking twice restores, len {len}");
        }
    }

    #[test]
    fn header_lengths_are_minimal() {
        let mut h = [0u8; MAX_HEADER_LEN];
        assert_eq!(encode_header(true, OpCode::Text, 0, &mut h), 2);
        assert_eq!(encode_header(true, OpCode::Text, 125, &mut h), 2);
        assert_eq!(h[1], 125);
        assert_eq!(encode_header(true, OpCode::Text, 126, &mut h), 4);
        assert_eq!(&h[1..4], &[126, 0, 126]);
        assert_eq!(encode_header(true, OpCode::Text, 65535, &mut h), 4);
        assert_eq!(encode_header(false, OpCode::Binary, 65536, &mut h), 10);
        assert_eq!(h[0], 0x02);
        assert_eq!(&h[1..10], &[127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn incomplete_header_leaves_buffer_untouched() {
        let mut full = BytesMut::new();
        encode_masked(true, OpCode::Binary, &[9; 300], [1, 2, 3, 4], &mut full);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            let mut dec = FrameDecoder::new(1 << 20);
            assert_eq!(dec.decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(&part[..], &full[..cut]);
        }
    }
}
