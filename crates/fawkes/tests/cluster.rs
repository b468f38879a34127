//! Presence across nodes that share a real Redis server (started and
//! stopped by each test): replication, a node going down, a node
//! restarting, a node joining late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fawkes::{Endpoint, Presence, PresencePid, Replication};
use fawkes_redis::test_server::RedisServer;
use serde_json::{json, Value};

const TOPIC: &str = "room:presence";

fn fast() -> Replication {
    Replication {
        broadcast_period: Duration::from_millis(50),
        down_period: Duration::from_millis(600),
        permdown_period: Duration::from_secs(5),
    }
}

struct Node {
    endpoint: Endpoint,
    presence: Presence,
    diffs: Arc<Mutex<Vec<Value>>>,
    _sub: fawkes::pubsub::Subscription,
}

async fn node(server: &RedisServer, name: &str, replication: Replication) -> Node {
    let pubsub = fawkes_redis::connect(fawkes_redis::RedisConfig::new(server.url(), name)).await.unwrap();
    let endpoint = Endpoint::new(pubsub);
    let presence = Presence::builder(&endpoint).replication(replication).build();
    let diffs: Arc<Mutex<Vec<Value>>> = Arc::default();
    let d = diffs.clone();
    let sub = endpoint.subscribe(TOPIC, move |b| {
        if b.event == "presence_diff" {
            d.lock().unwrap().push(b.payload.to_value().unwrap());
        }
    });
    Node { endpoint, presence, diffs, _sub: sub }
}

fn pid(node: &str, id: u64) -> PresencePid {
    PresencePid { node: node.into(), id, creation: 0 }
}

/// The keys listed on `n`, and how many metas each has.
async fn keys(n: &Node) -> Vec<(String, usize)> {
    n.presence.list(TOPIC).await.into_iter().map(|(k, v)| (k, v["metas"].as_array().map_or(0, Vec::len))).collect()
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    for _ in 0..300 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn presences_replicate_both_ways_and_leaves_follow() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    let b = node(&server, "b", fast()).await;
    a.presence.track_pid(pid("a", 1), TOPIC, "alice", json!({"status": "online"})).unwrap();
    b.presence.track_pid(pid("b", 1), TOPIC, "bob", json!({"status": "away"})).unwrap();
    b.presence.track_pid(pid("b", 2), TOPIC, "alice", json!({"status": "busy"})).unwrap();
    let want = vec![("alice".to_owned(), 2), ("bob".to_owned(), 1)];
    eventually("both nodes to list everyone", async || keys(&a).await == want && keys(&b).await == want).await;
    let alice = b.presence.get_by_key(TOPIC, "alice").await.unwrap();
    let mut statuses: Vec<&str> =
        alice["metas"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, ["busy", "online"]);
    // b's subscribers were told about alice's join on a
    assert!(b.diffs.lock().unwrap().iter().any(|d| d["joins"]["alice"]["metas"][0]["status"] == "online"));

    a.presence.untrack_pid(&pid("a", 1));
    let want = vec![("alice".to_owned(), 1), ("bob".to_owned(), 1)];
    eventually("the leave on b", async || keys(&b).await == want).await;
    assert!(b.diffs.lock().unwrap().iter().any(|d| d["leaves"]["alice"]["metas"][0]["status"] == "online"));
    drop(a.endpoint);
}

#[tokio::test]
async fn a_node_that_goes_silent_is_down_and_its_presences_leave() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    let b = node(&server, "b", fast()).await;
    a.presence.track_pid(pid("a", 1), TOPIC, "alice", json!({})).unwrap();
    eventually("alice on b", async || keys(&b).await.len() == 1).await;
    drop(a); // no more heartbeats from a
    eventually("alice to leave b", async || keys(&b).await.is_empty()).await;
    assert!(b.diffs.lock().unwrap().iter().any(|d| d["leaves"].get("alice").is_some()));
}

