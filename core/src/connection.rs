//! One connection's state machine: open, closing, closed. A WebSocket's
//! (RFC 6455 frames both ways), or a one-way event stream's
//! ([`Framing::EventStream`]: a Server-Sent Events response, which only
//! writes).
//!
//! A [`Connection`] owns the frame decoder, the message assembler, the
//! partial-frame remainder and the outbound queue of one client. It answers
//! pings, runs the close handshake (RFC 6455 section 7), sends heartbeat
//! pings and expires silent peers. It knows nothing of sockets or clocks:
//!
//! - `handle_read(now, bytes)`, `handle_eof(now)` and `handle_timeout(now)`
//!   feed it; `send(frame)` and `close(code, reason)` are the application's
//!   requests;
//! - `poll_event()` yields application messages and, once, `Closed`;
//! - `queue()` holds the bytes to write; `poll_timeout()` gives the next
//!   deadline; `is_finished()` says the transport may be dropped.
//!
//! Heartbeats: a ping goes out every `heartbeat_interval`; a connection from
//! which nothing at all has arrived for `heartbeat_interval +
//! heartbeat_timeout` is closed. Any bytes count as a sign of life, not only
//! pongs, so a busy client is never expired. `handle_timeout` is safe to
//! call early or twice: it recomputes from the stored instants.
//!
//! Bounds: everything queued for the peer counts against
//! `max_queued_bytes`, pongs included. The budget is about the reader, not
//! about the size of one burst: it is enforced once the transport has
//! refused bytes (`handle_write_blocked`, the kernel's send buffer is full)
//! and until the queue drains, so a burst queued between two writes reaches
//! a reader that keeps up, and a reader that does not is closed at the
//! first frame past the budget. At most one pong waits at a time
//! (a later ping replaces its answer, RFC 6455 section 5.5.3), so a peer
//! that pings without reading cannot grow the queue. A peer that takes no
//! bytes at all for `heartbeat_interval + heartbeat_timeout` while some are
//! waiting for it is closed as a slow consumer too: sending is not a sign
//! that it reads.
//!
//! Pings from the peer: at most `ping_rate` a second are answered (a token
//! bucket with bursts of twice the rate, `crate::rate`); the ones over it
//! get no pong (RFC 6455 5.5.3 owes a pong only to the latest ping, and a
//! flood gets none while it lasts), and a peer still over it
//! [`OVER_LIMIT_GRACE`](crate::node::OVER_LIMIT_GRACE) after it first went
//! over, without slowing down until the allowance refilled, is closed with
//! `ping_flood_close_code`. Decoding a ping costs a shard CPU whatever is
//! answered: the close is what bounds a flood.
//!
//! An event stream is the same machine with the WebSocket parts left out:
//! what the peer sends is ignored (it sends nothing but its request, and
//! then at most the end of the stream), no pings go out and silence is no
//! sign of death, and closing is ending the stream (no close frame: the
//! transport goes once the queue is written, within `close_timeout`). The
//! queue, its budget and the write-stall rule are the WebSocket's.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::close::CloseCode;
use crate::deflate::{Codec, InflateError};
use crate::frame::{self, FrameDecoder, FrameError, OpCode};
use crate::message::{self, Assembler, CloseFrame, Message, MessageError};
use crate::queue::{OutQueue, OverBudget};
use crate::rate::{Rate, Verdict};
use crate::time::Timestamp;

/// Limits and timers of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionConfig {
    /// Interval between server pings.
    pub heartbeat_interval: Duration,
    /// Extra silence tolerated after an interval before the peer is dropped.
    pub heartbeat_timeout: Duration,
    /// Largest message (and frame) accepted from the client.
    pub max_message_size: usize,
    /// Bytes that may wait in the outbound queue before the connection is
    /// closed as a slow consumer.
    pub max_queued_bytes: usize,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// Code sent when the heartbeat expires.
    pub heartbeat_close_code: CloseCode,
    /// Code sent when the outbound queue goes over budget.
    pub slow_consumer_close_code: CloseCode,
    /// Pings per second the peer may send, with bursts of twice that: the
    /// ones over it are not answered, and a peer still over it
    /// [`OVER_LIMIT_GRACE`](crate::node::OVER_LIMIT_GRACE) after it first
    /// went over is closed with `ping_flood_close_code`. 0: no limit (the
    /// default here; the server's default is 10).
    pub ping_rate: u32,
    /// Code sent when the peer keeps pinging over `ping_rate`.
    pub ping_flood_close_code: CloseCode,
    /// How the connection's bytes are framed.
    pub framing: Framing,
}

