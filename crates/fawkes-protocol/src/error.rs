use thiserror::Error;

/// Why a frame from a client could not be decoded into a message.
///
/// Phoenix answers every one of these by closing the connection (WebSocket
/// close code 1011).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is not valid JSON, or not JSON of the expected shape.
    #[error("invalid JSON frame: {0}")]
    Json(#[from] serde_json::Error),
    /// A V1 frame was not a JSON object.
    #[error("the V1 serializer expects a JSON object")]
    NotAnObject,
    /// A V2 text frame was not a JSON array.
    #[error("the V2 serializer expects a JSON array")]
    NotAnArray,
    /// A V2 text frame had fewer than five elements.
    #[error("the V2 serializer expects 5 elements, got {0}")]
    TooFewElements(usize),
    /// A field that must be a string was not.
    #[error("the {0} must be a string")]
    NotAString(&'static str),
    /// A binary frame was sent to a serializer without binary support (V1).
    #[error("binary frames are not supported by this serializer")]
    BinaryUnsupported,
    /// A binary frame's first byte is not a kind this direction allows.
    #[error("unknown binary frame kind {0}")]
    UnknownKind(u8),
    /// A binary frame ends before the lengths in its header say it should.
    #[error("truncated binary frame")]
    Truncated,
    /// A text field of a binary frame is not valid UTF-8.
    #[error("the {0} of a binary frame is not valid UTF-8")]
    InvalidUtf8(&'static str),
}

/// Why a message could not be encoded for a client.
///
/// Phoenix raises in the sending process for each of these; Fawkes turns them
/// into an error of the call that tried to send.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field of a V2 binary frame is longer than its one-byte length prefix allows.
    #[error("unable to encode the {field} of a binary frame: {len} bytes, at most 255")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// V2 pushes and broadcasts carry a JSON object or binary, nothing else.
    #[error("push and broadcast payloads must be JSON objects or binary")]
    PayloadNotAnObject,
    /// The V1 serializer has no binary frames.
    #[error("the V1 serializer cannot carry binary payloads")]
    BinaryUnsupported,
    /// A ref could not be written as JSON.
    #[error("unable to encode a ref: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why a requested `vsn` was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VsnError {
    /// The `vsn` is not a semantic version (`major.minor.patch`).
    #[error("invalid transport version {0:?}")]
    Invalid(String),
    /// The `vsn` is a version that no serializer accepts.
    #[error("the client's requested transport version {0:?} does not match ~> 1.0.0 or ~> 2.0.0")]
    Unsupported(String),
}
