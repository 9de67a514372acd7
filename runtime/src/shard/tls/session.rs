//! One TLS connection's protocol state without its socket: rustls's
//! unbuffered server connection, and the bytes between it and the socket
//! that the socket has not taken yet.
//!
//! rustls's buffered `ServerConnection` keeps a receive buffer (4 KiB at
//! least, once grown) and its queues for the whole life of a connection:
//! over 7 KiB of an idle connection's 8.4 KiB. The unbuffered API leaves
//! the buffers to the caller, so here they are empty between uses and
//! the shard's scratch buffers do the work: records are read and
//! decrypted through the shard's read scratch, a batch's queue is
//! encrypted into the shard's write scratch, and only what one socket
//! did not take (a record cut by a read, or records the kernel refused)
//! is kept per connection, in a `Vec` that is freed once it empties.

use std::mem;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

/// Plaintext put into one record: TLS's limit, so a batch of small frames
/// becomes few records.
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;

/// What a record costs beyond its plaintext, at most (header, TLS 1.2's
/// explicit nonce or TLS 1.3's content type, the tag), rounded up.
const RECORD_OVERHEAD: usize = 64;

/// Why a TLS connection cannot go on. Either way it is the peer's doing or
/// the end of the connection: the shard closes it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The peer broke the protocol (not TLS, a bad record, a failed
    /// handshake); rustls's alert is in the outgoing bytes.
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    /// The session's keys can encrypt no more (sequence numbers used up).
    #[error("TLS: the session can encrypt no more")]
    Exhausted,
    /// The session failed before (the first error said why).
    #[error("TLS: the session failed before")]
    Failed,
}

/// A TLS session (see the module's top).
pub(crate) struct Session {
    conn: UnbufferedServerConnection,
    /// The peer's bytes not yet processed: a record cut by a read, or a
    /// handshake message that spans records. Unallocated between whole
    /// records.
    incoming: Vec<u8>,
    /// Records the socket has not taken yet, oldest first. Unallocated
    /// whenever the socket took all.
    outgoing: Vec<u8>,
    /// The peer sent close_notify: it sends nothing more.
    peer_closed: bool,
    /// A close_notify was queued: nothing more is sent.
    close_sent: bool,
    /// rustls returned an error: it is not called again. (After an error
    /// its deframer may still count bytes of the failed buffer as its
    /// own, and a call with any other buffer panics in rustls 0.23.)
    failed: bool,
}

impl Session {
    /// A session served with `config`, before the handshake.
    pub(crate) fn new(config: std::sync::Arc<rustls::ServerConfig>) -> Result<Session, TlsError> {
        Ok(Session {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
            close_sent: false,
            failed: false,
        })
    }

