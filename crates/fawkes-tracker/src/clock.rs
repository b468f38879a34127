//! Operations on causal contexts (replica → highest contiguous clock).

use crate::{Context, ReplicaId};

/// True when `c1` has seen at least as much as `c2` for every replica of
/// `c2`.
pub fn dominates(c1: &Context, c2: &Context) -> bool {
    c1.len() >= c2.len() && c2.iter().all(|(r, &clock)| c1.get(r).copied().unwrap_or(0) >= clock)
}

/// True when, for every replica of `c1`, `c1` has seen at least as much as
/// `c2` (an empty `c1` dominates only an empty `c2`).
pub fn dominates_or_equal(c1: &Context, c2: &Context) -> bool {
    if c1.is_empty() {
        return c2.is_empty();
    }
    c1.iter().all(|(r, &clock)| clock >= c2.get(r).copied().unwrap_or(0))
}

/// The pointwise maximum of two contexts (replicas of either).
pub fn upperbound(c1: &Context, c2: &Context) -> Context {
    let mut out = c1.clone();
    for (r, &clock) in c2 {
        let e = out.entry(r.clone()).or_insert(clock);
        *e = (*e).max(clock);
    }
    out
}

/// The pointwise minimum of two contexts on their common replicas; replicas
/// of only one keep their clock.
pub fn lowerbound(c1: &Context, c2: &Context) -> Context {
    let mut out = c1.clone();
    for (r, &clock) in c2 {
        let e = out.entry(r.clone()).or_insert(clock);
        *e = (*e).min(clock);
    }
    out
}

/// A small set of replicas' clocks that covers everything seen: Phoenix's
/// clockset, used to pick which replicas to ask for a state transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clocks(Vec<(ReplicaId, Context)>);

impl Clocks {
    /// An empty set.
    pub fn new() -> Clocks {
        Clocks(Vec::new())
    }

    /// Adds a replica's clock, keeping only clocks that are not dominated.
    pub fn append(&mut self, replica: ReplicaId, clock: Context) {
        if clock.is_empty() {
            return;
        }
        let combined = self.0.iter().fold(Context::new(), |acc, (_, c)| upperbound(&acc, c));
        if dominates(&clock, &combined) {
            self.0 = vec![(replica, clock)];
        } else if dominates(&combined, &clock) {
        } else {
            let mut insert = false;
            let mut kept = Vec::with_capacity(self.0.len() + 1);
            for (r, c) in self.0.drain(..) {
                if dominates(&clock, &c) {
                    insert = true;
                } else {
                    insert = insert || !dominates(&c, &clock);
                    kept.push((r, c));
                }
            }
            if insert {
                kept.push((replica, clock));
            }
            self.0 = kept;
        }
    }

    /// The replicas in the set.
    pub fn replicas(&self) -> impl Iterator<Item = &ReplicaId> {
        self.0.iter().map(|(r, _)| r)
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, u64)]) -> Context {
        pairs.iter().map(|(n, c)| (ReplicaId::new(*n, 1), *c)).collect()
    }

    // phoenix_pubsub test/phoenix/tracker/clock_test.exs
    #[test]
    fn dominates_and_bounds() {
        assert!(dominates(&ctx(&[("a", 2), ("b", 1)]), &ctx(&[("a", 1)])));
        assert!(!dominates(&ctx(&[("a", 1)]), &ctx(&[("a", 1), ("b", 1)])));
        assert!(!dominates(&ctx(&[("a", 1), ("b", 0)]), &ctx(&[("a", 2)])));
        assert_eq!(
            upperbound(&ctx(&[("a", 1), ("b", 3)]), &ctx(&[("a", 2), ("c", 1)])),
            ctx(&[("a", 2), ("b", 3), ("c", 1)])
        );
        assert_eq!(
            lowerbound(&ctx(&[("a", 1), ("b", 3)]), &ctx(&[("a", 2), ("c", 1)])),
            ctx(&[("a", 1), ("b", 3), ("c", 1)])
        );
        assert!(dominates_or_equal(&Context::new(), &Context::new()));
        assert!(!dominates_or_equal(&Context::new(), &ctx(&[("a", 1)])));
    }

    #[test]
    fn clockset_keeps_only_dominating_clocks() {
        let mut set = Clocks::new();
        set.append(ReplicaId::new("a", 1), ctx(&[("a", 1)]));
        set.append(ReplicaId::new("b", 1), ctx(&[("a", 1), ("b", 1)]));
        assert_eq!(set.replicas().collect::<Vec<_>>(), vec![&ReplicaId::new("b", 1)]);
        set.append(ReplicaId::new("c", 1), ctx(&[("c", 1)]));
        assert_eq!(set.replicas().count(), 2);
        set.append(ReplicaId::new("a", 1), ctx(&[("a", 1)]));
        assert_eq!(set.replicas().count(), 2);
    }
}
