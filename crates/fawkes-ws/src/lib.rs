//! The server's side of the WebSocket protocol (RFC 6455) and of its
//! permessage-deflate extension (RFC 7692), without I/O and without async:
//! bytes read from a connection go into a [`Reader`], which hands back
//! whole messages and control frames; frames for the client are appended to
//! a `Vec<u8>` that the caller writes when it likes.
//!
//! It is split as the protocol is:
//!
//! * [`frame`]: frame headers (flags, opcodes, the three length encodings),
//!   masking, and writing the server's frames;
//! * [`utf8`]: UTF-8 validation that carries an incomplete character from
//!   one piece of a message to the next;
//! * [`close`]: close codes (which ones may travel on the wire) and close
//!   frames;
//! * [`deflate`]: permessage-deflate's negotiation, and compressing and
//!   decompressing one message without context takeover, the decompressed
//!   size bounded;
//! * [`reader`]: message reassembly from fragments, with control frames
//!   between them, under a size limit;
//! * [`handshake`]: the `Sec-WebSocket-Accept` value.
//!
//! Every input is untrusted: the reader never panics, holds at most the size
//! limit (plus one frame header or control frame) whatever it is fed, and
//! refuses a violation with an [`Error`] that names the close code it calls
//! for. After an error, or after the client's close frame, it reads nothing
//! more.
//!
//! ```
//! use fawkes_ws::frame::{self, Header, Opcode};
//! use fawkes_ws::{Event, MessageKind, Reader};
//!
//! // what a client sends: a masked text frame
//! let mask = [1, 2, 3, 4];
//! let mut payload = b"hello".to_vec();
//! frame::apply_mask(&mut payload, mask, 0);
//! let mut wire = Vec::new();
//! Header { fin: true, rsv1: false, opcode: Opcode::Text, mask: Some(mask), len: 5 }.write(&mut wire);
//! wire.extend_from_slice(&payload);
//!
//! let mut reader = Reader::new(1 << 20, false);
//! reader.feed(&wire[..3]); // any split will do
//! assert_eq!(reader.next_event(), Ok(None));
//! reader.feed(&wire[3..]);
//! let Ok(Some(Event::Message(msg))) = reader.next_event() else { panic!() };
//! assert_eq!((msg.kind, &msg.data[..]), (MessageKind::Text, &b"hello"[..]));
//!
//! // the echo, as the server writes it
//! let mut out = Vec::new();
//! frame::write_frame(&mut out, Opcode::Text, false, &msg.data);
//! assert_eq!(out, b"\x81\x05hello");
//! ```
#![forbid(unsafe_code)]

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod reader;
pub mod utf8;

pub use reader::{Event, Message, MessageKind, Reader};

/// A violation of the protocol by the client, and the close code it calls
/// for ([`Error::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// RSV2 or RSV3 is set (no extension that uses them is ever
    /// negotiated).
    ReservedBits,
    /// An opcode that RFC 6455 reserves (3-7, 11-15).
    ReservedOpcode,
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame longer than 125 bytes.
    ControlTooLong,
    /// A frame from the client that is not masked.
    Unmasked,
    /// A continuation frame while no fragmented message is open.
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is open.
    ExpectedContinuation,
    /// RSV1 on a data frame while permessage-deflate is not in use.
    CompressedWithoutExtension,
    /// RSV1 on a continuation frame (only a message's first frame carries
    /// it).
    CompressedContinuation,
    /// RSV1 on a control frame.
    CompressedControl,
    /// A close frame whose payload is one byte (a code takes two).
    CloseTooShort,
    /// A close code that may not be sent (see [`close::is_valid_on_wire`]).
    InvalidCloseCode,
    /// A close reason that is not UTF-8.
    InvalidCloseReason,
    /// A text message that is not UTF-8 (found as soon as the bytes that
    /// prove it arrive).
    InvalidUtf8,
    /// A compressed message that is not valid deflate data.
    InvalidDeflate,
    /// A message (compressed or not, or once decompressed) longer than the
    /// reader's limit.
    TooBig,
}

impl Error {
    /// The close code to send the client: 1009 for a message too big, 1007
    /// for data that is not what it says (UTF-8, deflate), 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            Error::TooBig => close::TOO_BIG,
            Error::InvalidUtf8 | Error::InvalidCloseReason | Error::InvalidDeflate => close::INVALID_DATA,
            _ => close::PROTOCOL,
        }
    }

    /// A short reason for the close frame (ASCII, well under the 123 bytes a
    /// close frame has room for).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ReservedBits => "reserved bits set",
            Error::ReservedOpcode => "unknown opcode",
            Error::FragmentedControl => "fragmented control frame",
            Error::ControlTooLong => "control frame too long",
            Error::Unmasked => "client frames must be masked",
            Error::UnexpectedContinuation => "continuation without a message",
            Error::ExpectedContinuation => "new message inside a fragmented one",
            Error::CompressedWithoutExtension => "compressed frame without permessage-deflate",
            Error::CompressedContinuation => "RSV1 on a continuation frame",
            Error::CompressedControl => "RSV1 on a control frame",
            Error::CloseTooShort => "close frame of one byte",
            Error::InvalidCloseCode => "invalid close code",
            Error::InvalidCloseReason => "close reason is not UTF-8",
            Error::InvalidUtf8 => "text message is not UTF-8",
            Error::InvalidDeflate => "invalid deflate data",
            Error::TooBig => "message too big",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Error {}
