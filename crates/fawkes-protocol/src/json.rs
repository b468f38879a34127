//! Small JSON writing helpers shared by the serializers.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::{EncodeError, Json, Ref};

/// Writes `s` as a JSON string, escaping as Phoenix's encoder (Jason) does by
/// default: quotes, backslashes and control characters; everything else as is.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escape);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Writes an optional ref: `null` when absent.
pub(crate) fn write_ref(buf: &mut Vec<u8>, r: Option<&Ref>) -> Result<(), EncodeError> {
    match r {
        None => buf.extend_from_slice(b"null"),
        Some(r) => match r.as_value() {
            serde_json::Value::String(s) => write_str(buf, s),
            v => serde_json::to_writer(&mut *buf, v)?,
        },
    }
    Ok(())
}

/// The payload's bytes as a slice of `input` when `raw` borrows from it, which
/// it does whenever it was parsed from `input`; a copy otherwise.
pub(crate) fn slice_raw(input: &Bytes, raw: &RawValue) -> Json {
    let text = raw.get().as_bytes();
    let base = input.as_ptr() as usize;
    let at = text.as_ptr() as usize;
    if at >= base && at + text.len() <= base + input.len() {
        let start = at - base;
        Json::from_trusted(input.slice(start..start + text.len()))
    } else {
        Json::from_trusted(Bytes::copy_from_slice(text))
    }
}

/// A required string field of a decoded frame.
pub(crate) fn string_field(v: serde_json::Value, field: &'static str) -> Result<String, crate::DecodeError> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(crate::DecodeError::NotAString(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in ["", "plain", "quote\" back\\ slash/", "\n\r\t\u{8}\u{c}\u{0}\u{1f}", "日本語 🎉", "\u{2028}"] {
            let mut buf = Vec::new();
            write_str(&mut buf, s);
            assert_eq!(String::from_utf8(buf).unwrap(), serde_json::to_string(s).unwrap());
        }
    }
}
