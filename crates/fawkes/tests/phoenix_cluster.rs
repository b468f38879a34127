//! Presence replicated in Phoenix.Tracker's own terms, over a real Redis
//! server (started and stopped by each test): Fawkes nodes among
//! themselves across shards, and Fawkes nodes given what Phoenix nodes
//! wrote during a run with them (fawkes-redis's `tests/data/phoenix-corpus`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fawkes::{Endpoint, Presence, Replication};
use fawkes_etf::Term;
use fawkes_redis::test_server::RedisServer;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

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
}

/// A node of the Phoenix application whose PubSub is `PhxRef.PubSub` and
/// Presence `PhxRefWeb.Presence`, with `shards` shards.
async fn node(server: &RedisServer, name: &str, shards: usize, replication: Replication) -> Node {
    let config = fawkes_redis::RedisConfig::new(server.url(), name).phoenix_pubsub("PhxRef.PubSub");
    let endpoint = Endpoint::new(fawkes_redis::connect(config).await.unwrap());
    let presence =
        Presence::builder(&endpoint).phoenix("PhxRefWeb.Presence").pool_size(shards).replication(replication).build();
    Node { endpoint, presence }
}

async fn keys(n: &Node, topic: &str) -> Vec<String> {
    n.presence.list(topic).await.keys().cloned().collect()
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

const CHANNEL: &str = "phx:Elixir.PhxRef.PubSub.Adapter";

/// Publishes raw bytes on the channel, as a Phoenix node does.
async fn publish(server: &RedisServer, data: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port())).await.unwrap();
    let mut out = format!("*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n", CHANNEL.len(), data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
    // the reply tells it was published
    let mut reply = [0u8; 16];
    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut reply).await.unwrap();
}

fn corpus_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fawkes-redis/tests/data/phoenix-corpus/plain");
    std::fs::read(path.join(name)).unwrap()
}

/// Everything published on the channel, as terms with their topic.
fn watch(endpoint: &Endpoint, topic: &str) -> (fawkes::Subscription, Arc<Mutex<Vec<Term>>>) {
    let seen: Arc<Mutex<Vec<Term>>> = Arc::default();
    let s = seen.clone();
    let sub = endpoint.subscribe(topic, move |b| {
        if let fawkes::Payload::Binary(bytes) = &b.payload {
            s.lock().unwrap().push(fawkes_etf::decode(bytes).unwrap());
        }
    });
    (sub, seen)
}

/// Topics spread over three shards as Phoenix spreads them
/// (`:erlang.phash2(topic, 3)`): each node lists the others' presences in
/// each, and the replication runs on each shard's own topic.
#[tokio::test]
async fn fawkes_nodes_replicate_in_phoenix_terms_across_shards() {
    let server = RedisServer::start();
    let a = node(&server, "a", 3, fast()).await;
    let b = node(&server, "b", 3, fast()).await;
    let c = node(&server, "c", 1, fast()).await; // a node configured for one shard hears only shard 0
    let topics: Vec<String> = (0..12).map(|i| format!("presence:{i}")).collect();
    let shards: std::collections::BTreeSet<u32> =
        topics.iter().map(|t| fawkes_etf::phash2_binary(t.as_bytes(), 3)).collect();
    assert_eq!(shards.len(), 3, "the topics cover every shard");
    let watched: Vec<_> =
        (0..3).map(|n| watch(&b.endpoint, &format!("phx_presence:Elixir.PhxRefWeb.Presence_shard{n}"))).collect();
    for (i, t) in topics.iter().enumerate() {
        a.presence.track_pid(a.presence.pid(i as u64), t, "alice", json!({"status": "online"})).unwrap();
        b.presence.track_pid(b.presence.pid(i as u64), t, "bob", json!({"status": "away"})).unwrap();
    }
    for t in &topics {
        let want = vec!["alice".to_owned(), "bob".to_owned()];
        eventually("both nodes to list both users", async || keys(&a, t).await == want && keys(&b, t).await == want)
            .await;
    }
    for (n, (_, seen)) in watched.iter().enumerate() {
        let seen = seen.lock().unwrap();
        let heartbeat = seen.iter().find(|t| t.as_tuple().is_some_and(|i| i[1].as_atom() == Some("heartbeat")));
        assert!(heartbeat.is_some(), "shard {n}: {seen:?}");
    }
    // c replicates shard 0 only: it lists exactly the topics of shard 0
    for t in &topics {
        let shard0 = fawkes_etf::phash2_binary(t.as_bytes(), 3) == 0;
        if shard0 {
            eventually("c to list shard 0's topics", async || keys(&c, t).await.len() == 2).await;
        }
    }
    let alice = b.presence.get_by_key(&topics[0], "alice").await.unwrap();
    assert_eq!(alice["metas"][0]["status"], "online");
    assert!(alice["metas"][0]["phx_ref"].is_string());

    // a leaves for good: its users leave every shard of b at once
    a.presence.leave_cluster();
    a.endpoint.pubsub().flush().await;
    for t in &topics {
        eventually("alice to leave b", async || keys(&b, t).await == ["bob".to_owned()]).await;
    }
}

