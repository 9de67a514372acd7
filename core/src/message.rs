//! Messages: fragment assembly, incremental UTF-8 validation, close frames.
//!
//! [`Assembler`] turns the decoded frames of one connection into whole
//! [`Message`]s (RFC 6455 5.4): a text or binary frame without FIN starts a
//! message, continuation frames extend it, control frames may arrive between
//! fragments and are returned at once. Text is validated as it arrives with
//! [`Utf8Validator`], so a fragment that makes the message invalid fails the
//! connection at once instead of after the peer has sent (and we have
//! buffered) the rest. Close payloads are parsed by [`parse_close`] against
//! the codes of section 7.4 and the IANA registry.

use bytes::Bytes;

use crate::frame::{Frame, OpCode, MAX_CONTROL_PAYLOAD};

pub use crate::close::CloseCode;

/// The body of a close frame that carries a status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    /// Status code, valid on the wire ([`CloseCode::is_valid_on_wire`]).
    pub code: CloseCode,
    /// Reason text, at most 123 bytes of UTF-8.
    pub reason: String,
}

/// A whole message (or a control frame) received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame; `None` if it carried no status code.
    Close(Option<CloseFrame>),
    /// A whole message compressed with permessage-deflate (its first frame
    /// had RSV1, RFC 7692 section 6): the payloads of its frames joined,
    /// still deflated, so not yet UTF-8-checked. The receiver inflates it
    /// ([`crate::deflate::Codec::inflate`]) and then checks it as a text or
    /// binary message.
    Compressed {
        /// A text message (else binary).
        text: bool,
        /// The deflated payload, without the `00 00 ff ff` tail.
        data: Bytes,
    },
}

/// A message-level rule broken by the peer. In every case the peer is at
/// fault; fail the connection with [`MessageError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MessageError {
    /// The peer sent a continuation frame with no fragmented message in
    /// progress (5.4).
    #[error("peer sent a continuation frame with no message in progress")]
    UnexpectedContinuation,
    /// The peer started a new text/binary message while a fragmented one was
    /// still in progress (5.4).
    #[error("peer started a new message before finishing a fragmented one")]
    ExpectedContinuation,
    /// The peer sent a text message that is not valid UTF-8 (8.1).
    #[error("peer sent a text message that is not valid UTF-8")]
    InvalidUtf8,
    /// The peer sent a message larger than this endpoint accepts.
    #[error("peer sent a message larger than {max} bytes")]
    MessageTooLarge {
        /// Configured limit.
        max: usize,
    },
    /// The peer sent a close payload of 1 byte: a status code needs 2 (5.5.1).
    #[error("peer sent a 1-byte close payload")]
    ClosePayloadTooShort,
    /// The peer sent a close code that must not appear on the wire (7.4).
    #[error("peer sent close code {0}, which is not allowed on the wire")]
    InvalidCloseCode(u16),
    /// The peer sent a close reason that is not valid UTF-8 (5.5.1).
    #[error("peer sent a close reason that is not valid UTF-8")]
    InvalidCloseReason,
}

