//! Messages as Erlang/OTP itself encodes them for a Phoenix node
//! (`tests/data/phoenix_terms.txt`, made by `tests/data/phoenix_terms.escript`
//! with OTP's own `term_to_binary`): Fawkes reads each of them, in OTP 26+'s
//! encoding and in older OTPs' (latin-1 atoms), and writes the same bytes as
//! OTP 26+ for the messages it sends itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fawkes_pubsub::{Broadcast, Payload, RemoteMessage, Target};
use serde_json::json;

fn vectors() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let text = include_str!("data/phoenix_terms.txt");
    let hex = |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
    text.lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let (name, v2, default) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            (name.to_owned(), hex(v2), hex(default))
        })
        .collect()
}

fn expected(name: &str) -> (RemoteMessage, bool) {
    let m = |target: Target, topic: &str, event: &str, payload: Payload| RemoteMessage {
        target,
        broadcast: Broadcast::new(topic, event, payload),
    };
    let except = |n: &str| Target::Except(n.to_owned());
    // (message, whether Fawkes writes the same bytes: it writes node names
    // as atoms and payload keys as binaries)
    match name {
        "simple" => (m(except("a@h"), "room:1", "e", Payload::from(json!({"a": 1}))), true),
        "json_kinds" => (
            m(
                except("app@10.0.0.7"),
                "room:lobby",
                "new_msg",
                Payload::from(json!({
                    "body": "héllo ✓", "n": -42, "big": u64::MAX, "neg_big": i64::MIN, "f": 2.5,
                    "yes": true, "no": false, "none": null, "list": [1, "two", [3], {}], "bytes": [1, 2, 255],
                    "empty": "", "nested": {"deep": {"k": [null]}}
                })),
            ),
            true,
        ),
        "direct" => (m(Target::Only("b@h".into()), "phx:lp:tok", "request", Payload::from(json!({"i": 300}))), true),
        "binary" => (m(except("a@h"), "room:bin", "blob", Payload::binary(vec![0u8, 159, 146, 150, 255])), true),
        "string_node" => (m(except("node-7"), "t", "e", Payload::from(json!({}))), false),
        "atom_keys" => (m(except("a@h"), "t", "e", Payload::from(json!({"status": "away", "count": 3}))), false),
        other => panic!("unknown vector {other}"),
    }
}

#[test]
fn every_message_otp_writes_is_read_and_written_back_the_same() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 6);
    for (name, v2, default) in vectors {
        let (want, same_bytes) = expected(&name);
        assert_eq!(fawkes_redis::wire::decode(&v2).unwrap(), want, "{name}, OTP 26+ encoding");
        assert_eq!(fawkes_redis::wire::decode(&default).unwrap(), want, "{name}, OTP 25 encoding");
        if same_bytes {
            assert_eq!(fawkes_redis::wire::encode(&want).unwrap(), v2, "{name}: Fawkes writes what OTP writes");
        }
    }
}