#[tokio::test]
async fn a_restarted_node_replaces_its_old_run_at_once() {
    let server = RedisServer::start();
    // a down period far longer than the test: only the restart can remove
    let slow_down =
        Replication { down_period: Duration::from_secs(60), permdown_period: Duration::from_secs(120), ..fast() };
    let a = node(&server, "a", slow_down).await;
    let b = node(&server, "b", slow_down).await;
    a.presence.track_pid(pid("a", 1), TOPIC, "old", json!({})).unwrap();
    eventually("old on b", async || keys(&b).await == [("old".to_owned(), 1)]).await;
    drop(a);
    let a2 = node(&server, "a", slow_down).await;
    a2.presence.track_pid(pid("a", 1), TOPIC, "new", json!({})).unwrap();
    eventually("the new run to replace the old", async || keys(&b).await == [("new".to_owned(), 1)]).await;
}

#[tokio::test]
async fn a_node_that_joins_late_gets_the_state_by_transfer() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    for i in 0..3 {
        a.presence.track_pid(pid("a", i), TOPIC, &format!("u{i}"), json!({"i": i})).unwrap();
    }
    // let a's delta go out before c exists
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = node(&server, "c", fast()).await;
    eventually("c to list a's presences", async || keys(&c).await.len() == 3).await;
    assert_eq!(c.presence.get_by_key(TOPIC, "u2").await.unwrap()["metas"][0]["i"], 2);
}

#[tokio::test]
async fn a_node_that_leaves_the_cluster_is_forgotten_at_once() {
    let server = RedisServer::start();
    let slow_down =
        Replication { down_period: Duration::from_secs(60), permdown_period: Duration::from_secs(120), ..fast() };
    let a = node(&server, "a", slow_down).await;
    let b = node(&server, "b", slow_down).await;
    a.presence.track_pid(pid("a", 1), TOPIC, "alice", json!({})).unwrap();
    eventually("alice on b", async || keys(&b).await.len() == 1).await;
    a.presence.leave_cluster();
    a.endpoint.pubsub().flush().await;
    drop(a);
    eventually("alice to leave b long before the down period", async || keys(&b).await.is_empty()).await;
    assert!(b.diffs.lock().unwrap().iter().any(|d| d["leaves"].get("alice").is_some()));
}

/// After leaving, a node stays gone even if its presences still change
/// (its channels close as it stops): nothing of it comes back.
#[tokio::test]
async fn a_node_that_left_does_not_come_back() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    let b = node(&server, "b", fast()).await;
    a.presence.track_pid(pid("a", 1), TOPIC, "alice", json!({})).unwrap();
    a.presence.track_pid(pid("a", 2), TOPIC, "carol", json!({})).unwrap();
    eventually("both on b", async || keys(&b).await.len() == 2).await;
    a.presence.leave_cluster();
    a.endpoint.pubsub().flush().await;
    eventually("a's presences to leave b", async || keys(&b).await.is_empty()).await;
    a.presence.untrack_pid(&pid("a", 1));
    tokio::time::sleep(Duration::from_millis(500)).await; // ten broadcast periods
    assert!(keys(&b).await.is_empty(), "a came back: {:?}", keys(&b).await);
}

/// Two trackers of the same name on one node do not take each other for a
/// restarted peer.
#[tokio::test]
async fn two_trackers_of_one_name_on_a_node_leave_each_other_alone() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    let sibling = Presence::builder(&a.endpoint).replication(fast()).build();
    sibling.track_pid(pid("a", 9), TOPIC, "sib", json!({})).unwrap();
    a.presence.track_pid(pid("a", 1), TOPIC, "alice", json!({})).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(keys(&a).await, [("alice".to_owned(), 1)]);
    assert_eq!(sibling.list(TOPIC).await.keys().collect::<Vec<_>>(), ["sib"]);
}

#[tokio::test]
async fn presences_belong_to_the_node_that_tracks_them() {
    let server = RedisServer::start();
    let a = node(&server, "a", fast()).await;
    assert_eq!(a.presence.track_pid(pid("b", 1), TOPIC, "x", json!({})), Err(fawkes::PresenceError::ForeignPid));
}
