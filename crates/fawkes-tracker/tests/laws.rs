//! Convergence: whatever the order, duplication or batching of the deltas
//! replicas exchange, they all end with the same presences: exactly those
//! each replica holds itself.
#![allow(clippy::unwrap_used)]

use fawkes_tracker::{Delta, ReplicaId, State};
use proptest::prelude::*;

type S = State<(u8, u8), u8>;
type D = Delta<(u8, u8), u8>;

const N: usize = 3;

fn cluster() -> Vec<S> {
    let ids: Vec<ReplicaId> = (0..N).map(|i| ReplicaId::new(format!("n{i}"), 1)).collect();
    ids.iter()
        .map(|id| {
            let mut s = S::new(id.clone());
            for other in &ids {
                if other != id {
                    s.replica_up(other);
                }
            }
            s
        })
        .collect()
}

/// Runs the operations; returns the states and every delta published, per replica.
fn run(ops: &[(usize, u8, u8, u8)]) -> (Vec<S>, Vec<Vec<D>>) {
    let mut states = cluster();
    let mut published: Vec<Vec<D>> = vec![Vec::new(); N];
    for &(i, kind, pid, meta) in ops {
        let s = &mut states[i];
        let pid = (i as u8, pid);
        let key = format!("k{}", pid.1 % 3);
        match kind {
            0 => {
                s.join(pid, "t", &key, meta);
            }
            1 => {
                s.leave(&pid, "t", &key);
            }
            2 => {
                s.leave_join(&pid, "t", &key, meta);
            }
            _ => {
                published[i].push(s.delta().clone());
                s.reset_delta();
            }
        }
    }
    for (i, s) in states.iter_mut().enumerate() {
        published[i].push(s.delta().clone());
        s.reset_delta();
    }
    (states, published)
}

fn online(s: &S) -> Vec<((u8, u8), String, u8)> {
    let mut v: Vec<_> = s.online_list().into_iter().map(|e| (e.pid, e.key, e.meta)).collect();
    v.sort();
    v
}

fn ops() -> impl Strategy<Value = Vec<(usize, u8, u8, u8)>> {
    prop::collection::vec((0..N, 0u8..4, 0u8..4, 0u8..3), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_order_duplication_or_batching_converges(ops in ops(), order in prop::collection::vec(any::<u32>(), 64), dup in prop::collection::vec(any::<bool>(), 64), batch in any::<bool>()) {
        let (mut states, published) = run(&ops);
        // the truth: what each replica holds of its own
        let mut truth: Vec<_> = states.iter().flat_map(|s| {
            let me = s.replica().clone();
            s.online_list().into_iter().filter(move |e| e.tag.replica == me).map(|e| (e.pid, e.key, e.meta))
        }).collect();
        truth.sort();

        for (r, state) in states.iter_mut().enumerate() {
            // the deltas of the others, some twice, in a shuffled order
            let mut mail: Vec<(u32, D)> = Vec::new();
            let mut n = 0;
            for (from, deltas) in published.iter().enumerate() {
                if from == r {
                    continue;
                }
                let mut batched: Vec<D> = Vec::new();
                for d in deltas {
                    // batching: merge into the previous delta when contiguous
                    match batched.last().map(|last| last.merge(d)) {
                        Some(Ok(m)) if batch => *batched.last_mut().unwrap() = m,
                        _ => batched.push(d.clone()),
                    }
                }
                for d in batched {
                    let k = order[n % order.len()];
                    if dup[n % dup.len()] {
                        mail.push((k.rotate_left(7), d.clone()));
                    }
                    mail.push((k, d));
                    n += 1;
                }
            }
            mail.sort_by_key(|(k, _)| *k);
            for (_, d) in &mail {
                state.merge(d);
            }
        }
        for s in &states {
            prop_assert_eq!(online(s), truth.clone());
        }
    }

    #[test]
    fn merging_is_idempotent(ops in ops()) {
        let (mut states, published) = run(&ops);
        let (a, rest) = states.split_at_mut(1);
        for d in &published[1] {
            a[0].merge(d);
        }
        let before = a[0].clone();
        for d in &published[1] {
            let (joins, leaves) = a[0].merge(d);
            prop_assert!(joins.is_empty() && leaves.is_empty());
        }
        prop_assert_eq!(&a[0], &before);
        let _ = rest;
    }

    #[test]
    fn a_full_state_transfer_converges_like_deltas(ops in ops()) {
        let (mut states, _) = run(&ops);
        let snapshot: Vec<S> = states.clone();
        for (i, s) in states.iter_mut().enumerate() {
            for (j, other) in snapshot.iter().enumerate() {
                if i != j {
                    let extracted = other.extract(s.replica(), s.context());
                    s.merge(&extracted);
                }
            }
        }
        let first = online(&states[0]);
        for s in &states {
            prop_assert_eq!(online(s), first.clone());
        }
    }
}
