//! Opcodes (RFC 6455 §5.2) and close codes (RFC 6455 §7.4).

/// A frame opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: text message (UTF-8).
    Text,
    /// 0x2: binary message.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
    /// 0x3-0x7 and 0xB-0xF: reserved for future use.
    Reserved(u8),
}

impl OpCode {
    /// Whether this is a control opcode (0x8-0xF).
    #[must_use]
    pub fn is_control(self) -> bool {
        u8::from(self) & 0x8 != 0
    }
}

impl From<u8> for OpCode {
    fn from(v: u8) -> Self {
        match v & 0x0f {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => Self::Reserved(other),
        }
    }
}

impl From<OpCode> for u8 {
    fn from(op: OpCode) -> u8 {
        match op {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(v) => v & 0x0f,
        }
    }
}

/// Named close codes (RFC 6455 §7.4.1 and the IANA registry).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Unsupported data type.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// The connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// Payload data inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Message too big.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: u16 = 1010;
    /// Unexpected condition on the server.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The service is restarting.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Bad gateway.
    pub const BAD_GATEWAY: u16 = 1014;
    /// TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: u16 = 1015;
}

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4).
///
/// 1000-1003 and 1007-1014 are defined for use; 3000-4999 belong to libraries and applications.
/// 1004-1006 and 1015 are reserved or local-only, everything else below 3000 is unassigned.
#[must_use]
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_round_trip() {
        for v in 0u8..16 {
            let op = OpCode::from(v);
            assert_eq!(u8::from(op), v);
            assert_eq!(op.is_control(), v >= 8);
            let reserved = matches!(op, OpCode::Reserved(_));
            assert_eq!(reserved, matches!(v, 3..=7 | 0xB..=0xF), "{v}");
        }
    }

    #[test]
    fn close_code_validity() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!is_valid_close_code(code), "{code}");
        }
    }
}
