//! The cases of phoenix_pubsub's `test/phoenix/tracker/state_test.exs`,
//! under the same names, on this port.
#![allow(clippy::unwrap_used)]

use fawkes_tracker::{Context, Element, ReplicaId, State};

type S = State<u32, String>;

fn new(node: &str) -> S {
    State::new(ReplicaId::new(node, 1))
}

fn r(node: &str) -> ReplicaId {
    ReplicaId::new(node, 1)
}

fn keys(els: &[Element<u32, String>]) -> Vec<String> {
    let mut k: Vec<String> = els.iter().map(|e| e.key.clone()).collect();
    k.sort();
    k
}

fn key_list(els: Vec<Element<u32, String>>) -> Vec<String> {
    els.into_iter().map(|e| e.key).collect()
}

fn m() -> String {
    String::new()
}

fn up_pair(a: &mut S, b: &mut S) {
    a.replica_up(&b.replica().clone());
    b.replica_up(&a.replica().clone());
}

fn extract_for(from: &S, to: &S) -> fawkes_tracker::Delta<u32, String> {
    from.extract(to.replica(), to.context())
}

fn given_connected_cluster(nodes: &[&str]) -> Vec<S> {
    let mut states: Vec<S> = nodes.iter().map(|n| new(n)).collect();
    let replicas: Vec<ReplicaId> = states.iter().map(|s| s.replica().clone()).collect();
    for s in &mut states {
        for rep in &replicas {
            if s.replica() != rep {
                s.replica_up(rep);
            }
        }
    }
    states
}

#[test]
fn that_this_is_set_up_correctly() {
    let a = new("a");
    assert!(a.extract(a.replica(), a.context()).values.is_empty());
}

#[test]
fn user_added_online_is_online() {
    let mut a = new("a");
    a.join(1, "lobby", "john", m());
    assert_eq!(key_list(a.get_by_topic("lobby")), ["john"]);
    a.leave(&1, "lobby", "john");
    assert!(a.get_by_topic("lobby").is_empty());
}

#[test]
fn users_from_other_servers_merge() {
    let (mut a, mut b) = (new("a"), new("b"));
    up_pair(&mut a, &mut b);
    let (alice, bob, carol) = (1, 2, 3);
    assert!(a.pid_index().is_empty());
    a.join(alice, "lobby", "alice", m());
    assert_eq!(a.pid_index(), vec![(alice, "lobby".into(), "alice".into())]);
    b.join(bob, "lobby", "bob", m());

    // merging emits a bob join event
    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert_eq!((keys(&joins), leaves.len()), (vec!["bob".to_string()], 0));
    assert_eq!(keys(&a.online_list()), ["alice", "bob"]);

    // merging twice doesn't dupe events
    let before = a.clone();
    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert!(joins.is_empty() && leaves.is_empty());
    assert_eq!(a, before);

    let (joins, _) = b.merge(&extract_for(&a, &b));
    assert_eq!(keys(&joins), ["alice"]);
    let before = b.clone();
    let (joins, leaves) = b.merge(&extract_for(&a, &b));
    assert!(joins.is_empty() && leaves.is_empty());
    assert_eq!(b, before);

    // observe remove
    a.leave(&alice, "lobby", "alice");
    assert_eq!(a.pid_index(), vec![(bob, "lobby".into(), "bob".into())]);
    let (joins, leaves) = b.merge(&extract_for(&a, &b));
    assert!(joins.is_empty());
    assert_eq!(keys(&leaves), ["alice"]);
    assert_eq!(b.pid_index(), vec![(bob, "lobby".into(), "bob".into())]);
    assert_eq!(keys(&b.online_list()), ["bob"]);
    let before = b.clone();
    b.merge(&extract_for(&a, &b));
    assert_eq!(b, before);

    b.join(carol, "lobby", "carol", m());
    assert_eq!(keys(&b.online_list()), ["bob", "carol"]);
    let (joins, _) = a.merge(&extract_for(&b, &a));
    assert_eq!(keys(&joins), ["carol"]);
    let before = a.clone();
    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert!(joins.is_empty() && leaves.is_empty());
    assert_eq!(a, before);
    assert_eq!(a.online_list(), b.online_list());

    // update
    b.leave_join(&carol, "lobby", "carol", "updated".into()).unwrap();
    let pids_before = a.pid_index();
    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert_eq!((keys(&joins), joins[0].meta.as_str()), (vec!["carol".to_string()], "updated"));
    assert_eq!(keys(&leaves), ["carol"]);
    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert!(joins.is_empty() && leaves.is_empty());
    assert_eq!(pids_before, a.pid_index());
}