/// What Phoenix nodes wrote is merged: a heartbeat with a delta, then,
/// without further heartbeats, the Phoenix node is down after the down
/// period and its presence leaves; a transfer of a whole state addressed
/// to this node is merged too.
#[tokio::test]
async fn what_phoenix_nodes_wrote_is_merged() {
    let server = RedisServer::start();
    let n = node(&server, "fawkes5", 1, fast()).await;
    let diffs: Arc<Mutex<Vec<Value>>> = Arc::default();
    let d = diffs.clone();
    let topic = "presence:interop-e71mx3g1p6q-1";
    let _sub = n.endpoint.subscribe(topic, move |b| d.lock().unwrap().push(b.payload.to_value().unwrap()));
    // phx1's first heartbeat with a delta: one user
    publish(&server, &corpus_file("0041-phx1-heartbeat-delta.etf")).await;
    eventually("phx1's user", async || keys(&n, topic).await == ["pa1-e71mx3g1p6q".to_owned()]).await;
    let user = n.presence.get_by_key(topic, "pa1-e71mx3g1p6q").await.unwrap();
    assert_eq!(user["metas"][0]["status"], "online");
    assert_eq!(user["metas"][0]["phx_ref"], "GOzdZWE2NQcD0gEB");
    // phx1 says nothing more: down, and its user leaves
    eventually("phx1 to be down", async || keys(&n, topic).await.is_empty()).await;
    let diffs = diffs.lock().unwrap().clone();
    assert!(diffs.iter().any(|d| d["joins"].get("pa1-e71mx3g1p6q").is_some()), "{diffs:?}");
    assert!(diffs.iter().any(|d| d["leaves"].get("pa1-e71mx3g1p6q").is_some()), "{diffs:?}");

    // phx4's transfer of its whole state to fawkes5 (as it answered it)
    publish(&server, &corpus_file("0145-phx4-transfer_ack-state.etf")).await;
    eventually("phx4's user", async || keys(&n, "presence:e").await == ["wi".to_owned()]).await;
}

/// What a Fawkes node writes for its presences reads as Phoenix's: a
/// heartbeat `{:pub, :heartbeat, {:name, vsn}, %Phoenix.Tracker.State{},
/// {{:name, vsn}, context}}` whose values hold this node's Erlang pids and
/// atom-keyed metas.
#[tokio::test]
async fn a_fawkes_heartbeat_is_phoenix_shaped() {
    let server = RedisServer::start();
    let listener = node(&server, "listener", 1, fast()).await;
    let (_sub, seen) = watch(&listener.endpoint, "phx_presence:Elixir.PhxRefWeb.Presence_shard0");
    let n = node(&server, "fawkes1@host", 1, fast()).await;
    let pid = n.presence.pid(40_000);
    n.presence.track_pid(pid.clone(), "presence:x", "u1", json!({"status": "online"})).unwrap();
    let mut heartbeat = None;
    eventually("a heartbeat with a delta", async || {
        heartbeat = seen.lock().unwrap().iter().find(|t| is_delta(t)).cloned();
        heartbeat.is_some()
    })
    .await;
    let heartbeat = heartbeat.unwrap();
    let items = heartbeat.as_tuple().unwrap();
    assert_eq!(items[2].as_tuple().unwrap()[0].as_atom(), Some("fawkes1@host"));
    let state = &items[3];
    assert_eq!(state.get_atom_key("__struct__").and_then(Term::as_atom), Some("Elixir.Phoenix.Tracker.State"));
    assert_eq!(state.get_atom_key("mode").and_then(Term::as_atom), Some("delta"));
    let (_, value) = &state.get_atom_key("values").unwrap().as_map().unwrap()[0];
    let Some([Term::Pid(p), topic, key, meta]) = value.as_tuple() else { panic!("{value:?}") };
    // the node name has an @: it is the pids' node; 40 000 = 1 << 15 | 7232
    assert_eq!((p.node.as_str(), p.id, p.serial), ("fawkes1@host", 7232, 1));
    assert_eq!((u64::from(p.serial) << 32 | u64::from(p.id), p.creation), (pid.id, pid.creation));
    assert_eq!((topic.as_binary(), key.as_binary()), (Some(&b"presence:x"[..]), Some(&b"u1"[..])));
    assert_eq!(meta.get_atom_key("status").and_then(Term::as_binary), Some(&b"online"[..]));
    assert!(meta.get_atom_key("phx_ref").and_then(Term::as_binary).is_some());
}

fn is_delta(t: &Term) -> bool {
    t.as_tuple().is_some_and(|i| i.len() == 5 && i[1].as_atom() == Some("heartbeat") && i[3].as_map().is_some())
}
