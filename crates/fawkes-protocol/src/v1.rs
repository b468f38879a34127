//! The V1 serializer: JSON objects.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{value::RawValue, Value};

use crate::json::{slice_raw, string_field, write_ref, write_str};
use crate::{DecodeError, EncodeError, Frame, Message, Payload, Ref, Reply};

#[derive(Deserialize)]
struct V1In<'a> {
    topic: Value,
    event: Value,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(rename = "ref")]
    ref_: Value,
    #[serde(default)]
    join_ref: Option<Value>,
}

pub(crate) fn decode(data: &Bytes) -> Result<Message, DecodeError> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Still report broken JSON as such.
        serde_json::from_slice::<serde::de::IgnoredAny>(data)?;
        return Err(DecodeError::NotAnObject);
    }
    let m: V1In<'_> = serde_json::from_slice(data)?;
    Ok(Message {
        join_ref: m.join_ref.and_then(Ref::new),
        ref_: Ref::new(m.ref_),
        topic: string_field(m.topic, "topic")?,
        event: string_field(m.event, "event")?,
        payload: Payload::Json(slice_raw(data, m.payload)),
    })
}

fn json_of(payload: &Payload) -> Result<&[u8], EncodeError> {
    match payload {
        Payload::Json(j) => Ok(j.as_bytes()),
        Payload::Binary(_) => Err(EncodeError::BinaryUnsupported),
    }
}

/// `{"event":E,"payload":P,"ref":R,"topic":T}`: Phoenix's key order, and never a join_ref.
pub(crate) fn encode(topic: &str, ev: &str, payload: &Payload, ref_: Option<&Ref>) -> Result<Frame, EncodeError> {
    let p = json_of(payload)?;
    let mut buf = Vec::with_capacity(48 + topic.len() + ev.len() + p.len());
    buf.extend_from_slice(b"{\"event\":");
    write_str(&mut buf, ev);
    buf.extend_from_slice(b",\"payload\":");
    buf.extend_from_slice(p);
    buf.extend_from_slice(b",\"ref\":");
    write_ref(&mut buf, ref_)?;
    buf.extend_from_slice(b",\"topic\":");
    write_str(&mut buf, topic);
    buf.push(b'}');
    Ok(Frame::text(buf))
}

pub(crate) fn encode_reply(r: &Reply) -> Result<Frame, EncodeError> {
    let p = json_of(&r.payload)?;
    let mut buf = Vec::with_capacity(80 + r.topic.len() + p.len());
    buf.extend_from_slice(b"{\"event\":\"phx_reply\",\"payload\":{\"response\":");
    buf.extend_from_slice(p);
    buf.extend_from_slice(b",\"status\":");
    write_str(&mut buf, &r.status);
    buf.extend_from_slice(b"},\"ref\":");
    write_ref(&mut buf, r.ref_.as_ref())?;
    buf.extend_from_slice(b",\"topic\":");
    write_str(&mut buf, &r.topic);
    buf.push(b'}');
    Ok(Frame::text(buf))
}

/// Client side: `{"topic","event","payload","ref","join_ref"}`.
pub(crate) fn encode_client(m: &Message) -> Result<Frame, EncodeError> {
    let p = json_of(&m.payload)?;
    let mut buf = Vec::with_capacity(64 + m.topic.len() + m.event.len() + p.len());
    buf.extend_from_slice(b"{\"topic\":");
    write_str(&mut buf, &m.topic);
    buf.extend_from_slice(b",\"event\":");
    write_str(&mut buf, &m.event);
    buf.extend_from_slice(b",\"payload\":");
    buf.extend_from_slice(p);
    buf.extend_from_slice(b",\"ref\":");
    write_ref(&mut buf, m.ref_.as_ref())?;
    if m.join_ref.is_some() {
        buf.extend_from_slice(b",\"join_ref\":");
        write_ref(&mut buf, m.join_ref.as_ref())?;
    }
    buf.push(b'}');
    Ok(Frame::text(buf))
}
