//! Messages on the Redis channel, as `phoenix_pubsub_redis` 3.x writes
//! them: `term_to_binary({3, mode, node, topic, message, dispatcher})`,
//! where `mode` is `:except` (a broadcast: every node but `node`) or
//! `:only` (a direct broadcast to `node`), and `message` is a
//! `%Phoenix.Socket.Broadcast{topic, event, payload}` delivered through
//! `Phoenix.Channel.Server`. Phoenix nodes and Fawkes nodes on one channel
//! see each other's broadcasts.

use fawkes_etf::{Term, TermError};
use fawkes_pubsub::{Broadcast, Payload, RemoteMessage, Target};

/// The message format version `phoenix_pubsub_redis` 3.x writes and reads.
pub const VERSION: i128 = 3;
const BROADCAST_STRUCT: &str = "Elixir.Phoenix.Socket.Broadcast";
const DISPATCHER: &str = "Elixir.Phoenix.Channel.Server";

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
    /// A PubSub message that is not a channel broadcast (Elixir terms sent
    /// with `Phoenix.PubSub.broadcast/3`): nothing here can receive it.
    #[error("not a Phoenix.Socket.Broadcast")]
    NotABroadcast,
    /// A payload with no JSON rendering (a struct, a tuple, ...).
    #[error("payload has no JSON rendering: {0}")]
    Payload(TermError),
    /// A JSON payload with no Erlang rendering (a number beyond a float's
    /// range, say).
    #[error("payload has no Erlang term rendering: {0}")]
    Json(String),
}

/// Encodes `msg` as a Phoenix node would.
///
/// # Errors
///
/// [`WireError::Json`] for a JSON payload that has no term rendering.
pub fn encode(msg: &RemoteMessage) -> Result<Vec<u8>, WireError> {
    let (mode, node) = match &msg.target {
        Target::Except(n) => ("except", n),
        Target::Only(n) => ("only", n),
    };
    let b = &msg.broadcast;
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
    // Node names are atoms, as Phoenix's default; Erlang's atoms hold at
    // most 255 characters, so a longer name goes as a string (which
    // phoenix_pubsub_redis also accepts).
    let node = if node.chars().count() <= 255 { Term::atom(node) } else { Term::binary(node) };
    Ok(fawkes_etf::encode(&Term::Tuple(vec![
        Term::Int(VERSION),
        Term::atom(mode),
        node,
        Term::binary(&b.topic),
        message,
        Term::atom(DISPATCHER),
    ])))
}

fn text(t: &Term, what: &'static str) -> Result<String, WireError> {
    match t {
        Term::Binary(b) => String::from_utf8(b.clone()).map_err(|_| WireError::Shape(what)),
        Term::Atom(a) => Ok(a.as_str().to_owned()),
        _ => Err(WireError::Shape(what)),
    }
}

/// Decodes a message from the channel. Node names may be atoms or strings
/// (`phoenix_pubsub_redis` accepts both as `node_name`).
///
/// # Errors
///
/// See [`WireError`]: anything but a channel broadcast of version 3.
pub fn decode(data: &[u8]) -> Result<RemoteMessage, WireError> {
    let Term::Tuple(items) = fawkes_etf::decode(data)? else {
        return Err(WireError::Shape("a tuple"));
    };
    let [vsn, mode, node, _topic, message, _dispatcher] = items.as_slice() else {
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
        return Err(WireError::NotABroadcast);
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

    #[test]
    fn other_messages_are_refused_with_a_reason() {
        let plain = fawkes_etf::encode(&Term::Tuple(vec![
            Term::Int(3),
            Term::atom("except"),
            Term::atom("n"),
            Term::binary("t"),
            Term::Tuple(vec![Term::atom("user_updated"), Term::Int(1)]),
            Term::atom("Elixir.Phoenix.PubSub"),
        ]));
        assert!(matches!(decode(&plain), Err(WireError::NotABroadcast)));
        let v2 = fawkes_etf::encode(&Term::Tuple(vec![Term::Int(2); 6]));
        assert!(matches!(decode(&v2), Err(WireError::Version(_))));
        assert!(matches!(decode(b"{\"json\":1}"), Err(WireError::Term(_))));
        assert!(matches!(decode(&fawkes_etf::encode(&Term::Int(3))), Err(WireError::Shape(_))));
    }
}
