//! Messages on the Redis channel, as `phoenix_pubsub_redis` 3.x writes
//! them: `term_to_binary({3, mode, node, topic, message, dispatcher})`,
//! where `mode` is `:except` (a broadcast: every node but `node`) or
//! `:only` (a direct broadcast to `node`).
//!
//! A `message` that is a `%Phoenix.Socket.Broadcast{topic, event, payload}`
//! (delivered through `Phoenix.Channel.Server`) is a channel broadcast:
//! Phoenix nodes and Fawkes nodes on one channel see each other's. Any
//! other term (Phoenix.Tracker's replication, an application's own
//! `Phoenix.PubSub.broadcast/3`) is decoded whole and handed on as a
//! [`TERM_EVENT`] broadcast on its topic whose binary payload is the term;
//! a [`TERM_EVENT`] broadcast with such a payload is written as that term,
//! dispatched by `Phoenix.PubSub`.

use fawkes_etf::{Term, TermError};
use fawkes_pubsub::{Broadcast, Payload, RemoteMessage, Target, TERM_EVENT};

/// The message format version `phoenix_pubsub_redis` 3.x writes and reads.
pub const VERSION: i128 = 3;
const BROADCAST_STRUCT: &str = "Elixir.Phoenix.Socket.Broadcast";
const DISPATCHER: &str = "Elixir.Phoenix.Channel.Server";
/// The dispatcher of plain `Phoenix.PubSub` messages.
const PUBSUB_DISPATCHER: &str = "Elixir.Phoenix.PubSub";

/// Why a message from the channel was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not an external term.
    #[error("not an Erlang term: {0}")]
    Term(#[from] TermError),
    /// A term of another shape than the adapter's messages.
    #[error("not a PubSub message: {0}")]
    Shape(&'static str),
    /// A message of another format version (ignored, as Phoenix ignores it).
    #[error("message format version {0}")]
    Version(String),
    /// A PubSub message that is not a channel broadcast. [`decode`] no
    /// longer returns it: such messages are [`TERM_EVENT`] broadcasts.
    #[error("not a Phoenix.Socket.Broadcast")]
    NotABroadcast,
    /// A broadcast whose payload has no JSON rendering (a struct, a
    /// tuple, ...): no client could be sent it.
    #[error("payload has no JSON rendering: {0}")]
    Payload(TermError),
    /// A JSON payload with no Erlang rendering (a number beyond a float's
    /// range, say), or a [`TERM_EVENT`] payload that is not a term.
    #[error("payload has no Erlang term rendering: {0}")]
    Json(String),
}

impl WireError {
    /// True for a well-formed message that a node is right to ignore (of
    /// another format version, or a broadcast no client could be sent),
    /// false for bytes that are not a PubSub message at all.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, WireError::Version(_) | WireError::Payload(_) | WireError::NotABroadcast)
    }
}

/// Encodes `msg` as a Phoenix node would.
///
/// # Errors
///
/// [`WireError::Json`] for a JSON payload that has no term rendering, or a
/// [`TERM_EVENT`] payload that is not an external term.
pub fn encode(msg: &RemoteMessage) -> Result<Vec<u8>, WireError> {
    let (mode, node) = match &msg.target {
        Target::Except(n) => ("except", n),
        Target::Only(n) => ("only", n),
    };
    let b = &msg.broadcast;
    // Node names are atoms, as Phoenix's default; Erlang's atoms hold at
    // most 255 characters, so a longer name goes as a string (which
    // phoenix_pubsub_redis also accepts).
    let node = if node.chars().count() <= 255 { Term::atom(node) } else { Term::binary(node) };
    let mut out = vec![fawkes_etf::VERSION];
    let head = |out: &mut Vec<u8>| {
        // SMALL_TUPLE_EXT of 6: {3, mode, node, topic, message, dispatcher}
        out.extend_from_slice(&[104, 6]);
        Term::Int(VERSION).encode_body(out);
        Term::atom(mode).encode_body(out);
        node.encode_body(out);
        Term::binary(&b.topic).encode_body(out);
    };
    if let (TERM_EVENT, Payload::Binary(bytes)) = (b.event.as_str(), &b.payload) {
        // the term goes in as it is written (inflated if it was compressed)
        let term = fawkes_etf::uncompressed(bytes).map_err(|e| WireError::Json(e.to_string()))?;
        fawkes_etf::decode(&term).map_err(|e| WireError::Json(e.to_string()))?;
        head(&mut out);
        out.extend_from_slice(&term[1..]);
        Term::atom(PUBSUB_DISPATCHER).encode_body(&mut out);
        return Ok(out);
    }
    let payload = match &b.payload {
        // the payload's bytes are validated JSON
        Payload::Json(j) => {
            Term::from_json(&j.decode::<serde_json::Value>().map_err(|e| WireError::Json(e.to_string()))?)
        }
        Payload::Binary(bytes) => Term::Tuple(vec![Term::atom("binary"), Term::Binary(bytes.to_vec())]),
    };
    // Elixir writes a struct's keys in term order: __struct__, event,
    // payload, topic.
    let message = Term::Map(vec![
        (Term::atom("__struct__"), Term::atom(BROADCAST_STRUCT)),
        (Term::atom("event"), Term::binary(&b.event)),
        (Term::atom("payload"), payload),
        (Term::atom("topic"), Term::binary(&b.topic)),
    ]);
    head(&mut out);
    message.encode_body(&mut out);
    Term::atom(DISPATCHER).encode_body(&mut out);
    Ok(out)
}

