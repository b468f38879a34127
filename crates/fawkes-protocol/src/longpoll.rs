//! The body of a long-poll POST, as Phoenix reads it.
//!
//! With `content-type: application/x-ndjson` the body is split on `\n` (a
//! trailing `\r` is dropped): a line starting with `[` is a V2 text frame,
//! any other line is standard base64 (with padding) of a V2 binary frame.
//! Only the first [`MAX_BATCH`] lines are read, as Phoenix 1.7.22+ does. Any
//! other content type makes the whole body one text frame (V1 or V2).

use base64::Engine as _;
use bytes::Bytes;

use crate::Frame;

/// Most lines of one body that are read; the rest are dropped.
pub const MAX_BATCH: usize = 100;

/// A line that is neither a JSON frame nor base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the body is neither a JSON frame nor base64")]
pub struct BodyError {
    /// The line's index, from 0.
    pub line: usize,
}

/// Splits a POST body into frames.
///
/// ```
/// use fawkes_protocol::longpoll::decode_body;
/// use bytes::Bytes;
///
/// let frames = decode_body(true, &Bytes::from("[\"1\",\"1\",\"t\",\"phx_join\",{}]\r\nAAAAAAA=")).unwrap();
/// assert_eq!(frames.len(), 2);
/// assert!(frames[0].as_text().is_some());
/// assert_eq!(&frames[1].data[..], &[0, 0, 0, 0, 0]);
/// ```
///
/// # Errors
///
/// A line that is neither.
pub fn decode_body(ndjson: bool, body: &Bytes) -> Result<Vec<Frame>, BodyError> {
    if !ndjson {
        return Ok(vec![Frame::text(body.clone())]);
    }
    let mut frames = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').take(MAX_BATCH).enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'[') {
            frames.push(Frame::text(body.slice_ref(line)));
        } else {
            let bin = base64::engine::general_purpose::STANDARD.decode(line).map_err(|_| BodyError { line: i })?;
            frames.push(Frame::binary(bin));
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_capped_and_bad_lines_refused() {
        let body: String =
            (0..150).map(|i| format!("[null,\"{i}\",\"phoenix\",\"heartbeat\",{{}}]")).collect::<Vec<_>>().join("\n");
        assert_eq!(decode_body(true, &Bytes::from(body)).unwrap().len(), MAX_BATCH);
        assert_eq!(decode_body(true, &Bytes::from("[]\n!!!")), Err(BodyError { line: 1 }));
        // an empty line is an (empty, invalid) binary frame, as in Phoenix
        assert_eq!(decode_body(true, &Bytes::from("")).unwrap(), vec![Frame::binary(Vec::new())]);
        assert_eq!(decode_body(false, &Bytes::from("{\"a\":1}\n[")).unwrap(), vec![Frame::text("{\"a\":1}\n[")]);
    }
}
