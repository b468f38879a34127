use std::fmt;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// The payload of a message: JSON or raw binary.
///
/// JSON payloads are kept as validated JSON text ([`Json`]), so a payload
/// received from a client can be sent on without being parsed and written
/// again. Binary payloads exist only with the V2 serializer.
///
/// Two JSON payloads are equal when they hold equal JSON values, whatever
/// their formatting.
///
/// # Example
///
/// ```
/// use fawkes_protocol::Payload;
/// use serde_json::json;
///
/// let p = Payload::from(json!({"body": "hi"}));
/// assert!(p.is_object());
/// assert_eq!(p.to_value().unwrap()["body"], "hi");
/// assert_eq!(p, Payload::json_text(r#"{ "body" : "hi" }"#).unwrap());
/// ```
#[derive(Clone)]
pub enum Payload {
    /// A JSON value.
    Json(Json),
    /// Raw bytes (V2 binary frames).
    Binary(Bytes),
}

/// Validated JSON text, shared by reference counting.
#[derive(Clone)]
pub struct Json(Bytes);

impl Json {
    /// Validates `text` as one JSON value.
    ///
    /// # Errors
    ///
    /// When `text` is not exactly one JSON value.
    pub fn from_bytes(text: impl Into<Bytes>) -> Result<Json, serde_json::Error> {
        let text = text.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&text)?;
        Ok(Json(text))
    }

    pub(crate) fn from_trusted(text: Bytes) -> Json {
        Json(text)
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// True when the value is a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Deserializes the value into `T`.
    ///
    /// # Errors
    ///
    /// When the JSON does not have `T`'s shape.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
            || matches!(
                (self.decode::<Value>(), other.decode::<Value>()),
                (Ok(a), Ok(b)) if a == b
            )
    }
}

impl Payload {
    /// The size of the payload in bytes: its JSON text, or its raw bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(j) => j.as_bytes().len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// True for a zero-length binary payload (JSON text is never empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The empty JSON object `{}`, the payload of most replies and of
    /// `phx_close`/`phx_error`.
    pub fn empty() -> Payload {
        Payload::Json(Json(Bytes::from_static(b"{}")))
    }

    /// Serializes `value` as a JSON payload.
    ///
    /// # Errors
    ///
    /// When `value`'s `Serialize` implementation fails (for example a map with
    /// non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        Ok(Payload::Json(Json(Bytes::from(serde_json::to_vec(value)?))))
    }

    /// A JSON payload from JSON text, validated.
    ///
    /// # Errors
    ///
    /// When `text` is not exactly one JSON value.
    pub fn json_text(text: impl Into<Bytes>) -> Result<Payload, serde_json::Error> {
        Json::from_bytes(text).map(Payload::Json)
    }

    /// A binary payload.
    pub fn binary(data: impl Into<Bytes>) -> Payload {
        Payload::Binary(data.into())
    }

    /// True for a JSON object (the only JSON that V2 pushes and broadcasts may carry).
    pub fn is_object(&self) -> bool {
        matches!(self, Payload::Json(j) if j.is_object())
    }

    /// True for a binary payload.
    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }

    /// The bytes of a binary payload.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Payload::Binary(b) => Some(b),
            Payload::Json(_) => None,
        }
    }

    /// The JSON of a JSON payload.
    pub fn as_json(&self) -> Option<&Json> {
        match self {
            Payload::Json(j) => Some(j),
            Payload::Binary(_) => None,
        }
    }

    /// Deserializes a JSON payload into `T`.
    ///
    /// # Errors
    ///
    /// When the payload is binary or its JSON does not have `T`'s shape.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match self {
            Payload::Json(j) => j.decode(),
            Payload::Binary(_) => Err(serde::de::Error::custom("the payload is binary, not JSON")),
        }
    }

    /// The payload as a JSON value.
    ///
    /// # Errors
    ///
    /// When the payload is binary.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.decode()
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::empty()
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Payload {
        // Writing a `Value` into a Vec cannot fail: its map keys are strings.
        Payload::Json(Json(Bytes::from(v.to_string())))
    }
}

impl From<serde_json::Map<String, Value>> for Payload {
    /// A JSON object, such as what `Presence::list` returns.
    fn from(m: serde_json::Map<String, Value>) -> Payload {
        Payload::from(Value::Object(m))
    }
}

impl From<&Value> for Payload {
    fn from(v: &Value) -> Payload {
        // Writing a `Value` into a Vec cannot fail: its map keys are strings.
        Payload::Json(Json(Bytes::from(v.to_string())))
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload::Binary(b)
    }
}

/// What can be sent as a payload: a [`Payload`], a `serde_json::Value`
/// (`json!({...})`, by value or by reference), a JSON object
/// (`serde_json::Map`, such as what `Presence::list` returns) or [`Bytes`]
/// (binary, V2 only).
///
/// A value of any other `Serialize` type becomes a payload with
/// [`Payload::json`], which fails when its `Serialize` implementation does:
///
/// ```
/// use fawkes_protocol::{IntoPayload, Payload};
///
/// #[derive(serde::Serialize)]
/// struct Deploy {
///     id: u64,
/// }
///
/// let p: Payload = Payload::json(&Deploy { id: 7 }).unwrap();
/// assert_eq!(p, serde_json::json!({"id": 7}));
/// assert_eq!(serde_json::json!({"id": 7}).into_payload(), p);
/// ```
///
/// Passing anything else is refused at compile time with a message that
/// says so:
///
/// ```compile_fail
/// # use fawkes_protocol::{IntoPayload, Payload};
/// #[derive(serde::Serialize)]
/// struct Deploy {
///     id: u64,
/// }
/// fn push(_payload: impl IntoPayload) {}
/// // error[E0277]: `Deploy` is not a payload
/// //   = note: a `Serialize` value becomes one with `Payload::json(&value)?`
/// push(Deploy { id: 7 });
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a payload",
    label = "expected a payload here",
    note = "a payload is a `serde_json::Value` (`json!({{...}})`), a `serde_json::Map`, `Bytes` or a `Payload`",
    note = "a `Serialize` value becomes one with `Payload::json(&value)?`"
)]
pub trait IntoPayload {
    /// The payload.
    fn into_payload(self) -> Payload;
}

impl IntoPayload for Payload {
    fn into_payload(self) -> Payload {
        self
    }
}

impl IntoPayload for Value {
    fn into_payload(self) -> Payload {
        Payload::from(self)
    }
}

impl IntoPayload for &Value {
    fn into_payload(self) -> Payload {
        Payload::from(self)
    }
}

impl IntoPayload for serde_json::Map<String, Value> {
    fn into_payload(self) -> Payload {
        Payload::from(self)
    }
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Payload {
        Payload::from(self)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(j) => fmt::Debug::fmt(j, f),
            Payload::Binary(b) => write!(f, "<binary {} bytes>", b.len()),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Payload::Json(a), Payload::Json(b)) => a == b,
            (Payload::Binary(a), Payload::Binary(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        matches!(self.to_value(), Ok(v) if &v == other)
    }
}

#[cfg(test)]
mod conversion_tests {
    use super::*;

    #[test]
    fn maps_and_borrowed_values_convert() {
        let mut m = serde_json::Map::new();
        m.insert("a".into(), Value::from(1));
        assert!(Payload::from(m.clone()).is_object());
        assert_eq!(Payload::from(&Value::Object(m)).to_value().unwrap(), serde_json::json!({"a": 1}));
    }
}
