//! Close codes and close frames (RFC 6455 sections 5.5.1 and 7.4).

use crate::frame::{write_frame, Opcode, MAX_CONTROL_PAYLOAD};
use crate::Error;

/// 1000: the purpose of the connection is fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (a server shutting down, a page left).
pub const GOING_AWAY: u16 = 1001;
/// 1002: a protocol error.
pub const PROTOCOL: u16 = 1002;
/// 1003: a kind of data the endpoint cannot accept.
pub const UNSUPPORTED: u16 = 1003;
/// 1005: no code was given (reported locally, never sent).
pub const NO_STATUS: u16 = 1005;
/// 1006: the connection closed without a close frame (reported locally,
/// never sent).
pub const ABNORMAL: u16 = 1006;
/// 1007: data inconsistent with its type (text that is not UTF-8).
pub const INVALID_DATA: u16 = 1007;
/// 1008: a message that violates the endpoint's policy.
pub const POLICY: u16 = 1008;
/// 1009: a message too big to process.
pub const TOO_BIG: u16 = 1009;
/// 1010: the client expected an extension the server did not negotiate.
pub const MANDATORY_EXTENSION: u16 = 1010;
/// 1011: the server met an unexpected condition.
pub const INTERNAL: u16 = 1011;
/// 1012: the service is restarting (IANA registry).
pub const SERVICE_RESTART: u16 = 1012;
/// 1013: try again later, e.g. the server is overloaded (IANA registry).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// 1014: a gateway received an invalid response (IANA registry).
pub const BAD_GATEWAY: u16 = 1014;
/// 1015: the TLS handshake failed (reported locally, never sent).
pub const TLS_HANDSHAKE: u16 = 1015;

/// Whether a close frame may carry `code`: the codes RFC 6455 section 7.4.1
/// defines for the wire (1000-1003, 1007-1011), those IANA registered since
/// (1012-1014), and the ranges for libraries and applications
/// (3000-4999). Not 1004 (reserved), 1005, 1006 and 1015 (only ever
/// reported locally), nor anything else below 3000 or above 4999.
pub fn is_valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What a close frame carries when it is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (valid on the wire).
    pub code: u16,
    /// The reason, at most 123 bytes.
    pub reason: String,
}

/// A close frame's payload: `None` when it is empty, else its code and
/// reason. Refuses a payload of one byte, a code that may not be sent
/// ([`is_valid_on_wire`]) and a reason that is not UTF-8.
pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::CloseTooShort),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !is_valid_on_wire(code) {
                return Err(Error::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason: reason.to_owned() }))
        }
    }
}

/// Appends the server's close frame with `code` and `reason`; a reason
/// longer than the 123 bytes a control frame has room for is cut at a
/// character boundary.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    write_frame(out, Opcode::Close, false, &payload[..2 + end]);
}

/// Appends an empty close frame (no code: the peer reports 1005).
pub fn write_empty_close(out: &mut Vec<u8>) {
    write_frame(out, Opcode::Close, false, &[]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::frame::Header;

    #[test]
    fn the_codes_autobahn_and_the_rfc_name() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            assert!(is_valid_on_wire(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!is_valid_on_wire(code), "{code}");
        }
    }

    #[test]
    fn parses_close_payloads() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[3]), Err(Error::CloseTooShort));
        assert_eq!(parse(&[3, 0xe8]), Ok(Some(CloseFrame { code: 1000, reason: String::new() })));
        assert_eq!(parse(b"\x0f\xa0bye"), Ok(Some(CloseFrame { code: 4000, reason: "bye".into() })));
        assert_eq!(parse(&[3, 0xed]), Err(Error::InvalidCloseCode)); // 1005
        assert_eq!(parse(&[3, 0xe8, 0xff]), Err(Error::InvalidCloseReason));
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        write_close(&mut out, 1000, &reason);
        let (h, size) = Header::parse(&out).unwrap().unwrap();
        assert_eq!((h.opcode, h.len), (Opcode::Close, 124)); // 2 + 61 characters of 2 bytes
        let frame = parse(&out[size..]).unwrap().unwrap();
        assert_eq!(frame.reason, "é".repeat(61));
        let mut out = Vec::new();
        write_empty_close(&mut out);
        assert_eq!(out, [0x88, 0]);
    }
}
