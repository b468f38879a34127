use bytes::Bytes;

/// Whether a frame travels as text or binary (the WebSocket opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// A text frame (UTF-8 JSON).
    Text,
    /// A binary frame.
    Binary,
}

/// One encoded frame: the bytes of one WebSocket message, or one long-poll
/// message.
///
/// Cloning is cheap: the bytes are reference counted, so a broadcast encoded
/// once is shared by every subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Text or binary.
    pub opcode: Opcode,
    /// The frame's bytes.
    pub data: Bytes,
}

impl Frame {
    /// A text frame.
    pub fn text(data: impl Into<Bytes>) -> Self {
        Frame { opcode: Opcode::Text, data: data.into() }
    }

    /// A binary frame.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Frame { opcode: Opcode::Binary, data: data.into() }
    }

    /// The text of a text frame that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self.opcode {
            Opcode::Text => std::str::from_utf8(&self.data).ok(),
            Opcode::Binary => None,
        }
    }
}
