//! V2 binary frames: one-byte kind, one-byte lengths, then the fields and the
//! raw payload.
//!
//! | kind | direction | header after the kind byte |
//! | --- | --- | --- |
//! | 0 push | client → server | join_ref, ref, topic, event lengths |
//! | 0 push | server → client | join_ref, topic, event lengths (no ref) |
//! | 1 reply | server → client | join_ref, ref, topic, status lengths |
//! | 2 broadcast | server → client | topic, event lengths |

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::{Broadcast, DecodeError, EncodeError, Frame, Message, Payload, Ref, Reply, ServerFrame};

const PUSH: u8 = 0;
const REPLY: u8 = 1;
const BROADCAST: u8 = 2;

fn len_u8(field: &'static str, s: &str) -> Result<u8, EncodeError> {
    u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong { field, len: s.len() })
}

fn ref_text(r: Option<&Ref>) -> Cow<'_, str> {
    r.map(Ref::as_text).unwrap_or(Cow::Borrowed(""))
}

fn binary_of(p: &Payload) -> &[u8] {
    p.as_binary().map(|b| &b[..]).unwrap_or(&[])
}

fn build(kind: u8, fields: &[(&'static str, &str)], payload: &[u8]) -> Result<Frame, EncodeError> {
    let mut header = Vec::with_capacity(1 + fields.len());
    header.push(kind);
    let mut total = 1 + fields.len() + payload.len();
    for (name, f) in fields {
        header.push(len_u8(name, f)?);
        total += f.len();
    }
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(&header);
    for (_, f) in fields {
        buf.extend_from_slice(f.as_bytes());
    }
    buf.extend_from_slice(payload);
    Ok(Frame::binary(buf.freeze()))
}

pub(crate) fn encode_push(m: &Message) -> Result<Frame, EncodeError> {
    let jr = ref_text(m.join_ref.as_ref());
    build(PUSH, &[("join_ref", &jr), ("topic", &m.topic), ("event", &m.event)], binary_of(&m.payload))
}

pub(crate) fn encode_reply(r: &Reply) -> Result<Frame, EncodeError> {
    let jr = ref_text(r.join_ref.as_ref());
    let rf = ref_text(r.ref_.as_ref());
    build(REPLY, &[("join_ref", &jr), ("ref", &rf), ("topic", &r.topic), ("status", &r.status)], binary_of(&r.payload))
}

pub(crate) fn encode_broadcast(b: &Broadcast) -> Result<Frame, EncodeError> {
    build(BROADCAST, &[("topic", &b.topic), ("event", &b.event)], binary_of(&b.payload))
}

pub(crate) fn encode_client_push(m: &Message) -> Result<Frame, EncodeError> {
    let jr = ref_text(m.join_ref.as_ref());
    let rf = ref_text(m.ref_.as_ref());
    build(PUSH, &[("join_ref", &jr), ("ref", &rf), ("topic", &m.topic), ("event", &m.event)], binary_of(&m.payload))
}

/// Reads `n` length-prefixed fields after the kind byte; returns them and the payload.
fn fields<const N: usize>(data: &Bytes, names: [&'static str; N]) -> Result<([String; N], Bytes), DecodeError> {
    let lens = data.get(1..1 + N).ok_or(DecodeError::Truncated)?;
    let mut at = 1 + N;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for i in 0..N {
        let len = usize::from(lens[i]);
        let raw = data.get(at..at + len).ok_or(DecodeError::Truncated)?;
        out[i] = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8(names[i]))?.to_owned();
        at += len;
    }
    Ok((out, data.slice(at..)))
}

fn text_ref(s: String) -> Option<Ref> {
    Some(Ref::from(s))
}

/// Server side: the only binary frame a client may send is a push (kind 0).
pub(crate) fn decode_client_push(data: &Bytes) -> Result<Message, DecodeError> {
    match data.first() {
        Some(&PUSH) => {
            let ([join_ref, ref_, topic, event], payload) = fields(data, ["join_ref", "ref", "topic", "event"])?;
            Ok(Message {
                join_ref: text_ref(join_ref),
                ref_: text_ref(ref_),
                topic,
                event,
                payload: Payload::Binary(payload),
            })
        }
        Some(&kind) => Err(DecodeError::UnknownKind(kind)),
        None => Err(DecodeError::Truncated),
    }
}

/// Client side: decodes a server's push, reply or broadcast. Empty refs decode
/// as absent, as the official client treats them.
pub(crate) fn decode_server(data: &Bytes) -> Result<ServerFrame, DecodeError> {
    let opt = |s: String| {
        if s.is_empty() {
            None
        } else {
            Some(Ref::from(s))
        }
    };
    match data.first() {
        Some(&PUSH) => {
            let ([join_ref, topic, event], payload) = fields(data, ["join_ref", "topic", "event"])?;
            Ok(ServerFrame::Push(Message {
                join_ref: opt(join_ref),
                ref_: None,
                topic,
                event,
                payload: Payload::Binary(payload),
            }))
        }
        Some(&REPLY) => {
            let ([join_ref, ref_, topic, status], payload) = fields(data, ["join_ref", "ref", "topic", "status"])?;
            Ok(ServerFrame::Reply(Reply {
                join_ref: opt(join_ref),
                ref_: opt(ref_),
                topic,
                status: Cow::Owned(status),
                payload: Payload::Binary(payload),
            }))
        }
        Some(&BROADCAST) => {
            let ([topic, event], payload) = fields(data, ["topic", "event"])?;
            Ok(ServerFrame::Broadcast(Broadcast::new(topic, event, Payload::Binary(payload))))
        }
        Some(&kind) => Err(DecodeError::UnknownKind(kind)),
        None => Err(DecodeError::Truncated),
    }
}