#[test]
fn basic_netsplit() {
    let (mut a, mut b) = (new("a"), new("b"));
    up_pair(&mut a, &mut b);
    a.join(1, "lobby", "alice", m());
    b.join(2, "lobby", "bob", m());
    let (joins, _) = a.merge(&extract_for(&b, &a));
    assert_eq!(keys(&joins), ["bob"]);
    assert_eq!(keys(&a.online_list()), ["alice", "bob"]);

    a.join(3, "lobby", "carol", m());
    a.leave(&1, "lobby", "alice");
    a.join(4, "lobby", "david", m());
    let leaves = a.replica_down(&r("b"));
    assert_eq!(keys(&leaves), ["bob"]);
    assert_eq!(keys(&a.online_list()), ["carol", "david"]);

    let (joins, leaves) = a.merge(&extract_for(&b, &a));
    assert!(joins.is_empty() && leaves.is_empty());
    assert_eq!(keys(&a.online_list()), ["carol", "david"]);

    let joins = a.replica_up(&r("b"));
    assert_eq!(keys(&joins), ["bob"]);
    assert_eq!(keys(&a.online_list()), ["bob", "carol", "david"]);
}

#[test]
fn joins_are_observed_via_other_node() {
    let mut s = given_connected_cluster(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (s.remove(0), s.remove(0), s.remove(0));
    a.join(1, "lobby", "alice", m());
    let (joins, _) = c.merge(&extract_for(&a, &c));
    assert_eq!(keys(&joins), ["alice"]);

    // netsplit between a and c
    assert!(a.replica_down(&r("c")).is_empty());
    assert_eq!(keys(&c.replica_down(&r("a"))), ["alice"]);

    a.join(2, "lobby", "bob", m());
    let (joins, leaves) = b.merge(&extract_for(&a, &b));
    assert_eq!((keys(&joins), leaves.len()), (vec!["alice".to_string(), "bob".to_string()], 0));
    let (joins, leaves) = c.merge(&extract_for(&b, &c));
    assert_eq!((keys(&joins), leaves.len()), (vec!["bob".to_string()], 0));
}

#[test]
fn removes_are_observed_via_other_node() {
    let mut s = given_connected_cluster(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (s.remove(0), s.remove(0), s.remove(0));
    a.join(1, "lobby", "alice", m());
    let (joins, _) = c.merge(&extract_for(&a, &c));
    assert_eq!(keys(&joins), ["alice"]);
    a.replica_down(&r("c"));
    c.replica_down(&r("a"));
    a.join(2, "lobby", "bob", m());
    let (joins, _) = b.merge(&extract_for(&a, &b));
    assert_eq!(keys(&joins), ["alice", "bob"]);
    let (joins, _) = c.merge(&extract_for(&b, &c));
    assert_eq!(keys(&joins), ["bob"]);

    a.leave(&2, "lobby", "bob");
    let (joins, leaves) = b.merge(&extract_for(&a, &b));
    assert_eq!((joins.len(), keys(&leaves)), (0, vec!["bob".to_string()]));
    let (joins, leaves) = c.merge(&extract_for(&b, &c));
    assert_eq!((joins.len(), keys(&leaves)), (0, vec!["bob".to_string()]));
}

#[test]
fn get_by_pid() {
    let mut state = new("node1");
    assert!(state.get_by_pid_all(&1).is_empty());
    state.join(1, "topic", "key1", m());
    let all = state.get_by_pid_all(&1);
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].topic.as_str(), all[0].key.as_str(), &all[0].tag.replica, all[0].tag.clock),
        ("topic", "key1", &r("node1"), 1)
    );
    assert!(state.get_by_pid(&1, "topic", "key1").is_some());
    assert!(state.get_by_pid(&1, "notopic", "key1").is_none());
    assert!(state.get_by_pid(&1, "notopic", "nokey").is_none());
}