fn text(t: &Term, what: &'static str) -> Result<String, WireError> {
    match t {
        Term::Binary(b) => String::from_utf8(b.clone()).map_err(|_| WireError::Shape(what)),
        Term::Atom(a) => Ok(a.as_str().to_owned()),
        _ => Err(WireError::Shape(what)),
    }
}

/// Decodes a message from the channel: a channel broadcast, or any other
/// term as a [`TERM_EVENT`] broadcast on the message's topic. Node names
/// may be atoms or strings (`phoenix_pubsub_redis` accepts both as
/// `node_name`).
///
/// # Errors
///
/// See [`WireError`]: anything but a PubSub message of version 3, and
/// broadcasts that have no JSON rendering.
pub fn decode(data: &[u8]) -> Result<RemoteMessage, WireError> {
    let Term::Tuple(items) = fawkes_etf::decode(data)? else {
        return Err(WireError::Shape("a tuple"));
    };
    let [vsn, mode, node, topic, message, _dispatcher] = items.as_slice() else {
        return Err(WireError::Shape("a 6-tuple"));
    };
    if *vsn != Term::Int(VERSION) {
        return Err(WireError::Version(format!("{vsn:?}")));
    }
    let node = text(node, "a node name")?;
    let target = match mode.as_atom() {
        Some("except") => Target::Except(node),
        Some("only") => Target::Only(node),
        _ => return Err(WireError::Shape("mode :except or :only")),
    };
    if message.get_atom_key("__struct__").and_then(Term::as_atom) != Some(BROADCAST_STRUCT) {
        let topic = text(topic, "topic")?;
        let payload = Payload::binary(fawkes_etf::encode(message));
        return Ok(RemoteMessage { target, broadcast: Broadcast::new(topic, TERM_EVENT, payload) });
    }
    let field = |k: &'static str| message.get_atom_key(k).ok_or(WireError::Shape(k));
    let topic = text(field("topic")?, "topic")?;
    let event = text(field("event")?, "event")?;
    let payload = match field("payload")? {
        Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("binary") => match &t[1] {
            Term::Binary(b) => Payload::binary(b.clone()),
            _ => return Err(WireError::Shape("binary payload")),
        },
        other => Payload::from(other.to_json_lenient().map_err(WireError::Payload)?),
    };
    Ok(RemoteMessage { target, broadcast: Broadcast::new(topic, event, payload) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msg(target: Target, payload: Payload) -> RemoteMessage {
        RemoteMessage { target, broadcast: Broadcast::new("room:1", "new_msg", payload) }
    }

    #[test]
    fn json_and_binary_broadcasts_round_trip() {
        for m in [
            msg(Target::Except("a@host".into()), Payload::from(json!({"body": "hi", "n": [1, 2.5, null]}))),
            msg(Target::Only("b@host".into()), Payload::binary(vec![0u8, 159, 146, 150])),
        ] {
            assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
        }
    }

    /// The bytes a Phoenix node writes for
    /// `broadcast(MyApp.PubSub, "room:1", %Broadcast{topic: "room:1", event: "e", payload: %{"a" => 1}})`
    /// from node `:"a@h"`, built by hand from the format (OTP 26+ atom
    /// encoding, keys of the small map in term order).
    #[test]
    fn reads_what_phoenix_writes() {
        let mut t = vec![131, 104, 6, 97, 3, 119, 6];
        t.extend_from_slice(b"except");
        t.extend_from_slice(&[119, 3]);
        t.extend_from_slice(b"a@h");
        t.extend_from_slice(&[109, 0, 0, 0, 6]);
        t.extend_from_slice(b"room:1");
        t.extend_from_slice(&[116, 0, 0, 0, 4]);
        t.extend_from_slice(&[119, 10]);
        t.extend_from_slice(b"__struct__");
        t.extend_from_slice(&[119, 31]);
        t.extend_from_slice(b"Elixir.Phoenix.Socket.Broadcast");
        t.extend_from_slice(&[119, 5]);
        t.extend_from_slice(b"event");
        t.extend_from_slice(&[109, 0, 0, 0, 1, b'e']);
        t.extend_from_slice(&[119, 7]);
        t.extend_from_slice(b"payload");
        t.extend_from_slice(&[116, 0, 0, 0, 1, 109, 0, 0, 0, 1, b'a', 97, 1]);
        t.extend_from_slice(&[119, 5]);
        t.extend_from_slice(b"topic");
        t.extend_from_slice(&[109, 0, 0, 0, 6]);
        t.extend_from_slice(b"room:1");
        t.extend_from_slice(&[119, 29]);
        t.extend_from_slice(b"Elixir.Phoenix.Channel.Server");
        let m = decode(&t).unwrap();
        assert_eq!(m.target, Target::Except("a@h".into()));
        assert_eq!(m.broadcast, Broadcast::new("room:1", "e", Payload::from(json!({"a": 1}))));
        assert_eq!(encode(&m).unwrap(), t, "and Fawkes writes the same bytes");
    }

    #[test]
    fn atom_keyed_payloads_render_as_jason_renders_them() {
        let message = Term::Map(vec![
            (Term::atom("__struct__"), Term::atom(BROADCAST_STRUCT)),
            (Term::atom("event"), Term::binary("e")),
            (Term::atom("payload"), Term::Map(vec![(Term::atom("status"), Term::atom("away"))])),
            (Term::atom("topic"), Term::binary("t")),
        ]);
        let data = fawkes_etf::encode(&Term::Tuple(vec![
            Term::Int(3),
            Term::atom("only"),
            Term::binary("me"),
            Term::binary("t"),
            message,
            Term::atom(DISPATCHER),
        ]));
        let m = decode(&data).unwrap();
        assert_eq!(m.target, Target::Only("me".into()));
        assert_eq!(m.broadcast.payload, Payload::from(json!({"status": "away"})));
    }

    #[test]
    fn payloads_without_a_term_rendering_are_errors_not_empty_maps() {
        let m = msg(Target::Except("a".into()), Payload::json_text(&br#"{"x":1e400}"#[..]).unwrap());
        assert!(matches!(encode(&m), Err(WireError::Json(_))));
    }

    /// Terms that are not channel broadcasts travel whole, both ways.
    #[test]
    fn other_terms_are_term_messages() {
        let message = Term::Tuple(vec![Term::atom("user_updated"), Term::Int(1), Term::List(vec![])]);
        let plain = fawkes_etf::encode(&Term::Tuple(vec![
            Term::Int(3),
            Term::atom("except"),
            Term::atom("n"),
            Term::binary("t"),
            message.clone(),
            Term::atom(PUBSUB_DISPATCHER),
        ]));
        let m = decode(&plain).unwrap();
        assert_eq!(m.target, Target::Except("n".into()));
        assert_eq!((m.broadcast.topic.as_str(), m.broadcast.event.as_str()), ("t", TERM_EVENT));
        assert_eq!(m.broadcast.payload, Payload::binary(fawkes_etf::encode(&message)));
        assert_eq!(encode(&m).unwrap(), plain, "written back as Phoenix wrote it");
        let not_a_term = msg(Target::Only("n".into()), Payload::binary(vec![1, 2, 3]));
        let not_a_term =
            RemoteMessage { broadcast: Broadcast::new("t", TERM_EVENT, not_a_term.broadcast.payload), ..not_a_term };
        assert!(matches!(encode(&not_a_term), Err(WireError::Json(_))));
        // a JSON payload under the event is a plain broadcast
        let json = RemoteMessage {
            target: Target::Only("n".into()),
            broadcast: Broadcast::new("t", TERM_EVENT, Payload::from(json!({"a": 1}))),
        };
        assert_eq!(decode(&encode(&json).unwrap()).unwrap(), json);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let no_json = fawkes_etf::encode(&Term::Tuple(vec![
            Term::Int(3),
            Term::atom("except"),
            Term::atom("n"),
            Term::binary("t"),
            Term::Map(vec![
                (Term::atom("__struct__"), Term::atom(BROADCAST_STRUCT)),
                (Term::atom("event"), Term::binary("e")),
                (Term::atom("payload"), Term::Tuple(vec![Term::atom("ok")])),
                (Term::atom("topic"), Term::binary("t")),
            ]),
            Term::atom(DISPATCHER),
        ]));
        assert!(matches!(decode(&no_json), Err(e @ WireError::Payload(_)) if e.is_ignorable()));
        let v2 = fawkes_etf::encode(&Term::Tuple(vec![Term::Int(2); 6]));
        assert!(matches!(decode(&v2), Err(e @ WireError::Version(_)) if e.is_ignorable()));
        assert!(matches!(decode(b"{\"json\":1}"), Err(e @ WireError::Term(_)) if !e.is_ignorable()));
        assert!(matches!(decode(&fawkes_etf::encode(&Term::Int(3))), Err(WireError::Shape(_))));
    }
}
