//! Local fan-out: one broadcast to many subscribers, encoded once per
//! serializer and shared.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fawkes_pubsub::{Broadcast, Delivery, FrameCache, Payload, PubSub, Subscriber, Vsn};
use serde_json::json;

/// Takes the shared frame as a socket's subscriber does (a reference count).
struct Socketish(Vsn, AtomicUsize);

impl Subscriber for Socketish {
    fn deliver(&self, _: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery {
        let f = frames.frame(self.0).unwrap().clone();
        self.1.fetch_add(f.data.len(), Ordering::Relaxed);
        Delivery::Delivered
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in [1usize, 100, 10_000] {
        let ps = PubSub::local("bench");
        let subs: Vec<_> = (0..n)
            .map(|i| {
                ps.subscribe(
                    "room:bench",
                    Arc::new(Socketish(if i % 10 == 0 { Vsn::V1 } else { Vsn::V2 }, AtomicUsize::new(0))),
                )
            })
            .collect();
        let payload = Payload::from(json!({"body": "x".repeat(100)}));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("broadcast to subscribers", n), &n, |b, _| {
            b.iter(|| ps.local_broadcast(Broadcast::new("room:bench", "new_msg", payload.clone())))
        });
        drop(subs);
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
