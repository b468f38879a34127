//! The codec's hot paths: decoding what clients send, encoding what
//! servers send.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fawkes_protocol::{Broadcast, Frame, Message, Payload, Ref, Reply, Vsn};
use serde_json::json;
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let v2 =
        Frame::text(r#"["3","17","room:lobby","new_msg",{"body":"hello there, how are you doing today?","n":42}]"#);
    g.bench_function("decode v2 text", |b| b.iter(|| Vsn::V2.decode(black_box(&v2)).unwrap()));
    let v1 = Frame::text(
        r#"{"topic":"room:lobby","event":"new_msg","payload":{"body":"hello there, how are you doing today?","n":42},"ref":"17","join_ref":"3"}"#,
    );
    g.bench_function("decode v1 text", |b| b.iter(|| Vsn::V1.decode(black_box(&v1)).unwrap()));
    let msg = Message {
        join_ref: Some(Ref::from("3")),
        ref_: Some(Ref::from("17")),
        topic: "room:lobby".into(),
        event: "new_msg".into(),
        payload: Payload::binary(vec![7u8; 100]),
    };
    let bin = Vsn::V2.encode_client(&msg).unwrap();
    g.bench_function("decode v2 binary", |b| b.iter(|| Vsn::V2.decode(black_box(&bin)).unwrap()));
    let m = Vsn::V2.decode(&v2).unwrap();
    let reply = Reply::ok(&m, m.join_ref.clone(), m.payload.clone());
    g.bench_function("encode v2 reply", |b| b.iter(|| Vsn::V2.encode_reply(black_box(&reply)).unwrap()));
    let push = Message::push(Some(Ref::from("3")), "room:lobby", "joined", Payload::from(json!({"user_id": "u1"})));
    g.bench_function("encode v2 push", |b| b.iter(|| Vsn::V2.encode_push(black_box(&push)).unwrap()));
    let bc = Broadcast::new("room:lobby", "new_msg", Payload::from(json!({"body": "x".repeat(100)})));
    g.bench_function("encode v2 broadcast", |b| b.iter(|| Vsn::V2.encode_broadcast(black_box(&bc)).unwrap()));
    g.bench_function("encode v1 broadcast", |b| b.iter(|| Vsn::V1.encode_broadcast(black_box(&bc)).unwrap()));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
