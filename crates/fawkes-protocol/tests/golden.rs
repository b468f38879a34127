//! Golden frames: the exact bytes Phoenix 1.7 sends and accepts.
#![allow(clippy::unwrap_used)]

use fawkes_protocol::{Broadcast, DecodeError, EncodeError, Frame, Message, Payload, Ref, Reply, ServerFrame, Vsn};
use serde_json::json;

fn r(s: &str) -> Option<Ref> {
    Some(Ref::from(s))
}

fn text(f: &Frame) -> &str {
    f.as_text().unwrap()
}

#[test]
fn v2_decodes_a_client_message_and_keeps_refs_opaque() {
    let m = Vsn::V2.decode(&Frame::text(r#"["3","4","room:lobby","new_msg",{"body":"hi"}]"#)).unwrap();
    assert_eq!(m.join_ref, r("3"));
    assert_eq!(m.ref_, r("4"));
    assert_eq!((m.topic.as_str(), m.event.as_str()), ("room:lobby", "new_msg"));
    assert_eq!(m.payload, json!({"body": "hi"}));

    let m = Vsn::V2.decode(&Frame::text(r#"[null, 7, "phoenix", "heartbeat", {}, "extra", 1]"#)).unwrap();
    assert_eq!(m.join_ref, None);
    assert_eq!(m.ref_, Some(Ref::from(7u64)));
    let reply = Reply::ok(&m, None, Payload::empty());
    assert_eq!(
        text(&Vsn::V2.encode_reply(&reply).unwrap()),
        r#"[null,7,"phoenix","phx_reply",{"response":{},"status":"ok"}]"#
    );
}

#[test]
fn v2_payload_is_kept_as_sent() {
    let m = Vsn::V2.decode(&Frame::text(r#"["1","2","t","e",{"b":1, "a":[1,2.50]}]"#)).unwrap();
    assert_eq!(m.payload.as_json().unwrap().as_bytes(), br#"{"b":1, "a":[1,2.50]}"#);
    let reply = Reply::ok(&m, m.join_ref.clone(), m.payload.clone());
    assert_eq!(
        text(&Vsn::V2.encode_reply(&reply).unwrap()),
        r#"["1","2","t","phx_reply",{"response":{"b":1, "a":[1,2.50]},"status":"ok"}]"#
    );
}

#[test]
fn v2_rejects_what_phoenix_rejects() {
    for bad in [
        r#"{"this is": not json"#,
        r#"["1", "1", "room:x", "phx_join""#,
        r#"{"topic":"t"}"#,
        "42",
        r#""hello""#,
        r#"["1","1","room:x"]"#,
        "",
        "[]",
        r#"["1","1",1,"e",{}]"#,
        r#"["1","1","t",null,{}]"#,
    ] {
        assert!(Vsn::V2.decode(&Frame::text(bad)).is_err(), "{bad}");
    }
    assert!(matches!(Vsn::V2.decode(&Frame::text("[1,2,3]")), Err(DecodeError::TooFewElements(3))));
    assert!(matches!(Vsn::V2.decode(&Frame::text("{}")), Err(DecodeError::NotAnArray)));
}

#[test]
fn v2_server_frames() {
    let push = Message::push(r("3"), "room:lobby", "joined", Payload::from(json!({"user_id": null})));
    assert_eq!(text(&Vsn::V2.encode_push(&push).unwrap()), r#"["3",null,"room:lobby","joined",{"user_id":null}]"#);
    let close = Message::channel_end(r("3"), "room:lobby", "phx_close", Payload::empty());
    assert_eq!(text(&Vsn::V2.encode_push(&close).unwrap()), r#"["3","3","room:lobby","phx_close",{}]"#);
    let b = Broadcast::new("room:lobby", "new_msg", Payload::from(json!({"body": "hi"})));
    assert_eq!(text(&Vsn::V2.encode_broadcast(&b).unwrap()), r#"[null,null,"room:lobby","new_msg",{"body":"hi"}]"#);
    let m = Message {
        join_ref: None,
        ref_: r("7"),
        topic: "nope:1".into(),
        event: "phx_join".into(),
        payload: Payload::empty(),
    };
    let unmatched = Reply::error(&m, None, Payload::from(json!({"reason": "unmatched topic"})));
    assert_eq!(
        text(&Vsn::V2.encode_reply(&unmatched).unwrap()),
        r#"[null,"7","nope:1","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#
    );
}

#[test]
fn v2_push_and_broadcast_payloads_must_be_objects_but_replies_need_not() {
    let push = Message::push(None, "t", "e", Payload::from(json!([1, 2])));
    assert!(matches!(Vsn::V2.encode_push(&push), Err(EncodeError::PayloadNotAnObject)));
    assert!(matches!(
        Vsn::V2.encode_broadcast(&Broadcast::new("t", "e", Payload::from(json!("s")))),
        Err(EncodeError::PayloadNotAnObject)
    ));
    let m = Vsn::V2.decode(&Frame::text(r#"["1","2","t","e",5]"#)).unwrap();
    let reply = Reply::ok(&m, m.join_ref.clone(), m.payload.clone());
    assert_eq!(
        text(&Vsn::V2.encode_reply(&reply).unwrap()),
        r#"["1","2","t","phx_reply",{"response":5,"status":"ok"}]"#
    );
}

#[test]
fn v1_frames() {
    let m = Vsn::V1
        .decode(&Frame::text(r#"{"topic":"room:1","event":"phx_join","payload":{"p":1},"ref":"1","join_ref":"1"}"#))
        .unwrap();
    assert_eq!((m.join_ref.clone(), m.ref_.clone()), (r("1"), r("1")));
    let reply = Reply::ok(&m, m.join_ref.clone(), m.payload.clone());
    assert_eq!(
        text(&Vsn::V1.encode_reply(&reply).unwrap()),
        r#"{"event":"phx_reply","payload":{"response":{"p":1},"status":"ok"},"ref":"1","topic":"room:1"}"#
    );
    let push = Message::push(r("1"), "room:1", "joined", Payload::from(json!({"u": 1})));
    assert_eq!(
        text(&Vsn::V1.encode_push(&push).unwrap()),
        r#"{"event":"joined","payload":{"u":1},"ref":null,"topic":"room:1"}"#
    );
    let b = Broadcast::new("room:1", "e", Payload::from(json!({"all": 1})));
    assert_eq!(
        text(&Vsn::V1.encode_broadcast(&b).unwrap()),
        r#"{"event":"e","payload":{"all":1},"ref":null,"topic":"room:1"}"#
    );
    // V1 has no payload type check
    let b = Broadcast::new("room:1", "e", Payload::from(json!("m")));
    assert_eq!(
        text(&Vsn::V1.encode_broadcast(&b).unwrap()),
        r#"{"event":"e","payload":"m","ref":null,"topic":"room:1"}"#
    );
    // phx_close carries the join ref as its ref
    let close = Message::channel_end(None, "room:1", "phx_close", Payload::empty());
    assert_eq!(
        text(&Vsn::V1.encode_push(&close).unwrap()),
        r#"{"event":"phx_close","payload":{},"ref":null,"topic":"room:1"}"#
    );
}

#[test]
fn v1_rejects_what_phoenix_rejects() {
    for bad in [
        r#"[null,"1","room:x","phx_join",{}]"#,
        r#"{"topic":"room:x","event":"phx_join","payload":{}}"#,
        "{nope",
        r#"{"topic":"t","event":"e","ref":"1"}"#,
        "null",
    ] {
        assert!(Vsn::V1.decode(&Frame::text(bad)).is_err(), "{bad}");
    }
    assert!(matches!(Vsn::V1.decode(&Frame::binary(vec![0u8, 0, 0, 0, 0])), Err(DecodeError::BinaryUnsupported)));
    assert!(matches!(
        Vsn::V1.encode_push(&Message::push(None, "t", "e", Payload::binary(vec![1]))),
        Err(EncodeError::BinaryUnsupported)
    ));
}

#[test]
fn binary_client_push_decodes() {
    let mut f = vec![0u8, 2, 1, 4, 3];
    f.extend_from_slice(b"12");
    f.extend_from_slice(b"3");
    f.extend_from_slice(b"t:ab");
    f.extend_from_slice(b"evt");
    f.extend_from_slice(&[0, 1, 254, 255]);
    let m = Vsn::V2.decode(&Frame::binary(f)).unwrap();
    assert_eq!((m.join_ref, m.ref_), (r("12"), r("3")));
    assert_eq!((m.topic.as_str(), m.event.as_str()), ("t:ab", "evt"));
    assert_eq!(m.payload, Payload::binary(vec![0u8, 1, 254, 255]));
}

#[test]
fn binary_server_frames_byte_for_byte() {
    let push = Message::push(r("12"), "t", "e", Payload::binary(vec![9u8, 8]));
    assert_eq!(&Vsn::V2.encode_push(&push).unwrap().data[..], &[0, 2, 1, 1, b'1', b'2', b't', b'e', 9, 8]);
    let m =
        Message { join_ref: r("1"), ref_: r("23"), topic: "t".into(), event: "e".into(), payload: Payload::empty() };
    let reply = Reply::ok(&m, r("1"), Payload::binary(vec![7u8]));
    assert_eq!(
        &Vsn::V2.encode_reply(&reply).unwrap().data[..],
        &[1, 1, 2, 1, 2, b'1', b'2', b'3', b't', b'o', b'k', 7]
    );
    let b = Broadcast::new("t", "ev", Payload::binary(vec![]));
    assert_eq!(&Vsn::V2.encode_broadcast(&b).unwrap().data[..], &[2, 1, 2, b't', b'e', b'v']);
    // absent refs are empty fields
    let push = Message::push(None, "t", "e", Payload::binary(vec![]));
    assert_eq!(&Vsn::V2.encode_push(&push).unwrap().data[..], &[0, 0, 1, 1, b't', b'e']);
}

#[test]
fn binary_fields_over_255_bytes_are_refused() {
    let long = "x".repeat(256);
    let push = Message::push(None, long.clone(), "e", Payload::binary(vec![]));
    assert!(matches!(Vsn::V2.encode_push(&push), Err(EncodeError::FieldTooLong { field: "topic", len: 256 })));
    let ok = Message::push(None, "x".repeat(255), "e", Payload::binary(vec![]));
    assert!(Vsn::V2.encode_push(&ok).is_ok());
}

#[test]
fn binary_rejects_other_kinds_and_truncation() {
    assert!(matches!(
        Vsn::V2.decode(&Frame::binary(vec![0u8, 200, 200, 200, 200, 1, 2, 3])),
        Err(DecodeError::Truncated)
    ));
    assert!(matches!(Vsn::V2.decode(&Frame::binary(vec![1u8, 0, 0, 0, 0])), Err(DecodeError::UnknownKind(1))));
    assert!(matches!(Vsn::V2.decode(&Frame::binary(vec![])), Err(DecodeError::Truncated)));
    assert!(matches!(Vsn::V2.decode(&Frame::binary(vec![0u8, 0, 0])), Err(DecodeError::Truncated)));
    assert!(matches!(
        Vsn::V2.decode(&Frame::binary(vec![0u8, 0, 0, 1, 0, 0xff])),
        Err(DecodeError::InvalidUtf8("topic"))
    ));
}

#[test]
fn clients_decode_what_servers_encode() {
    let m = Message { join_ref: r("1"), ref_: r("2"), topic: "t".into(), event: "e".into(), payload: Payload::empty() };
    for vsn in Vsn::ALL {
        let reply = Reply::error(&m, r("1"), Payload::from(json!({"reason": "x"})));
        match vsn.decode_server(&vsn.encode_reply(&reply).unwrap()).unwrap() {
            ServerFrame::Reply(got) => {
                assert_eq!(got.status, "error");
                assert_eq!(got.payload, json!({"reason": "x"}));
                assert_eq!(got.ref_, r("2"));
            }
            other => panic!("{other:?}"),
        }
    }
    let reply = Reply::ok(&m, r("1"), Payload::binary(vec![1u8, 2]));
    assert_eq!(Vsn::V2.decode_server(&Vsn::V2.encode_reply(&reply).unwrap()).unwrap(), ServerFrame::Reply(reply));
}