impl MessageError {
    /// The close code to fail the connection with: 1007 for invalid UTF-8
    /// (message or close reason), 1009 for a message over the limit, 1002
    /// (protocol error) otherwise.
    pub fn close_code(&self) -> CloseCode {
        match self {
            MessageError::InvalidUtf8 | MessageError::InvalidCloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            MessageError::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            MessageError::UnexpectedContinuation
            | MessageError::ExpectedContinuation
            | MessageError::ClosePayloadTooShort
            | MessageError::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Invalid UTF-8 found by [`Utf8Validator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 after {valid_up_to} valid bytes")]
pub struct Utf8Error {
    /// Bytes of the whole stream (all feeds together) that form valid
    /// UTF-8 before the offending byte. Saturates at `usize::MAX`.
    pub valid_up_to: usize,
}

/// Incremental UTF-8 validator: feed a stream in arbitrary pieces; each
/// [`Utf8Validator::feed`] fails as soon as the bytes seen so far cannot be
/// the prefix of valid UTF-8 (overlong forms, surrogates and code points
/// above U+10FFFF fail at the first byte that rules them out).
///
/// Holds at most 3 bytes of an incomplete code point between feeds, inline:
/// no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Utf8Validator {
    /// Leading bytes of a code point split across feeds; always a valid
    /// prefix of a multi-byte sequence.
    pending: [u8; 4],
    pending_len: usize,
    /// Bytes consumed so far that are known valid (for error reports).
    valid: usize,
}

/// Length of the UTF-8 sequence a valid lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            // Complete the code point that the previous feed left open.
            let lead = self.pending.first().copied().unwrap_or(0);
            let need = sequence_len(lead).saturating_sub(self.pending_len);
            let take = need.min(data.len());
            let mut seq = self.pending;
            let end = self.pending_len + take;
            // pending_len <= 3 and take <= need <= 3, so end <= 4... but a
            // corrupted state must not panic either: get_mut guards it.
            if let (Some(dst), Some(src)) = (seq.get_mut(self.pending_len..end), data.get(..take)) {
                dst.copy_from_slice(src);
            }
            let seq = seq.get(..end).unwrap_or(&[]);
            match std::str::from_utf8(seq) {
                Ok(_) => {
                    self.valid = self.valid.saturating_add(end);
                    self.pending_len = 0;
                }
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix and data is exhausted.
                    self.pending = [0; 4];
                    self.pending[..end].copy_from_slice(seq);
                    self.pending_len = end;
                    return Ok(());
                }
                Err(_) => {
                    return Err(Utf8Error {
                        valid_up_to: self.valid,
                    })
                }
            }
            data = data.get(take..).unwrap_or(&[]);
        }
        match std::str::from_utf8(data) {
            Ok(_) => {
                self.valid = self.valid.saturating_add(data.len());
                Ok(())
            }
            Err(e) => {
                let ok = e.valid_up_to();
                if e.error_len().is_some() {
                    return Err(Utf8Error {
                        valid_up_to: self.valid.saturating_add(ok),
                    });
                }
                // The tail is an incomplete but so far valid sequence
                // (1..=3 bytes): keep it for the next feed.
                let tail = data.get(ok..).unwrap_or(&[]);
                self.valid = self.valid.saturating_add(ok);
                self.pending = [0; 4];
                if let Some(dst) = self.pending.get_mut(..tail.len()) {
                    dst.copy_from_slice(tail);
                }
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the stream: fails if it stops in the middle of a code point.
    pub fn finish(&self) -> Result<(), Utf8Error> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(Utf8Error {
                valid_up_to: self.valid,
            })
        }
    }
}

/// Kind of the data message being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DataKind {
    Text,
    Binary,
}

/// A fragmented message in progress.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Partial {
    kind: DataKind,
    /// Started by a frame with RSV1: the data is deflated, and UTF-8 is
    /// checked once inflated.
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// Assembles one connection's frames into messages (RFC 6455 5.4).
///
/// Idle (no fragmented message in progress) it holds no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Assembler {
    max_message_size: usize,
    /// Boxed: a fragmented message in progress is rare, and every idle
    /// connection carries this field.
    partial: Option<Box<Partial>>,
}

impl Assembler {
    /// An assembler that accepts text and binary messages up to
    /// `max_message_size` bytes in total.
    pub fn new(max_message_size: usize) -> Self {
        Assembler {
            max_message_size,
            partial: None,
        }
    }

    /// Feeds one decoded frame. Control frames may arrive between fragments
    /// and are returned at once. Text is UTF-8-validated incrementally per
    /// fragment: the fragment that makes the prefix invalid fails
    /// immediately, not the final one.
    ///
    /// After an error the partial message is dropped; the connection is to
    /// be failed with the error's close code.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, MessageError> {
        let result = self.push_inner(frame);
        if result.is_err() {
            // Release the buffer at once: the connection is going away.
            self.partial = None;
        }
        result
    }

    fn push_inner(&mut self, frame: Frame) -> Result<Option<Message>, MessageError> {
        let kind = match frame.opcode {
            // The decoder has already enforced FIN and the 125-byte limit on
            // control frames, so they need no state here.
            OpCode::Ping => return Ok(Some(Message::Ping(frame.payload))),
            OpCode::Pong => return Ok(Some(Message::Pong(frame.payload))),
            OpCode::Close => return parse_close(&frame.payload).map(|c| Some(Message::Close(c))),
            OpCode::Continuation => return self.continue_message(frame),
            OpCode::Text => DataKind::Text,
            OpCode::Binary => DataKind::Binary,
        };
        if self.partial.is_some() {
            return Err(MessageError::ExpectedContinuation);
        }
        if frame.payload.len() > self.max_message_size {
            return Err(self.too_large());
        }
        if frame.rsv1 && frame.fin {
            return Ok(Some(Message::Compressed {
                text: kind == DataKind::Text,
                data: frame.payload,
            }));
        }
        if frame.fin {
            // Unfragmented: the common case, no copy.
            return match kind {
                DataKind::Text => {
                    std::str::from_utf8(&frame.payload).map_err(|_| MessageError::InvalidUtf8)?;
                    Ok(Some(Message::Text(frame.payload)))
                }
                DataKind::Binary => Ok(Some(Message::Binary(frame.payload))),
            };
        }
        let mut utf8 = Utf8Validator::new();
        if kind == DataKind::Text && !frame.rsv1 {
            utf8.feed(&frame.payload)
                .map_err(|_| MessageError::InvalidUtf8)?;
        }
        self.partial = Some(Box::new(Partial {
            kind,
            compressed: frame.rsv1,
            data: frame.payload.to_vec(),
            utf8,
        }));
        Ok(None)
    }

    fn continue_message(&mut self, frame: Frame) -> Result<Option<Message>, MessageError> {
        let max = self.max_message_size;
        let Some(partial) = self.partial.as_mut() else {
            return Err(MessageError::UnexpectedContinuation);
        };
        // Check the size before copying anything.
        match partial.data.len().checked_add(frame.payload.len()) {
            Some(total) if total <= max => {}
            _ => return Err(MessageError::MessageTooLarge { max }),
        }
        if partial.kind == DataKind::Text && !partial.compressed {
            partial
                .utf8
                .feed(&frame.payload)
                .map_err(|_| MessageError::InvalidUtf8)?;
            if frame.fin {
                partial
                    .utf8
                    .finish()
                    .map_err(|_| MessageError::InvalidUtf8)?;
            }
        }
        partial.data.extend_from_slice(&frame.payload);
        if !frame.fin {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else {
            return Ok(None);
        };
        let data = Bytes::from(done.data);
        if done.compressed {
            return Ok(Some(Message::Compressed {
                text: done.kind == DataKind::Text,
                data,
            }));
        }
        Ok(Some(match done.kind {
            DataKind::Text => Message::Text(data),
            DataKind::Binary => Message::Binary(data),
        }))
    }

    fn too_large(&self) -> MessageError {
        MessageError::MessageTooLarge {
            max: self.max_message_size,
        }
    }

    /// Bytes currently held for a partial message (0 when idle).
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// The largest message this assembler accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

/// Parses a close frame payload (RFC 6455 5.5.1): empty -> `None`; 1 byte ->
/// [`MessageError::ClosePayloadTooShort`]; a code not allowed on the wire ->
/// [`MessageError::InvalidCloseCode`]; a reason that is not UTF-8 ->
/// [`MessageError::InvalidCloseReason`].
pub fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, MessageError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(MessageError::ClosePayloadTooShort),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !CloseCode::is_valid_on_wire(code) {
        return Err(MessageError::InvalidCloseCode(code));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| MessageError::InvalidCloseReason)?;
    Ok(Some(CloseFrame {
        code: CloseCode(code),
        reason: reason.to_owned(),
    }))
}

/// The payload of a close frame: the code, big-endian, then the reason,
/// truncated on a char boundary so the whole payload fits the 125 bytes a
/// control frame may carry.
pub fn encode_close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let room = MAX_CONTROL_PAYLOAD - 2;
    let mut end = reason.len().min(room);
    // Index 0 is always a char boundary, so this stops.
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or("");
    let mut out = Vec::with_capacity(2 + reason.len());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_truncates_on_char_boundary() {
        // 'é' is 2 bytes; 62 of them are 124 bytes, one too many for 123.
        let reason = "é".repeat(62);
        let p = encode_close_payload(CloseCode::NORMAL, &reason);
        assert_eq!(p.len(), 2 + 122);
        let parsed = parse_close(&p).unwrap().unwrap();
        assert_eq!(parsed.code, CloseCode::NORMAL);
        assert_eq!(parsed.reason, "é".repeat(61));
    }

    #[test]
    fn validator_reports_stream_offset() {
        let mut v = Utf8Validator::new();
        v.feed(b"ab\xE2").unwrap();
        assert_eq!(v.feed(b"\x82\xACcd\xFF"), Err(Utf8Error { valid_up_to: 7 }));
    }

    #[test]
    fn idle_assembler_holds_nothing() {
        let mut a = Assembler::new(100);
        let f = |fin, opcode, p: &'static [u8]| Frame {
            fin,
            opcode,
            rsv1: false,
            payload: Bytes::from_static(p),
        };
        assert_eq!(a.push(f(false, OpCode::Binary, b"abc")), Ok(None));
        assert_eq!(a.buffered(), 3);
        assert!(a
            .push(f(true, OpCode::Continuation, b"d"))
            .unwrap()
            .is_some());
        assert_eq!(a.buffered(), 0);
        assert!(a.partial.is_none());
    }
}
