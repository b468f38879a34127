use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::{event, Payload};

/// A ref or join ref: an opaque JSON value chosen by the client and echoed
/// back unchanged.
///
/// The official client sends decimal strings (`"12"`); other clients may send
/// numbers. JSON `null` is represented by the absence of a ref (`None`).
///
/// ```
/// use fawkes_protocol::Ref;
/// assert_eq!(Ref::from("12").to_string(), "12");
/// assert_eq!(Ref::from(12u64).to_string(), "12");
/// assert!(Ref::new(serde_json::Value::Null).is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Ref(Value);

impl Ref {
    /// A ref from a JSON value; `None` for `null`.
    pub fn new(v: Value) -> Option<Ref> {
        match v {
            Value::Null => None,
            v => Some(Ref(v)),
        }
    }

    /// The JSON value.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// The ref as the text a binary frame carries (Elixir's `to_string`):
    /// a string as is, anything else as its JSON text.
    pub fn as_text(&self) -> Cow<'_, str> {
        match &self.0 {
            Value::String(s) => Cow::Borrowed(s),
            v => Cow::Owned(v.to_string()),
        }
    }
}

impl From<&str> for Ref {
    fn from(s: &str) -> Ref {
        Ref(Value::String(s.to_owned()))
    }
}

impl From<String> for Ref {
    fn from(s: String) -> Ref {
        Ref(Value::String(s))
    }
}

impl From<u64> for Ref {
    fn from(n: u64) -> Ref {
        Ref(Value::from(n))
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message: every frame a client sends, and every push from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The ref of the join this message belongs to.
    pub join_ref: Option<Ref>,
    /// The message's own ref (`None` on server pushes).
    pub ref_: Option<Ref>,
    /// The topic, for example `room:lobby`.
    pub topic: String,
    /// The event, for example `phx_join` or `new_msg`.
    pub event: String,
    /// The payload.
    pub payload: Payload,
}

impl Message {
    /// A server push: no ref.
    pub fn push(
        join_ref: Option<Ref>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: Payload,
    ) -> Message {
        Message { join_ref, ref_: None, topic: topic.into(), event: event.into(), payload }
    }

    /// The `phx_close` or `phx_error` push that ends a join: Phoenix puts the
    /// join ref in both ref slots.
    pub fn channel_end(
        join_ref: Option<Ref>,
        topic: impl Into<String>,
        event: &'static str,
        payload: Payload,
    ) -> Message {
        Message { ref_: join_ref.clone(), join_ref, topic: topic.into(), event: event.into(), payload }
    }
}

/// A reply to a client message, sent as event `phx_reply` with payload
/// `{"response": ..., "status": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The join ref of the channel that replies (for an unmatched topic: none).
    pub join_ref: Option<Ref>,
    /// The ref of the message replied to.
    pub ref_: Option<Ref>,
    /// The topic.
    pub topic: String,
    /// The status: `ok`, `error`, or any other word.
    pub status: Cow<'static, str>,
    /// The response.
    pub payload: Payload,
}

impl Reply {
    /// An `ok` reply to `msg`, sent with `join_ref`.
    pub fn ok(msg: &Message, join_ref: Option<Ref>, payload: Payload) -> Reply {
        Reply::new(msg, join_ref, "ok", payload)
    }

    /// An `error` reply to `msg`, sent with `join_ref`.
    pub fn error(msg: &Message, join_ref: Option<Ref>, payload: Payload) -> Reply {
        Reply::new(msg, join_ref, "error", payload)
    }

    /// A reply with any status to `msg`, sent with `join_ref`.
    pub fn new(msg: &Message, join_ref: Option<Ref>, status: impl Into<Cow<'static, str>>, payload: Payload) -> Reply {
        Reply { join_ref, ref_: msg.ref_.clone(), topic: msg.topic.clone(), status: status.into(), payload }
    }
}

/// A broadcast: an event for every subscriber of a topic. Phoenix's carry
/// no refs; on a topic with history, Fawkes puts the broadcast's position
/// in the ref slot (the official client hands it to
/// `channel.on(event, (payload, ref) => ...)` and otherwise ignores it).
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The topic.
    pub topic: String,
    /// The event.
    pub event: String,
    /// The payload.
    pub payload: Payload,
    /// The position of the broadcast in its topic's history, sent in the
    /// frame's ref slot (JSON serializers only: V2's binary broadcast frame
    /// has no ref field). `None` on topics without history.
    pub position: Option<Ref>,
}

impl Broadcast {
    /// A broadcast of `event` with `payload` on `topic`.
    pub fn new(topic: impl Into<String>, event: impl Into<String>, payload: Payload) -> Broadcast {
        Broadcast { topic: topic.into(), event: event.into(), payload, position: None }
    }

    /// The same broadcast at `position` in its topic's history.
    #[must_use]
    pub fn with_position(mut self, position: Option<Ref>) -> Broadcast {
        self.position = position;
        self
    }
}

/// What a client decodes from a server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// A push (including `phx_close` and `phx_error`).
    Push(Message),
    /// A reply.
    Reply(Reply),
    /// A broadcast (V2 binary broadcasts only; text broadcasts are pushes
    /// without refs).
    Broadcast(Broadcast),
}

impl ServerFrame {
    /// Classifies a decoded text message: `phx_reply` with a
    /// `{"status", "response"}` payload is a reply, anything else a push.
    pub(crate) fn from_message(msg: Message) -> ServerFrame {
        if msg.event == event::REPLY {
            #[derive(serde::Deserialize)]
            struct Body {
                status: String,
                response: Box<serde_json::value::RawValue>,
            }
            if let Ok(body) = msg.payload.decode::<Body>() {
                let payload = Payload::json_text(body.response.get().to_owned()).unwrap_or_default();
                return ServerFrame::Reply(Reply {
                    join_ref: msg.join_ref,
                    ref_: msg.ref_,
                    topic: msg.topic,
                    status: Cow::Owned(body.status),
                    payload,
                });
            }
        }
        ServerFrame::Push(msg)
    }

    /// The topic of the frame.
    pub fn topic(&self) -> &str {
        match self {
            ServerFrame::Push(m) => &m.topic,
            ServerFrame::Reply(r) => &r.topic,
            ServerFrame::Broadcast(b) => &b.topic,
        }
    }
}
