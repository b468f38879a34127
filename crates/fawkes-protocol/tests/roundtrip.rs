//! Property tests: what a client encodes, the server decodes unchanged, and
//! no input makes a decoder panic.
#![allow(clippy::unwrap_used)]

use fawkes_protocol::{Frame, Message, Payload, Ref, Vsn};
use proptest::prelude::*;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[^\u{0}]{0,12}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn reference() -> impl Strategy<Value = Option<Ref>> {
    prop_oneof![
        Just(None),
        "[0-9]{1,6}".prop_map(|s| Some(Ref::from(s))),
        any::<u32>().prop_map(|n| Some(Ref::from(u64::from(n))))
    ]
}

proptest! {
    #[test]
    fn text_messages_round_trip(vsn in prop_oneof![Just(Vsn::V1), Just(Vsn::V2)], join_ref in reference(), ref_ in reference(), topic in "\\PC{0,20}", event in "\\PC{0,12}", payload in json_value()) {
        let msg = Message { join_ref, ref_, topic, event, payload: Payload::from(payload) };
        let frame = vsn.encode_client(&msg).unwrap();
        prop_assert_eq!(vsn.decode(&frame).unwrap(), msg);
    }

    #[test]
    fn binary_messages_round_trip(join_ref in "[0-9]{0,6}", ref_ in "[0-9]{0,6}", topic in "\\PC{0,40}", event in "\\PC{0,20}", payload in prop::collection::vec(any::<u8>(), 0..300)) {
        let msg = Message { join_ref: Some(Ref::from(join_ref)), ref_: Some(Ref::from(ref_)), topic, event, payload: Payload::binary(payload) };
        let frame = Vsn::V2.encode_client(&msg).unwrap();
        prop_assert_eq!(Vsn::V2.decode(&frame).unwrap(), msg);
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for vsn in Vsn::ALL {
            let _ = vsn.decode(&Frame::binary(bytes.clone()));
            let _ = vsn.decode(&Frame::text(bytes.clone()));
            let _ = vsn.decode_server(&Frame::binary(bytes.clone()));
        }
    }

    #[test]
    fn pushes_reach_a_client_unchanged(join_ref in reference(), topic in "\\PC{0,20}", event in "\\PC{0,12}", key in "\\PC{0,6}", v in json_value()) {
        let payload = Payload::from(json!({ key: v }));
        let push = Message::push(join_ref, topic, event, payload);
        for vsn in Vsn::ALL {
            let frame = vsn.encode_push(&push).unwrap();
            match vsn.decode_server(&frame).unwrap() {
                fawkes_protocol::ServerFrame::Push(got) => {
                    prop_assert_eq!(&got.topic, &push.topic);
                    prop_assert_eq!(&got.event, &push.event);
                    prop_assert_eq!(&got.payload, &push.payload);
                }
                fawkes_protocol::ServerFrame::Reply(_) if push.event == "phx_reply" => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

/// A float ref with more digits than an `f64` holds decodes, re-encodes and
/// decodes to the same message (found by the `decode` fuzz target).
#[test]
fn long_float_ref_round_trips() {
    let frame = Frame::text(&br#"[8299999999999999999999222.222222888888888,0,"","Z",{}]"#[..]);
    let msg = Vsn::V2.decode(&frame).expect("decodes");
    let again = Vsn::V2.encode_client(&msg).expect("encodes");
    assert_eq!(Vsn::V2.decode(&again).expect("decodes again"), msg);
}
