//! Phoenix.Tracker's CRDT, as a pure data structure.
//!
//! A [`State`] is one replica of an observed-remove set of presences: each
//! element is a `(topic, pid, key)` with a meta, tagged with the dot
//! `(replica, clock)` of the join that added it. Replicas exchange [`Delta`]s
//! (recent changes) or extracted states (everything the other side can use),
//! and [`State::merge`] reports the joins and leaves the merge caused. Any
//! order, duplication or batching of deltas converges to the same state.
//!
//! There is no async, no clock and no randomness here: the caller chooses
//! replica versions and decides when replicas are up, down or gone.
//!
//! # Example
//!
//! ```
//! use fawkes_tracker::{ReplicaId, State};
//!
//! let (ra, rb) = (ReplicaId::new("a", 1), ReplicaId::new("b", 1));
//! let mut a: State<u32, &str> = State::new(ra.clone());
//! let mut b: State<u32, &str> = State::new(rb.clone());
//! a.replica_up(&rb);
//! b.replica_up(&ra);
//!
//! a.join(1, "lobby", "alice", "online");
//! let (joins, leaves) = b.merge(a.delta());
//! assert_eq!(joins.len(), 1);
//! assert!(leaves.is_empty());
//! assert_eq!(b.get_by_key("lobby", "alice"), vec![(1, "online")]);
//! ```

mod clock;
mod state;

pub use clock::{dominates, dominates_or_equal, lowerbound, upperbound, Clocks};
pub use state::{Clouds, Context, Delta, Element, Entry, NotContiguous, ReplicaId, ReplicaStatus, State, Tag};
