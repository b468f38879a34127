//! The V2 serializer's text frames: JSON arrays.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::{value::RawValue, Value};

use crate::json::{slice_raw, string_field, write_ref, write_str};
use crate::{DecodeError, EncodeError, Frame, Message, Payload, Ref, Reply};

struct V2In<'a> {
    join_ref: Value,
    ref_: Value,
    topic: Value,
    event: Value,
    payload: &'a RawValue,
}

struct V2Visitor;

impl<'de> Visitor<'de> for V2Visitor {
    type Value = Result<V2In<'de>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array [join_ref, ref, topic, event, payload]")
    }

    #[allow(unused_assignments)]
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut n = 0;
        macro_rules! next {
            ($t:ty) => {
                match seq.next_element::<$t>()? {
                    Some(v) => {
                        n += 1;
                        v
                    }
                    None => return Ok(Err(DecodeError::TooFewElements(n))),
                }
            };
        }
        let join_ref = next!(Value);
        let ref_ = next!(Value);
        let topic = next!(Value);
        let event = next!(Value);
        let payload = next!(&'de RawValue);
        // Phoenix takes the first five elements and ignores the rest.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Ok(V2In { join_ref, ref_, topic, event, payload }))
    }
}

pub(crate) fn decode(data: &Bytes) -> Result<Message, DecodeError> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        serde_json::from_slice::<IgnoredAny>(data)?;
        return Err(DecodeError::NotAnArray);
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    let m = de.deserialize_seq(V2Visitor)??;
    de.end()?;
    Ok(Message {
        join_ref: Ref::new(m.join_ref),
        ref_: Ref::new(m.ref_),
        topic: string_field(m.topic, "topic")?,
        event: string_field(m.event, "event")?,
        payload: Payload::Json(slice_raw(data, m.payload)),
    })
}

fn json_of(payload: &Payload) -> &[u8] {
    match payload {
        Payload::Json(j) => j.as_bytes(),
        // The callers send binary payloads through the binary encoder.
        Payload::Binary(_) => b"null",
    }
}

/// `[join_ref, ref, topic, event, payload]`.
pub(crate) fn encode(
    join_ref: Option<&Ref>,
    ref_: Option<&Ref>,
    topic: &str,
    ev: &str,
    payload: &Payload,
) -> Result<Frame, EncodeError> {
    let p = json_of(payload);
    let mut buf = Vec::with_capacity(32 + topic.len() + ev.len() + p.len());
    buf.push(b'[');
    write_ref(&mut buf, join_ref)?;
    buf.push(b',');
    write_ref(&mut buf, ref_)?;
    buf.push(b',');
    write_str(&mut buf, topic);
    buf.push(b',');
    write_str(&mut buf, ev);
    buf.push(b',');
    buf.extend_from_slice(p);
    buf.push(b']');
    Ok(Frame::text(buf))
}

/// `[join_ref, ref, topic, "phx_reply", {"response": R, "status": S}]`.
pub(crate) fn encode_reply(r: &Reply) -> Result<Frame, EncodeError> {
    let p = json_of(&r.payload);
    let mut buf = Vec::with_capacity(64 + r.topic.len() + p.len());
    buf.push(b'[');
    write_ref(&mut buf, r.join_ref.as_ref())?;
    buf.push(b',');
    write_ref(&mut buf, r.ref_.as_ref())?;
    buf.push(b',');
    write_str(&mut buf, &r.topic);
    buf.extend_from_slice(b",\"phx_reply\",{\"response\":");
    buf.extend_from_slice(p);
    buf.extend_from_slice(b",\"status\":");
    write_str(&mut buf, &r.status);
    buf.extend_from_slice(b"}]");
    Ok(Frame::text(buf))
}
