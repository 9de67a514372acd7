//! An upgraded TLS socket in the shard's epoll set: its session driven
//! with the shard's scratch buffers, so that between reads and writes the
//! connection holds nothing but the session and what its socket refused.
//!
//! [`read`] reads the socket once (as a plain socket is read once per
//! readiness) into the read scratch, after the tail of a record kept from
//! the last read, and hands the plaintext to the node. [`write`] sends the
//! records left from before, then encrypts the node's queue into the
//! write scratch (small frames gathered into records of up to 16 KiB) a
//! batch at a time and sends each batch with one write; what the kernel
//! does not take stays with the session, and no more is encrypted until
//! it is gone, so the bytes outside the node's queue (and its budget) are
//! at most one batch.

use std::io::{ErrorKind, Read, Write};

use wavecast_core::node::{ConnId, Node};
use wavecast_core::Timestamp;

use super::session::{Session, TlsError, MAX_FRAGMENT};
use crate::shard::{ConnIo, Shard};

/// Plaintext encrypted for one socket write.
pub(crate) const BATCH: usize = 4 * MAX_FRAGMENT;

/// What one read of a TLS socket came to.
pub(in crate::shard) enum ReadOutcome {
    /// Nothing to read now.
    Nothing,
    /// Records read (plaintext, if any, handed over).
    Some,
    /// End of stream: the peer closed (with or without close_notify), or
    /// sent what is not TLS (rustls's alert has been sent).
    End,
}

/// Reads the socket once, decrypts, and hands the plaintext to `deliver`.
/// `scratch` is the shard's read buffer.
pub(in crate::shard) fn read(
    io: &mut ConnIo,
    scratch: &mut [u8],
    mut deliver: impl FnMut(&[u8]),
) -> ReadOutcome {
    let Some(session) = io.tls.as_mut() else {
        return ReadOutcome::End;
    };
    let kept = session.incoming().len();
    // What is kept is less than a record, or a post-handshake handshake
    // message rustls is joining: one of more than half the buffer is not
    // one a client has reason to send.
    if kept > scratch.len() / 2 {
        tracing::debug!(bytes = kept, "TLS peer sent an oversized handshake message");
        return ReadOutcome::End;
    }
    scratch[..kept].copy_from_slice(session.incoming());
    let (n, end) = match (&io.stream).read(&mut scratch[kept..]) {
        Ok(0) => (0, true),
        Ok(n) => (n, false),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return ReadOutcome::Nothing;
        }
        Err(_) => (0, true),
    };
    let filled = &mut scratch[..kept + n];
    match session.process(filled, &mut deliver) {
        Ok(done) => session.keep_incoming(&filled[done..]),
        Err(e) => {
            tracing::debug!(error = %e, "TLS connection failed");
            // The alert, if the socket takes it.
            let _ = (&io.stream).write(session.outgoing());
            return ReadOutcome::End;
        }
    }
    if end || session.peer_closed() {
        ReadOutcome::End
    } else {
        ReadOutcome::Some
    }
}

/// Writes a TLS connection (see the module's top) until its queue is
/// empty or the kernel refuses. The caller has checked `io` is watched and
/// not waiting for writability.
pub(in crate::shard) fn write(
    shard: &Shard,
    now: Timestamp,
    id: ConnId,
    io: &mut ConnIo,
    node: &mut Node,
) {
    let fail = |io: &mut ConnIo, node: &mut Node| {
        shard.unwatch(io);
        node.handle_eof(now, id);
    };
    loop {
        let Some(session) = io.tls.as_mut() else {
            return;
        };
        if session.wants_write() {
            match (&io.stream).write(session.outgoing()) {
                Ok(0) => return fail(io, node),
                Ok(n) => session.sent(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return shard.write_blocked(now, id, io, node);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return fail(io, node),
            }
            continue;
        }
        let mut out = shard.tls_out.borrow_mut();
        out.clear();
        let taken = match encrypt_batch(
            session,
            node,
            id,
            &mut shard.tls_plain.borrow_mut(),
            &mut out,
        ) {
            Ok(0) => return,
            Ok(taken) => taken,
            Err(e) => {
                tracing::debug!(error = %e, "TLS connection cannot go on");
                return fail(io, node);
            }
        };
        node.handle_written(now, id, taken);
        match (&io.stream).write(&out) {
            Ok(n) => session.keep_unsent(&out[n..]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                session.keep_unsent(&out);
            }
            Err(_) => return fail(io, node),
        }
    }
}

/// Encrypts up to [`BATCH`] bytes from the front of `id`'s queue into
/// `out`, gathering small frames into records through `staging`. Returns
/// the plaintext bytes taken (0: the queue is empty).
fn encrypt_batch(
    session: &mut Session,
    node: &mut Node,
    id: ConnId,
    staging: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<usize, TlsError> {
    let Some(queue) = node.queue(id) else {
        return Ok(0);
    };
    staging.clear();
    let mut taken = 0;
    'slices: for mut slice in queue.slices() {
        while !slice.is_empty() {
            if taken == BATCH {
                break 'slices;
            }
            let k = slice
                .len()
                .min(MAX_FRAGMENT - staging.len())
                .min(BATCH - taken);
            staging.extend_from_slice(&slice[..k]);
            slice = &slice[k..];
            taken += k;
            if staging.len() == MAX_FRAGMENT {
                session.encrypt(staging, out)?;
                staging.clear();
            }
        }
    }
    if !staging.is_empty() {
        session.encrypt(staging, out)?;
        staging.clear();
    }
    Ok(taken)
}

/// A finished TLS connection's last words: a close_notify, if the socket
/// takes it now (the socket is closed right after, either way).
pub(in crate::shard) fn close(io: &mut ConnIo) {
    if let Some(session) = io.tls.as_mut() {
        session.close_notify();
        let _ = (&io.stream).write(session.outgoing());
    }
}