/// How a connection's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// RFC 6455 frames both ways (the default).
    WebSocket,
    /// A one-way byte stream (a Server-Sent Events response): input is
    /// ignored, no pings, no heartbeat expiry, and no close frame.
    EventStream,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            max_message_size: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            close_timeout: Duration::from_secs(5),
            heartbeat_close_code: CloseCode::GOING_AWAY,
            slow_consumer_close_code: CloseCode::POLICY_VIOLATION,
            ping_rate: 0,
            ping_flood_close_code: CloseCode::POLICY_VIOLATION,
            framing: Framing::WebSocket,
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's (or the close timeout).
    Closing,
    /// Done: once the queue is written (or dropped), the transport goes.
    Closed,
}

/// Why a connection ended: who is at fault and what was said.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// The peer started the close handshake (its code, if it sent one).
    Peer(Option<CloseFrame>),
    /// The application closed it.
    Local(CloseCode),
    /// The peer broke a framing rule.
    Frame(FrameError),
    /// The peer broke a message rule (fragmentation, UTF-8, close payload).
    Message(MessageError),
    /// The peer sent a compressed message that does not inflate, or
    /// inflates past `max_message_size` (permessage-deflate).
    Inflate(InflateError),
    /// Nothing arrived for heartbeat interval + timeout.
    HeartbeatTimeout,
    /// Bytes waited for the peer for heartbeat interval + timeout and it
    /// took none of them (it may still be sending).
    WriteStalled,
    /// The outbound queue went over its budget.
    SlowConsumer(OverBudget),
    /// The peer kept pinging faster than `ping_rate` for
    /// [`OVER_LIMIT_GRACE`](crate::node::OVER_LIMIT_GRACE).
    PingFlood,
    /// The transport ended without a close handshake (or the peer never
    /// answered ours).
    Abnormal,
}

impl CloseCause {
    /// The close code that describes this end (1006 when none was exchanged).
    pub fn code(&self, config: &ConnectionConfig) -> CloseCode {
        match self {
            CloseCause::Peer(Some(f)) => f.code,
            CloseCause::Peer(None) => CloseCode::NO_STATUS,
            CloseCause::Local(code) => *code,
            CloseCause::Frame(e) => e.close_code(),
            CloseCause::Message(e) => e.close_code(),
            CloseCause::Inflate(e) => e.close_code(),
            CloseCause::HeartbeatTimeout => config.heartbeat_close_code,
            CloseCause::SlowConsumer(_) | CloseCause::WriteStalled => {
                config.slow_consumer_close_code
            }
            CloseCause::PingFlood => config.ping_flood_close_code,
            CloseCause::Abnormal => CloseCode::ABNORMAL,
        }
    }

    /// Who or what ended the connection, in a few words (for logs).
    pub fn label(&self) -> &'static str {
        match self {
            CloseCause::Peer(_) => "closed by the client",
            CloseCause::Local(_) => "closed by the server",
            CloseCause::Frame(_) => "client broke the framing rules",
            CloseCause::Message(_) => "client broke the message rules",
            CloseCause::Inflate(_) => "client sent a compressed message that does not inflate",
            CloseCause::HeartbeatTimeout => "nothing received in time",
            CloseCause::WriteStalled => "client took no bytes in time",
            CloseCause::SlowConsumer(_) => "outbound queue over its budget",
            CloseCause::PingFlood => "client pinged faster than its allowance",
            CloseCause::Abnormal => "transport ended without a close handshake",
        }
    }
}

/// What a connection tells its application.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// A complete text message (valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// The connection has ended; emitted exactly once, last.
    Closed(CloseCause),
}

