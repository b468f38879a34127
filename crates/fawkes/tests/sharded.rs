//! Two nodes in sharded fan-out mode on a real Redis Cluster (three
//! masters, started and stopped by the test): presence replication,
//! `disconnect` and long-poll relays ride on broadcasts and direct
//! broadcasts, and keep working when each node subscribes only to the
//! channels of its own topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fawkes::{Endpoint, Presence, PresencePid, Replication};
use fawkes_redis::test_server::RedisCluster;
use serde_json::{json, Value};
use support::{handler, lp, Log};

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn node(cluster: &RedisCluster, name: &str) -> (Endpoint, Presence, SocketAddr, fawkes_redis::Cluster) {
    let mut config = fawkes_redis::RedisConfig::new(cluster.url(), name);
    config.shards = 8;
    let redis = fawkes_redis::connect_cluster(config).await.unwrap();
    let endpoint = Endpoint::new(redis.pubsub.clone());
    let presence = Presence::builder(&endpoint)
        .replication(Replication {
            broadcast_period: Duration::from_millis(50),
            down_period: Duration::from_secs(3),
            permdown_period: Duration::from_secs(10),
        })
        .build();
    let app = endpoint.socket(
        "/socket",
        handler(Log::default()).configure(|c| {
            c.longpoll = true;
            c.longpoll_window = Duration::from_millis(300);
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    (endpoint, presence, addr, redis)
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    for _ in 0..400 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn presence_disconnect_and_long_poll_relays_work_in_sharded_mode() {
    let cluster = RedisCluster::start(3, 0);
    let (a, presence_a, addr_a, redis_a) = node(&cluster, "a").await;
    let (b, presence_b, addr_b, _redis_b) = node(&cluster, "b").await;

    // presence: tracked on each node, listed on both
    let topic = "room:sharded-presence";
    let _watch_a = a.subscribe(topic, |_| {});
    let _watch_b = b.subscribe(topic, |_| {});
    presence_a.track_pid(PresencePid { node: "a".into(), id: 1, creation: 0 }, topic, "alice", json!({})).unwrap();
    presence_b.track_pid(PresencePid { node: "b".into(), id: 1, creation: 0 }, topic, "bob", json!({})).unwrap();
    let keys = async |p: &Presence| p.list(topic).await.keys().cloned().collect::<Vec<String>>();
    eventually("both nodes to list alice and bob", async || {
        keys(&presence_a).await == ["alice", "bob"] && keys(&presence_b).await == ["alice", "bob"]
    })
    .await;

    // a long-poll session on node a, driven through node b
    let token = lp(addr_a, "GET", "vsn=2.0.0&user_id=d", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    let body = [
        json!(["1", "1", "room:relay", "phx_join", {}]).to_string(),
        json!(["1", "2", "room:relay", "echo", {"via": "b"}]).to_string(),
    ]
    .join("\n");
    assert_eq!(lp(addr_b, "POST", &q, &body).await, json!({"status": 200}));
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..20 {
        let r = lp(addr_b, "GET", &q, "").await;
        for m in r["messages"].as_array().into_iter().flatten() {
            got.push(serde_json::from_str(m.as_str().unwrap()).unwrap());
        }
        if got.iter().any(|m| m[3] == "phx_reply" && m[1] == "2") {
            break;
        }
    }
    assert!(
        got.contains(&json!(["1", "2", "room:relay", "phx_reply", {"status": "ok", "response": {"via": "b"}}])),
        "{got:?}"
    );
    // a broadcast made on node b reaches the session on node a, once node
    // a's subscription to the topic's shard is in place
    let mut news = false;
    for i in 0..40 {
        b.broadcast("room:relay", "news", json!({"n": i})).unwrap();
        let r = lp(addr_a, "GET", &q, "").await;
        if r["messages"].as_array().into_iter().flatten().any(|m| m.as_str().unwrap().contains("\"news\"")) {
            news = true;
            break;
        }
    }
    assert!(news, "no broadcast from node b reached the session on node a");

    // disconnect from node b ends the session on node a
    b.disconnect("user_socket:d").unwrap();
    eventually("the session to end", async || lp(addr_a, "POST", &q, "[]").await == json!({"status": 410})).await;

    // node a subscribes to its own channel and the shards of its topics,
    // not to every shard
    let subscribed = redis_a.stats.channels();
    assert!((2..=9).contains(&subscribed), "{subscribed} channels");
    drop(a);
}
