//! The writing half of a connection: masks and frames what the client
//! sends, and answers what keeps a connection alive ([`Reply`]).

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use wavecast_core::frame::{encode_masked, OpCode};

use super::reader::Reply;
use crate::BenchError;

/// The writing half of a connection: masks and frames what the client sends.
#[derive(Debug)]
pub struct Writer {
    out: BytesMut,
    mask: u32,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// A writer with its own mask sequence.
    pub fn new() -> Writer {
        static SEED: AtomicU32 = AtomicU32::new(0x2545_f491);
        Writer {
            out: BytesMut::new(),
            mask: SEED.fetch_add(0x9e37_79b9, Ordering::Relaxed) | 1,
        }
    }

    /// The next masking key (xorshift32: RFC 6455 wants keys a page's
    /// script cannot predict; a load tool only needs them to vary).
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_ne_bytes()
    }

    /// Sends one whole frame.
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), BenchError> {
        self.out.clear();
        let mask = self.next_mask();
        encode_masked(true, opcode, payload, mask, &mut self.out);
        wr.write_all(&self.out)
            .await
            .map_err(|e| BenchError::io("writing", e))
    }

    /// Answers a [`Reply`].
    pub async fn reply<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        reply: &Reply,
    ) -> Result<(), BenchError> {
        match reply {
            Reply::Pong(p) => self.send(wr, OpCode::Pong, p).await,
            Reply::Text(t) => self.send(wr, OpCode::Text, t).await,
            Reply::Binary(b) => self.send(wr, OpCode::Binary, b).await,
        }
    }
}
