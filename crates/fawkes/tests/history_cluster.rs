//! History shared by the nodes of a cluster on a real Redis: positions are
//! the cluster's, so a client that reconnects to another node, or to a node
//! that restarted, gets what it missed in order, with no duplicate and no
//! gap, while broadcasts keep coming from both nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes::history::HistoryConfig;
use fawkes::Endpoint;
use fawkes_redis::test_server::RedisServer;
use serde_json::{json, Value};
use support::{handler, Client, Log};

struct Node {
    addr: SocketAddr,
    endpoint: Endpoint,
    server: tokio::task::JoinHandle<()>,
}

async fn node(redis: &RedisServer, name: &str) -> Node {
    let cluster = fawkes_redis::connect_cluster(fawkes_redis::RedisConfig::new(redis.url(), name)).await.unwrap();
    let endpoint = Endpoint::new(cluster.pubsub);
    endpoint.history("history:*", HistoryConfig::new().max_messages(10_000));
    endpoint.set_shared_history(cluster.history);
    let handler = handler(Log::default()).channel::<support::Room>("history:*");
    let app = endpoint.socket("/socket", handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Node { addr, endpoint, server }
}

async fn join(c: &mut Client, join_ref: &str, topic: &str, params: Value) {
    c.send(json!([join_ref, join_ref, topic, "phx_join", params])).await;
    let reply = c.expect(topic, "phx_reply").await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
}

async fn next_tick(c: &mut Client, topic: &str) -> (u64, Value) {
    let m = c.expect(topic, "tick").await;
    (m[4]["n"].as_u64().unwrap(), m[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_between_nodes_and_across_a_restart_misses_nothing() {
    let redis = RedisServer::start();
    let a = node(&redis, "history-a").await;
    let b = node(&redis, "history-b").await;
    let topic = "history:cluster";

    // broadcasts every 2 ms, alternately from each node
    let running = Arc::new(AtomicBool::new(true));
    let published = Arc::new(AtomicU64::new(0));
    let publishers = [a.endpoint.clone(), b.endpoint.clone()];
    let publisher = tokio::spawn({
        let (running, published) = (running.clone(), published.clone());
        let publishers = publishers.clone();
        async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                publishers[(n % 2) as usize].broadcast(topic, "tick", json!({"n": n})).unwrap();
                n += 1;
                published.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    // Two nodes publish, so the cluster's order (the history's offsets) is
    // not the order of `n` when one node's publish overtakes the other's:
    // what must hold is that the client sees every offset once, in order,
    // with no gap, across every move.
    let mut seen = Seen::default();
    let mut c = Client::connect(a.addr, false, "").await;
    join(&mut c, "1", topic, json!({})).await;
    let mut position = seen.next(&mut c, topic, "first").await;
    // alternate nodes
    for round in 0..4 {
        for _ in 0..30 {
            position = seen.next(&mut c, topic, &format!("round {round}")).await;
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let to = if round % 2 == 0 { b.addr } else { a.addr };
        c = Client::connect(to, false, "").await;
        join(&mut c, &format!("r{round}"), topic, json!({"since": position})).await;
    }
    for _ in 0..30 {
        position = seen.next(&mut c, topic, "back on a").await;
    }
    drop(c);

    // node b stops serving, and a new node takes its place (a new process:
    // nothing in memory); meanwhile the client misses what both publish,
    // then rejoins on the new node
    b.server.abort();
    b.endpoint.shutdown();
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = node(&redis, "history-b").await;
    let mut c = Client::connect(b.addr, false, "").await;
    join(&mut c, "after", topic, json!({"since": position})).await;
    for _ in 0..60 {
        seen.next(&mut c, topic, "after the restart").await;
    }
    running.store(false, Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(published.load(Ordering::Relaxed) >= seen.ns.len() as u64);
}

/// What the client has received: every broadcast's offset must follow the
/// previous one (nothing missing, nothing twice, in order) and every `n`
/// arrive once.
#[derive(Default)]
struct Seen {
    epoch: Option<String>,
    offset: Option<u64>,
    ns: std::collections::HashSet<u64>,
}

impl Seen {
    async fn next(&mut self, c: &mut Client, topic: &str, when: &str) -> Value {
        let (n, position) = next_tick(c, topic).await;
        let (epoch, offset) = fawkes::history::parse_position(position.as_str().unwrap()).unwrap();
        if let Some(e) = &self.epoch {
            assert_eq!(e, epoch, "{when}: one epoch for the cluster's history");
        }
        if let Some(last) = self.offset {
            assert_eq!(offset, last + 1, "{when}: in order, nothing missing, nothing twice (n = {n})");
        }
        assert!(self.ns.insert(n), "{when}: n = {n} twice");
        self.epoch = Some(epoch.to_owned());
        self.offset = Some(offset);
        position
    }
}
