//! The WebSocket close status code (RFC 6455 section 7.4): [`CloseCode`]
//! and the standard codes. A leaf: the frame codec and the message layer
//! both map their errors to a code, and wavecast's own codes
//! ([`crate::protocol::close`]) are values of the same type.

use std::fmt;

/// A WebSocket close status code (RFC 6455 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: endpoint going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: connection closed without a close frame. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: message data inconsistent with its type (e.g. invalid UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: unexpected condition on the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: service restart (IANA registry); the client may reconnect.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry), e.g. server overloaded.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// RFC 6455 7.4: may this code appear in a close frame on the wire?
    ///
    /// Allowed: 1000-1003 and 1007-1011 (defined by the RFC), 1012-1014
    /// (registered with IANA since: service restart, try again later, bad
    /// gateway), 3000-3999 (registered by libraries and frameworks) and
    /// 4000-4999 (private use). Not allowed: below 1000 (unused), 1004
    /// (reserved), 1005/1006/1015 (reserved for reporting a missing status,
    /// an abnormal closure and a TLS failure locally, never sent), 1016-2999
    /// (reserved for future protocol revisions, unassigned) and 5000 and up
    /// (outside the RFC's ranges).
    pub fn is_valid_on_wire(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