#[test]
fn get_by_key() {
    let mut state = new("node1");
    assert!(state.get_by_key("topic", "key1").is_empty());
    state.join(1, "topic", "key1", "browser".into());
    state.join(2, "topic", "key1", "ios".into());
    state.join(2, "topic", "key2", "ios".into());
    assert_eq!(state.get_by_key("topic", "key1"), vec![(1, "browser".to_string()), (2, "ios".to_string())]);
    assert!(state.get_by_key("another_topic", "key1").is_empty());
    assert!(state.get_by_key("topic", "another_key").is_empty());
}

#[test]
fn get_by_topic() {
    let mut s = given_connected_cluster(&["node1", "node2", "node3"]);
    let (mut state, mut state2, mut state3) = (s.remove(0), s.remove(0), s.remove(0));
    let zero: Context = [(r("node1"), 0), (r("node2"), 0), (r("node3"), 0)].into_iter().collect();
    assert_eq!((state.context(), state2.context(), state3.context()), (&zero, &zero, &zero));
    assert!(state.get_by_topic("topic").is_empty());
    state.join(1, "topic", "key1", m());
    state.join(1, "topic", "key2", m());
    state2.join(2, "topic", "user2", m());
    state3.join(3, "topic", "user3", m());
    assert_eq!(key_list(state.get_by_topic("topic")), ["key1", "key2"]);
    let e2 = extract_for(&state2, &state);
    state.merge(&e2);
    let e3 = extract_for(&state3, &state);
    state.merge(&e3);
    assert_eq!(key_list(state.get_by_topic("topic")), ["key1", "key2", "user2", "user3"]);
    // one replica offline
    state.replica_down(state2.replica());
    assert_eq!(key_list(state.get_by_topic("topic")), ["key1", "key2", "user3"]);
    // two replicas offline
    state.replica_down(state3.replica());
    assert_eq!(key_list(state.get_by_topic("topic")), ["key1", "key2"]);
    assert!(state.get_by_topic("another:topic").is_empty());
}

#[test]
fn remove_down_replicas() {
    let (mut state1, mut state2) = (new("node1"), new("node2"));
    up_pair(&mut state1, &mut state2);
    state1.join(1, "lobby", "alice", m());
    state2.join(2, "lobby", "bob", m());
    state2.merge(&extract_for(&state1, &state2));
    assert_eq!(keys(&state2.online_list()), ["alice", "bob"]);
    state2.replica_down(&r("node1"));
    assert_eq!(state2.pid_index().len(), 2);
    state2.remove_down_replicas(&r("node1"));
    assert_eq!(state2.pid_index(), vec![(2, "lobby".into(), "bob".into())]);
    state2.replica_up(&r("node1"));
    assert_eq!(keys(&state2.online_list()), ["bob"]);
}

#[test]
fn basic_deltas() {
    let (mut a, mut b) = (new("a"), new("b"));
    up_pair(&mut a, &mut b);
    a.join(1, "lobby", "alice", m());
    b.join(2, "lobby", "bob", m());
    let (joins, _) = b.merge(a.delta());
    assert_eq!(keys(&joins), ["alice"]);
    let ctx: Context = [(r("a"), 1), (r("b"), 1)].into_iter().collect();
    assert_eq!(b.clocks(), (&r("b"), &ctx));

    a.reset_delta();
    a.leave(&1, "lobby", "alice");
    let (joins, leaves) = b.merge(a.delta());
    assert_eq!((joins.len(), keys(&leaves)), (0, vec!["alice".to_string()]));
    let ctx: Context = [(r("a"), 2), (r("b"), 1)].into_iter().collect();
    assert_eq!(b.clocks(), (&r("b"), &ctx));

    a.join(1, "lobby", "alice", m());
    let (joins, _) = b.merge(a.delta());
    assert_eq!(keys(&joins), ["alice"]);
    let ctx: Context = [(r("a"), 3), (r("b"), 1)].into_iter().collect();
    assert_eq!(b.clocks(), (&r("b"), &ctx));
    assert!(b.clouds().values().all(|c| c.is_empty()));
}