    /// The handshake is done: application data flows both ways.
    pub(crate) fn is_ready(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// The peer sent close_notify.
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Records are waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The records waiting for the socket.
    pub(crate) fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// The socket took the first `n` outgoing bytes.
    pub(crate) fn sent(&mut self, n: usize) {
        if n >= self.outgoing.len() {
            self.outgoing = Vec::new();
        } else {
            self.outgoing.drain(..n);
        }
    }

    /// Keeps `rest`, what the socket did not take of records encrypted
    /// outside the session (the shard's write scratch), to go first next
    /// time.
    pub(crate) fn keep_unsent(&mut self, rest: &[u8]) {
        self.outgoing.extend_from_slice(rest);
    }

    /// The bytes kept from the last read, which must come before the next
    /// read's.
    pub(crate) fn incoming(&self) -> &[u8] {
        &self.incoming
    }

    /// The bytes kept from the last read, taken out, the caller gives back what is left with
    /// [`Session::keep_incoming`].
    pub(crate) fn take_incoming(&mut self) -> Vec<u8> {
        mem::take(&mut self.incoming)
    }

    /// The incoming buffer's allocation (the tests check an idle session
    /// keeps none).
    #[cfg(test)]
    pub(crate) fn incoming_capacity(&self) -> usize {
        self.incoming.capacity()
    }

    /// The outgoing buffer's allocation.
    #[cfg(test)]
    pub(crate) fn outgoing_capacity(&self) -> usize {
        self.outgoing.capacity()
    }

    /// Keeps `rest` (an unprocessed tail) for the next read.
    pub(crate) fn keep_incoming(&mut self, rest: &[u8]) {
        self.incoming = rest.to_vec();
    }

    /// Processes the peer's bytes in `buf`: handshake messages are
    /// answered (into the outgoing bytes), application data goes to
    /// `deliver` record by record, close_notify is noted. Returns how many
    /// bytes of `buf`'s front are done with: the rest is an incomplete
    /// record, to be given again with what follows it. On an error the
    /// session is finished, and its alert, if any, is in the outgoing
    /// bytes.
    pub(crate) fn process(
        &mut self,
        buf: &mut [u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<usize, TlsError> {
        self.usable()?;
        let mut start = 0;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut buf[start..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.queue_alert(&mut buf[start + discard..]);
                    return Err(e.into());
                }
            };
            let mut done = false;
            match state {
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        deliver(record?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, |out| encode.encode(out))?;
                }
                // The encoded records are in the outgoing bytes, which
                // the socket takes in order before anything later.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    done = true;
                }
                // Early data is not enabled (`max_early_data_size` 0), so
                // none is accepted; what would be is dropped.
                ConnectionState::ReadEarlyData(mut early) => {
                    while let Some(record) = early.next_record() {
                        record?;
                    }
                }
                // More bytes are needed, or everything here is done.
                _ => done = true,
            }
            start += discard;
            if done {
                return Ok(start);
            }
        }
    }

    /// Encrypts `plain` into records appended to `out` (the handshake is
    /// done). Handshake messages rustls has to send first (a session
    /// ticket, a key update) go into `out` before them.
    pub(crate) fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        self.usable()?;
        // The unprocessed bytes are given back as they are: only whole
        // records are processed, so none of them is consumed here.
        let mut incoming = mem::take(&mut self.incoming);
        let result = loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut incoming);
            let outcome = match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(out, |o| encode.encode(o)).err().map(Err)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::WriteTraffic(mut write)) => {
                    Some(encrypt_into(out, plain.len(), |o| write.encrypt(plain, o)))
                }
                // Nothing else can come of bytes that are not a whole
                // record; a session that is not writable is done.
                Ok(_) => Some(Err(TlsError::Exhausted)),
                Err(e) => {
                    self.failed = true;
                    Some(Err(e.into()))
                }
            };
            // Not expected (only incomplete records are kept), but what
            // rustls is done with must go before it is called again.
            incoming.drain(..discard);
            if let Some(outcome) = outcome {
                break outcome;
            }
        };
        self.incoming = incoming;
        result
    }

    /// Encrypts `plain` into the outgoing records (see
    /// [`Session::encrypt`]).
    pub(crate) fn encrypt_queued(&mut self, plain: &[u8]) -> Result<(), TlsError> {
        let mut out = mem::take(&mut self.outgoing);
        let result = self.encrypt(plain, &mut out);
        self.outgoing = out;
        result
    }

    /// Queues a close_notify into the outgoing bytes (once the handshake
    /// is done; before, there is nothing to close cleanly).
    pub(crate) fn close_notify(&mut self) {
        if mem::replace(&mut self.close_sent, true) || self.failed {
            return;
        }
        let mut incoming = mem::take(&mut self.incoming);
        let status = self.conn.process_tls_records(&mut incoming);
        if let Ok(ConnectionState::WriteTraffic(mut write)) = status.state {
            let at = self.outgoing.len();
            self.outgoing.resize(at + RECORD_OVERHEAD, 0);
            let n = write
                .queue_close_notify(&mut self.outgoing[at..])
                .unwrap_or(0);
            self.outgoing.truncate(at + n);
        }
        self.incoming = incoming;
    }

    /// A session whose rustls failed can do nothing more.
    fn usable(&self) -> Result<(), TlsError> {
        if self.failed {
            Err(TlsError::Failed)
        } else {
            Ok(())
        }
    }

    /// After an error in processing `rest` (what was given to rustls, less
    /// what it said to discard): the alert rustls queued, into the
    /// outgoing bytes, and the session marked failed.
    fn queue_alert(&mut self, rest: &mut [u8]) {
        self.failed = true;
        // rustls looks at its queue before it reads, so the first call
        // after an error hands over the alert (one message, one chunk)
        // whatever the buffer. It is the only call: a second would read
        // again, and rustls 0.23 panics when a failed connection reads
        // (it asserts no second fatal alert, or indexes a buffer it still
        // counts as its own past the end of an empty one).
        let status = self.conn.process_tls_records(rest);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
            let _ = encode_into(&mut self.outgoing, |o| encode.encode(o));
        }
    }
}

/// Appends the records `encrypt` writes of `plain` (`len` bytes) to
/// `out`, growing it to the size asked for.
fn encrypt_into(
    out: &mut Vec<u8>,
    len: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsError> {
    let at = out.len();
    out.resize(at + len + (len / MAX_FRAGMENT + 1) * RECORD_OVERHEAD, 0);
    let mut result = encrypt(&mut out[at..]);
    if let Err(EncryptError::InsufficientSize(size)) = result {
        out.resize(at + size.required_size, 0);
        result = encrypt(&mut out[at..]);
    }
    written(out, at, result)
}

/// Appends what `encode` writes to `out`, growing it to the size asked for.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsError> {
    let at = out.len();
    let needed = match encode(&mut []) {
        // Nothing to encode (rustls asks for room first otherwise).
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(size)) => size.required_size,
        // Nothing left to encode.
        Err(_) => return Ok(()),
    };
    out.resize(at + needed, 0);
    let result = encode(&mut out[at..]);
    written(out, at, result)
}

/// Keeps the `n` bytes a rustls call wrote into `out` from `at`, or none
/// of them when it failed.
fn written<E>(out: &mut Vec<u8>, at: usize, result: Result<usize, E>) -> Result<(), TlsError> {
    match result {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            Err(TlsError::Exhausted)
        }
    }
}
