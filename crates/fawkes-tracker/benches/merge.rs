//! Tracker merges: a delta of joins into a large state, and a full
//! transfer.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fawkes_tracker::{ReplicaId, State};

fn merge(c: &mut Criterion) {
    let (ra, rb) = (ReplicaId::new("a", 1), ReplicaId::new("b", 1));
    let mut a: State<u64, String> = State::new(ra.clone());
    let mut b: State<u64, String> = State::new(rb.clone());
    a.replica_up(&rb);
    b.replica_up(&ra);
    for i in 0..10_000u64 {
        a.join(i, "room:big", &format!("user{i}"), "online".into());
    }
    b.merge(&a.extract(b.replica(), b.context()));
    a.reset_delta();
    for i in 10_000..10_100u64 {
        a.join(i, "room:big", &format!("user{i}"), "online".into());
    }
    let delta = a.delta().clone();
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(100));
    g.bench_function("merge a delta of 100 joins into 10 000 presences", |bench| {
        // the state is returned so that dropping it is not measured
        bench.iter_batched(
            || b.clone(),
            |mut s| {
                let changes = s.merge(&delta);
                (s, changes)
            },
            BatchSize::LargeInput,
        )
    });
    let fresh: State<u64, String> = {
        let mut s = State::new(ReplicaId::new("c", 1));
        s.replica_up(&ra);
        s
    };
    let extracted = a.extract(fresh.replica(), fresh.context());
    g.throughput(Throughput::Elements(10_100));
    g.bench_function("merge a full transfer of 10 100 presences", |bench| {
        bench.iter_batched(
            || fresh.clone(),
            |mut s| {
                let changes = s.merge(&extracted);
                (s, changes)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