#[test]
fn deltas_are_not_merged_for_non_contiguous_ranges() {
    let mut s1 = new("s1");
    s1.join(1, "lobby", "user1", m());
    let s2 = s1.clone();
    s1.join(2, "lobby", "user2", m());
    s1.reset_delta();
    s1.join(3, "lobby", "user3", m());
    let s4 = s1;
    assert!(s2.delta().merge(s4.delta()).is_err());
    assert!(s4.delta().merge(s2.delta()).is_err());
}

#[test]
fn extracted_state_context_contains_only_replicas_known_to_remote_replica() {
    let (mut s1, mut s2, mut s3) = (new("s1"), new("s2"), new("s3"));
    s1.replica_up(s2.replica());
    s2.replica_up(s1.replica());
    s2.replica_up(s3.replica());
    s1.join(1, "lobby", "user1", m());
    s2.join(2, "lobby", "user2", m());
    s3.join(3, "lobby", "user3", m());
    let d2 = s2.delta().clone();
    s1.merge(&d2);
    let d1 = s1.delta().clone();
    s2.merge(&d1);
    let d3 = s3.delta().clone();
    s2.merge(&d3);
    let extracted = s2.extract(s1.replica(), s1.context());
    let want: Context = [(r("s1"), 1), (r("s2"), 1)].into_iter().collect();
    assert_eq!(extracted.context, want);
}

fn sorted_clouds(d: &fawkes_tracker::Delta<u32, String>) -> Vec<(String, u64)> {
    d.clouds.iter().flat_map(|(r, c)| c.iter().map(move |k| (r.name.clone(), *k))).collect()
}

#[test]
fn merging_deltas() {
    let (mut s1, mut s2) = (new("s1"), new("s2"));
    s1.join(1, "lobby", "user1", m());
    s1.join(1, "private", "user1", m());
    s2.join(2, "lobby", "user2", m());
    s2.join(2, "private", "user2", m());
    let delta1 = s1.delta().merge(s2.delta()).unwrap();
    let vals: Vec<(String, u64, u32, String)> =
        delta1.values.iter().map(|(t, e)| (t.replica.name.clone(), t.clock, e.pid, e.topic.clone())).collect();
    assert_eq!(
        vals,
        vec![
            ("s1".into(), 1, 1, "lobby".into()),
            ("s1".into(), 2, 1, "private".into()),
            ("s2".into(), 1, 2, "lobby".into()),
            ("s2".into(), 2, 2, "private".into())
        ]
    );
    assert_eq!(sorted_clouds(&delta1), vec![("s1".into(), 1), ("s1".into(), 2), ("s2".into(), 1), ("s2".into(), 2)]);
}

#[test]
fn merging_deltas_with_removes() {
    let (mut s1, mut s2) = (new("s1"), new("s2"));
    up_pair(&mut s1, &mut s2);
    // concurrent add wins
    s1.join(1, "lobby", "user1", m());
    s1.join(1, "private", "user1", m());
    s2.join(1, "lobby", "user1", m());
    s2.leave(&1, "lobby", "user1");
    let delta1 = s1.delta().merge(s2.delta()).unwrap();
    let vals: Vec<(String, u64)> = delta1.values.keys().map(|t| (t.replica.name.clone(), t.clock)).collect();
    assert_eq!(vals, vec![("s1".into(), 1), ("s1".into(), 2)]);
    assert_eq!(sorted_clouds(&delta1), vec![("s1".into(), 1), ("s1".into(), 2), ("s2".into(), 1), ("s2".into(), 2)]);
    // merging duplicates maintains delta
    assert_eq!(delta1.merge(s2.delta()).unwrap(), delta1);

    s2.merge(&delta1);
    s2.leave(&1, "private", "user1");
    // observed remove
    let delta2 = delta1.merge(s2.delta()).unwrap();
    let vals: Vec<(String, u64)> = delta2.values.keys().map(|t| (t.replica.name.clone(), t.clock)).collect();
    assert_eq!(vals, vec![("s1".into(), 1)]);
    // maintains tombstone
    assert_eq!(
        sorted_clouds(&delta2),
        vec![("s1".into(), 1), ("s1".into(), 2), ("s2".into(), 1), ("s2".into(), 2), ("s2".into(), 3)]
    );
}
