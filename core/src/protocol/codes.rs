//! wavecast's own codes: the WebSocket close codes it ends connections
//! with ([`close`], each a typed [`CloseCode`](crate::close::CloseCode)),
//! and the codes of its server-side `unsubscribe` push
//! ([`unsubscribe_code`]), each with the client's rule (reconnect?
//! resubscribe?).

/// WebSocket close codes the server uses to end a connection. Codes
/// 4000-4499 mean "reconnect (with backoff), then resubscribe with recover";
/// codes 4500-4999 mean "do not reconnect": reconnecting would only repeat
/// the failure. Documented in docs/PROTOCOL.md.
pub mod close {
    use crate::close::CloseCode;

    /// The server is shutting down or restarting; reconnect and recover.
    pub const SHUTDOWN: CloseCode = CloseCode(4000);
    /// Nothing arrived from the client (not even a pong) within the
    /// heartbeat deadline; reconnect.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4001);
    /// The client read too slowly: its outbound queue outgrew its budget and
    /// publications were dropped; reconnect and recover.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4002);
    /// The server lost state it needs for this connection (a gap from the
    /// backbone it cannot fill); reconnect and recover.
    pub const INSUFFICIENT_STATE: CloseCode = CloseCode(4003);
    /// Disconnected through the server API, reconnecting allowed.
    pub const DISCONNECTED: CloseCode = CloseCode(4004);
    /// The connection's token expired and was not refreshed in time: get a
    /// new token, then reconnect.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4005);
    /// The client sent a message that cannot be trusted (not the
    /// connection's encoding, not an object, no usable id, wrong frame
    /// type); a client bug, so do not reconnect.
    pub const BAD_COMMAND: CloseCode = CloseCode(4500);
    /// Disconnected through the server API for good; do not reconnect.
    pub const FORCE_DISCONNECT: CloseCode = CloseCode(4501);
    /// No `connect` within the connect timeout where one is required.
    pub const CONNECT_TIMEOUT: CloseCode = CloseCode(4502);
    /// Bad credentials (a token that does not verify, another user's token
    /// on refresh): do not reconnect until the application has new
    /// credentials.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4503);
    /// The connection kept sending faster than its rate limit.
    pub const TOO_MANY_REQUESTS: CloseCode = CloseCode(4504);

    /// Every wavecast close code, in numeric order (for docs and tests).
    pub const ALL: [CloseCode; 11] = [
        SHUTDOWN,
        HEARTBEAT_TIMEOUT,
        SLOW_CONSUMER,
        INSUFFICIENT_STATE,
        DISCONNECTED,
        TOKEN_EXPIRED,
        BAD_COMMAND,
        FORCE_DISCONNECT,
        CONNECT_TIMEOUT,
        UNAUTHORIZED,
        TOO_MANY_REQUESTS,
    ];

    /// Whether a client whose connection closed with `code` should
    /// reconnect (with backoff) and resubscribe with recover.
    ///
    /// 4000-4499: yes; 4500-4999: no. For the standard codes: 1000 (a normal
    /// closure, which the client asked for) and the codes that say the
    /// client broke the WebSocket protocol (1002, 1003, 1007, 1008, 1009,
    /// 1010) mean no; anything else (1001 going away, 1006 abnormal closure,
    /// 1011 server error, 1012 restart, 1013 try again later, ...) means yes.
    pub fn should_reconnect(code: CloseCode) -> bool {
        match code.0 {
            4000..=4499 => true,
            4500..=4999 => false,
            1000 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010 => false,
            _ => true,
        }
    }

    /// The short reason text sent in the close frame with `code` (well
    /// under the 123-byte limit of RFC 6455 section 5.5).
    pub fn reason(code: CloseCode) -> &'static str {
        match code {
            SHUTDOWN => "server shutdown",
            HEARTBEAT_TIMEOUT => "heartbeat timeout",
            SLOW_CONSUMER => "slow consumer",
            INSUFFICIENT_STATE => "insufficient state",
            DISCONNECTED => "disconnected",
            TOKEN_EXPIRED => "token expired",
            BAD_COMMAND => "bad command",
            FORCE_DISCONNECT => "disconnected, do not reconnect",
            CONNECT_TIMEOUT => "connect timeout",
            UNAUTHORIZED => "unauthorized",
            TOO_MANY_REQUESTS => "too many requests",
            _ => "",
        }
    }
}

/// Codes of the server-side unsubscribe push
/// (`{"push": {"channel": C, "unsubscribe": {"code": N, "reason": R}}}`).
/// Codes 2000-2499 mean "stay unsubscribed"; 2500-2999 mean "resubscribe
/// with recover" (the subscription had a gap the server cannot fill).
pub mod unsubscribe_code {
    /// Unsubscribed by the server (e.g. through the server API); do not
    /// resubscribe.
    pub const SERVER: u16 = 2000;
    /// The connection may no longer use the channel; do not resubscribe.
    pub const PERMISSION_REVOKED: u16 = 2001;
    /// The server could not deliver every publication to this subscription
    /// (a gap it cannot fill); resubscribe with recover from the last offset
    /// received.
    pub const INSUFFICIENT_STATE: u16 = 2500;
    /// The subscription token expired and was not refreshed: get a new one
    /// and resubscribe with recover.
    pub const TOKEN_EXPIRED: u16 = 2501;

    /// Whether the client should resubscribe (with recover) after an
    /// unsubscribe push with `code`.
    pub fn should_resubscribe(code: u16) -> bool {
        (2500..=2999).contains(&code)
    }
}