/// One client connection (server side).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    state: State,
    /// The transport refused bytes since the queue was last empty: the
    /// peer is not keeping up, and the budget applies.
    blocked: bool,
    decoder: FrameDecoder,
    assembler: Assembler,
    /// Partial-frame remainder; empty (and unallocated) while idle.
    inbuf: BytesMut,
    queue: OutQueue,
    events: VecDeque<Event>,
    last_seen: Timestamp,
    next_ping: Timestamp,
    /// While open: since when the bytes waiting in the queue have waited
    /// for the peer to take some (set while the queue is not empty; the
    /// peer has heartbeat interval + timeout from then). Stored as the
    /// instant, not the deadline, so queueing costs no arithmetic on the
    /// fan-out path. While closing or closed: when to stop waiting for the close
    /// handshake or for the last bytes to be written. One field for both
    /// keeps an idle connection small.
    deadline: Option<Timestamp>,
    /// Set once the close cause is known; reported with `Event::Closed`.
    /// Boxed: only a closing connection has one.
    cause: Option<Box<CloseCause>>,
    /// The peer's ping allowance under `ping_rate`: made, full, at its
    /// first ping (which is what a bucket made full at the open would hold
    /// then, refills being capped at the burst), so a connection that
    /// never pings (a browser's) costs a pointer here, not the bucket.
    pings: Option<Box<Rate>>,
    /// Shared by every connection of a node: one pointer per connection
    /// instead of a copy (idle memory per connection is a headline figure).
    config: Rc<ConnectionConfig>,
}

impl Connection {
    /// A connection that has just completed its handshake at `now`.
    pub fn new(now: Timestamp, config: ConnectionConfig) -> Self {
        Self::with_config(now, Rc::new(config))
    }

    /// Like [`Connection::new`], sharing a configuration with others.
    pub fn with_config(now: Timestamp, config: Rc<ConnectionConfig>) -> Self {
        Connection {
            state: State::Open,
            blocked: false,
            decoder: FrameDecoder::new(config.max_message_size),
            assembler: Assembler::new(config.max_message_size),
            inbuf: BytesMut::new(),
            queue: OutQueue::new(),
            events: VecDeque::new(),
            last_seen: now,
            next_ping: now + config.heartbeat_interval,
            deadline: None,
            cause: None,
            pings: None,
            config,
        }
    }

    /// permessage-deflate was negotiated (RFC 7692): the peer may send
    /// compressed messages (RSV1), and may be sent compressed frames. The
    /// one bit of compression state a connection has (in its decoder).
    pub fn enable_deflate(&mut self) {
        self.decoder = self.decoder.clone().with_rsv1();
    }

    /// True if permessage-deflate was negotiated.
    #[inline]
    pub fn deflate(&self) -> bool {
        self.decoder.allows_rsv1()
    }

    /// The connection's configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes received from the peer. A compressed message (only with
    /// permessage-deflate negotiated) is inflated with a codec made for
    /// the call; a node passes its shard's with
    /// [`Connection::handle_read_with`].
    pub fn handle_read(&mut self, now: Timestamp, data: &[u8]) {
        self.handle_read_with(now, data, None);
    }

