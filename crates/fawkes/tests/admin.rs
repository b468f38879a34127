//! The admin router on real sockets: its socket refuses a client without the
//! key, and `admin:stats` pushes snapshots that list every node of a
//! cluster (two endpoints on a real Redis), topics and presence counts.
//! (The page itself in Chromium: examples/chat/web/admin.test.mjs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fawkes::admin::Admin;
use fawkes::{Endpoint, Presence};
use fawkes_redis::test_server::RedisServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn serve_admin(endpoint: &Endpoint, presence: Presence) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fawkes::axum::Router::new().nest("/admin", Admin::new(endpoint, "k3y").presence(presence).router());
    tokio::spawn(async move { fawkes::serve(listener, app).await });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_stats(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v[3] == "stats" {
                return v[4].clone();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_channel_lists_every_node_behind_the_key() {
    let server = RedisServer::start();
    let a = Endpoint::new(
        fawkes_redis::connect(fawkes_redis::RedisConfig::new(server.url(), "a@127.0.0.1")).await.unwrap(),
    );
    let b = Endpoint::new(
        fawkes_redis::connect(fawkes_redis::RedisConfig::new(server.url(), "b@127.0.0.1")).await.unwrap(),
    );
    let (pa, pb) = (Presence::new(&a), Presence::new(&b));
    let addr = serve_admin(&a, pa.clone()).await;
    let _addr_b = serve_admin(&b, pb.clone()).await;

    // the page is served to anyone; it holds no data
    let (status, _, body) = http_get(addr, "/admin").await;
    assert_eq!(status, 200);
    assert!(body.contains("admin:stats"));

    // without the key, or with another, the socket is refused
    for query in ["vsn=2.0.0", "vsn=2.0.0&key=nope"] {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/admin/socket/websocket?{query}")).await {
            Err(WsError::Http(res)) => assert_eq!(res.status().as_u16(), 403),
            other => panic!("{query}: {:?}", other.map(|_| ())),
        }
    }

    // a presence on node b's topic, seen by a through the cluster
    pa.track_pid(pa.pid(1), "room:lobby", "ann", json!({})).unwrap();
    let _sub = a.subscribe("room:lobby", |_| {});

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/admin/socket/websocket?vsn=2.0.0&key=k3y"))
        .await
        .unwrap();
    ws.send(Message::text(json!(["1", "1", "admin:stats", "phx_join", {}]).to_string())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let stats = next_stats(&mut ws).await;
        let mut nodes: Vec<&str> =
            stats["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
        nodes.sort_unstable();
        let lobby = stats["topics"].as_array().unwrap().iter().find(|t| t["topic"] == "room:lobby").cloned();
        let this = stats["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "a@127.0.0.1").cloned();
        // figures are published once a second: wait for those made after
        // the admin socket connected
        let connected = this.is_some_and(|n| n["connections"] == 1 && n["channels"] == 1);
        if nodes == ["a@127.0.0.1", "b@127.0.0.1"] && connected {
            assert_eq!(lobby.unwrap()["presence"], json!({"keys": 1, "metas": 1}), "{stats}");
            assert_eq!(stats["node"], "a@127.0.0.1");
            assert!(stats["topics"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| !t["topic"].as_str().unwrap().starts_with("phx_presence:")));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.lines().map(str::to_owned).collect(), body.to_owned())
}