    /// Bytes received from the peer; compressed messages are inflated with
    /// `codec` (the shard's one inflater, reset per message: no context
    /// takeover), or a codec made for the call if `None`.
    pub fn handle_read_with(&mut self, now: Timestamp, data: &[u8], mut codec: Option<&mut Codec>) {
        if self.state == State::Closed || data.is_empty() {
            return;
        }
        if self.config.framing == Framing::EventStream {
            // The stream only writes: whatever the peer sends after its
            // request is not ours to read, and is not kept.
            return;
        }
        self.last_seen = now;
        self.inbuf.extend_from_slice(data);
        loop {
            if self.state == State::Closed {
                break;
            }
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(f)) => match self.assembler.push(f) {
                    Ok(Some(Message::Compressed { text, data })) => {
                        self.on_compressed(now, text, &data, codec.as_deref_mut())
                    }
                    Ok(Some(msg)) => self.on_message(now, msg),
                    Ok(None) => {}
                    Err(e) => {
                        let code = e.close_code();
                        self.fail(now, code, CloseCause::Message(e));
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let code = e.close_code();
                    self.fail(now, code, CloseCause::Frame(e));
                }
            }
        }
        if self.inbuf.is_empty() || self.state == State::Closed {
            // Hold no read memory while idle.
            self.inbuf = BytesMut::new();
        }
    }

    /// The peer closed its side of the transport (or it broke).
    pub fn handle_eof(&mut self, now: Timestamp) {
        if self.state == State::Closed {
            // Closed but still flushing our last frames: the transport is
            // gone, so they can never be written; don't wait out the
            // close timeout for them.
            self.queue.clear();
            self.deadline = None;
            return;
        }
        let cause = match self.cause.take() {
            // We had already decided why it ends (e.g. we sent a close).
            Some(c) if self.state == State::Closing => *c,
            _ => CloseCause::Abnormal,
        };
        self.queue.clear();
        self.finish(now, cause);
    }

    /// Fires the timers that are due at `now`; safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match self.state {
            State::Closed => {
                if self.deadline.is_some_and(|d| now >= d) {
                    // The peer stopped reading: drop what it never took.
                    self.queue.clear();
                    self.deadline = None;
                }
            }
            State::Closing => {
                if self.deadline.is_some_and(|d| now >= d) {
                    // The peer never answered our close frame.
                    self.queue.clear();
                    let cause = self.cause.take().map_or(CloseCause::Abnormal, |c| *c);
                    self.finish(now, cause);
                }
            }
            State::Open => {
                if self.stalled_at().is_some_and(|d| now >= d) {
                    // The peer has not taken a byte for a whole heartbeat:
                    // whatever it sends, it does not read.
                    self.queue.discard_unstarted();
                    let code = self.config.slow_consumer_close_code;
                    self.start_close(now, code, "slow consumer", CloseCause::WriteStalled);
                    return;
                }
                if self.config.framing == Framing::EventStream {
                    return;
                }
                if now >= self.expiry() {
                    let code = self.config.heartbeat_close_code;
                    self.start_close(now, code, "heartbeat timeout", CloseCause::HeartbeatTimeout);
                    return;
                }
                if now >= self.next_ping {
                    self.enqueue(now, frame::encode(OpCode::Ping, b""));
                    self.next_ping = now + self.config.heartbeat_interval;
                }
            }
        }
    }

    /// The earliest instant at which `handle_timeout` has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Open => {
                if self.config.framing == Framing::EventStream {
                    // Only the write-stall rule: a silent peer is normal.
                    return self.stalled_at();
                }
                // Silence and a stalled queue have the same patience: one
                // deadline from the earlier of the two instants.
                let from = self
                    .waiting_since()
                    .map_or(self.last_seen, |s| s.min(self.last_seen));
                Some(self.next_ping.min(from + self.patience()))
            }
            // Closing, or closed with bytes left: the close deadline;
            // finished: none. (Open first and one arm for the rest: the
            // branch `Node::settle` takes on every delivery is one test.)
            State::Closing | State::Closed => self.deadline.filter(|_| !self.is_finished()),
        }
    }

    fn expiry(&self) -> Timestamp {
        self.last_seen + self.patience()
    }

    /// While open: since when the queued bytes wait. The queue is checked
    /// too, so a driver that advanced the queue directly (tests) never gets
    /// a stale instant.
    fn waiting_since(&self) -> Option<Timestamp> {
        self.deadline.filter(|_| !self.queue.is_empty())
    }

    /// While open: when the waiting bytes will have waited too long.
    fn stalled_at(&self) -> Option<Timestamp> {
        self.waiting_since().map(|s| s + self.patience())
    }

    /// How long the peer may be silent, or take none of our bytes.
    fn patience(&self) -> Duration {
        self.config.heartbeat_interval + self.config.heartbeat_timeout
    }

    /// The driver wrote `n` bytes of the queue.
    #[inline]
    pub fn handle_written(&mut self, now: Timestamp, n: usize) {
        self.queue.advance(n);
        if self.queue.is_empty() {
            self.blocked = false;
        }
        if self.state == State::Open {
            self.deadline = if self.queue.is_empty() {
                None
            } else if n > 0 {
                Some(now)
            } else {
                self.deadline
            };
        }
    }

    /// The transport refused to take more of the queue (the kernel's send
    /// buffer is full): from now until the queue drains, the budget
    /// applies.
    #[inline]
    pub fn handle_write_blocked(&mut self) {
        if !self.queue.is_empty() {
            self.blocked = true;
        }
    }

    /// The budget in force: `max_queued_bytes` while the transport refuses
    /// bytes, none while every write was taken whole (what is queued then
    /// waits only for the driver's next write, not for the reader).
    #[inline]
    fn budget(&self) -> usize {
        if self.blocked {
            self.config.max_queued_bytes
        } else {
            usize::MAX
        }
    }

    /// Queues a frame whatever the budget (control frames: one heartbeat
    /// ping per interval, our one close frame), starting the write-stall
    /// clock if the queue was empty.
    fn enqueue(&mut self, now: Timestamp, frame: Bytes) {
        self.start_stall_clock(now);
        self.queue.push_unchecked(frame);
    }

    /// Bytes are about to wait in an empty queue of an open connection: the
    /// peer has `patience()` to start taking them.
    #[inline]
    fn start_stall_clock(&mut self, now: Timestamp) {
        if self.state == State::Open && self.queue.is_empty() {
            self.deadline = Some(now);
        }
    }

    /// The next event for the application.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        // Returned from here rather than tested again below: `Node::after`
        // polls once more per delivery and gets `None`, and this shape
        // keeps that path to two tests.
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if self.events.capacity() > 0 {
            // Drained: an idle connection holds no event storage (it is
            // allocated again by the next read that produces events).
            self.events = VecDeque::new();
        }
        None
    }

    /// True if events wait to be taken with [`Connection::poll_event`].
    #[inline]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Queues one complete, already-encoded server frame (shared bytes).
    ///
    /// Over the byte budget the connection is closed as a slow consumer:
    /// what is queued is dropped (but for a partly written frame), the close
    /// frame goes out, and nothing waits for this client.
    pub fn send(&mut self, now: Timestamp, frame: Bytes) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::NotOpen);
        }
        self.start_stall_clock(now);
        match self.queue.push(frame, self.budget()) {
            Ok(()) => Ok(()),
            Err(over) => {
                self.slow_consumer(now, over);
                Err(SendError::SlowConsumer(over))
            }
        }
    }

    /// Over budget: what is queued is dropped (but for a partly written
    /// frame), the close frame goes out, and nothing waits for this client.
    fn slow_consumer(&mut self, now: Timestamp, over: OverBudget) {
        self.queue.discard_unstarted();
        let code = self.config.slow_consumer_close_code;
        self.start_close(now, code, "slow consumer", CloseCause::SlowConsumer(over));
    }

    /// Starts the close handshake with `code` (the application's decision).
    pub fn close(&mut self, now: Timestamp, code: CloseCode, reason: &str) {
        if self.state == State::Open {
            self.start_close(now, code, reason, CloseCause::Local(code));
        }
    }

    /// The outbound queue: the driver writes from it and advances it.
    pub fn queue(&mut self) -> &mut OutQueue {
        &mut self.queue
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.len()
    }

    /// Bytes held for input: the partial-frame remainder and a partial
    /// fragmented message.
    pub fn buffered_input(&self) -> usize {
        self.inbuf.len() + self.assembler.buffered()
    }

    /// True once the connection is closed and its last bytes are written:
    /// the driver may drop the transport.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed && self.queue.is_empty()
    }

    /// A compressed message (RFC 7692 section 7.2.2): inflated with the
    /// bound of `max_message_size` (a bomb fails at the first step past
    /// it, 1009), checked as text (1007) or binary, then handled as an
    /// uncompressed one would be.
    fn on_compressed(
        &mut self,
        now: Timestamp,
        text: bool,
        data: &[u8],
        codec: Option<&mut Codec>,
    ) {
        if self.state != State::Open {
            return;
        }
        let max = self.config.max_message_size;
        let inflated = match codec {
            Some(c) => c.inflate(data, max),
            None => Codec::new(crate::deflate::DEFAULT_LEVEL).inflate(data, max),
        };
        let inflated = match inflated {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                let code = e.close_code();
                return self.fail(now, code, CloseCause::Inflate(e));
            }
        };
        if text {
            if std::str::from_utf8(&inflated).is_err() {
                let e = MessageError::InvalidUtf8;
                let code = e.close_code();
                return self.fail(now, code, CloseCause::Message(e));
            }
            self.on_message(now, Message::Text(inflated));
        } else {
            self.on_message(now, Message::Binary(inflated));
        }
    }

    fn on_message(&mut self, now: Timestamp, msg: Message) {
        match msg {
            Message::Compressed { text, data } => self.on_compressed(now, text, &data, None),
            Message::Text(b) => {
                if self.state == State::Open {
                    self.events.push_back(Event::Text(b));
                }
            }
            Message::Binary(b) => {
                if self.state == State::Open {
                    self.events.push_back(Event::Binary(b));
                }
            }
            Message::Ping(payload) => {
                // RFC 6455 5.5.3: answer with a pong of the same payload,
                // unless we already sent our close frame, or the peer is
                // over its allowance (a pong is owed only to the latest
                // ping, and a flood gets none while it lasts).
                if self.state != State::Open {
                    return;
                }
                match self.take_ping(now) {
                    Verdict::Pass => {
                        self.start_stall_clock(now);
                        let pong = frame::encode(OpCode::Pong, &payload);
                        if let Err(over) = self.queue.push_pong(pong, self.budget()) {
                            self.slow_consumer(now, over);
                        }
                    }
                    Verdict::Limited => {}
                    Verdict::Close => {
                        // The close handshake, as for any close of ours:
                        // the peer's close (or the close timeout) ends it,
                        // and the flood meanwhile gets no pong. (Failing
                        // at once would reset the socket under the unread
                        // flood, and the peer might never read our code.)
                        let code = self.config.ping_flood_close_code;
                        self.start_close(now, code, "too many requests", CloseCause::PingFlood);
                    }
                }
            }
            Message::Pong(_) => {}
            Message::Close(peer) => match self.state {
                State::Open => {
                    // Echo the peer's code (RFC 6455 5.5.1) and end. The
                    // reply counts against the budget: over it, what the
                    // peer never took is dropped first, so a connection
                    // holds at most its budget plus this one frame.
                    let payload = match &peer {
                        Some(f) => message::encode_close_payload(f.code, ""),
                        None => Vec::new(),
                    };
                    if self.queue.len() > self.config.max_queued_bytes {
                        self.queue.discard_unstarted();
                    }
                    self.queue
                        .push_unchecked(frame::encode(OpCode::Close, &payload));
                    self.finish(now, CloseCause::Peer(peer));
                }
                State::Closing => {
                    let cause = self.cause.take().map_or(CloseCause::Peer(peer), |c| *c);
                    self.finish(now, cause);
                }
                State::Closed => {}
            },
        }
    }

    /// Takes one ping from the peer's allowance at `now`.
    fn take_ping(&mut self, now: Timestamp) -> Verdict {
        let rate = self.config.ping_rate;
        if rate == 0 {
            return Verdict::Pass;
        }
        self.pings
            .get_or_insert_with(|| Box::new(Rate::new(now, rate, 0)))
            .take(now, rate, 0, false)
    }

    /// Fails the connection (RFC 6455 7.1.7): send a close frame and stop
    /// reading; the transport goes once the frame is written.
    fn fail(&mut self, now: Timestamp, code: CloseCode, cause: CloseCause) {
        if self.state == State::Open {
            let payload = message::encode_close_payload(code, "");
            self.queue
                .push_unchecked(frame::encode(OpCode::Close, &payload));
        }
        let cause = match (self.state, self.cause.take()) {
            (State::Closing, Some(c)) => *c,
            _ => cause,
        };
        self.finish(now, cause);
    }

    fn start_close(&mut self, now: Timestamp, code: CloseCode, reason: &str, cause: CloseCause) {
        if self.config.framing == Framing::EventStream {
            // Ending the stream is the whole close: nothing to wait for.
            return self.finish(now, cause);
        }
        let payload = message::encode_close_payload(code, reason);
        self.queue
            .push_unchecked(frame::encode(OpCode::Close, &payload));
        self.state = State::Closing;
        self.deadline = Some(now + self.config.close_timeout);
        self.cause = Some(Box::new(cause));
    }

    fn finish(&mut self, now: Timestamp, cause: CloseCause) {
        self.state = State::Closed;
        // The last frames (our close) get `close_timeout` to be written; a
        // peer that reads nothing must not pin the connection forever.
        self.deadline = if self.queue.is_empty() {
            None
        } else {
            Some(now + self.config.close_timeout)
        };
        self.inbuf = BytesMut::new();
        self.assembler = Assembler::new(self.config.max_message_size);
        self.events.push_back(Event::Closed(cause));
    }
}

/// A frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("connection is not open")]
    NotOpen,
    /// The queue was over budget; the connection is now closing.
    #[error("slow consumer: {0}")]
    SlowConsumer(OverBudget),
}
