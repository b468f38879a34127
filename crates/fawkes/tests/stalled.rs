//! Clients that stop reading while their topic is flooded: each connection's
//! outbound queue is bounded in bytes (what the transport could not write
//! yet included), an overflowing connection is closed within a second (not
//! at the write timeout), and the endpoint's budget across all connections
//! closes the largest queues first. The clients that read get everything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use fawkes::Endpoint;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{handler, serve, Log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A raw WebSocket client that joins `topic` and then never reads again.
async fn stalled_reader(addr: std::net::SocketAddr, topic: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let join = json!(["1", "1", topic, "phx_join", {}]).to_string();
    let mut frame = vec![0x81u8];
    let len = join.len();
    assert!(len < 126);
    frame.push(0x80 | len as u8);
    frame.extend_from_slice(&[0, 0, 0, 0]); // a zero mask
    frame.extend_from_slice(join.as_bytes());
    s.write_all(&frame).await.unwrap();
    s
}

async fn reader(
    addr: std::net::SocketAddr,
    topic: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?vsn=2.0.0")).await.unwrap();
    ws.send(Message::text(json!(["1", "1", topic, "phx_join", {}]).to_string())).await.unwrap();
    ws
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn slow_consumers(endpoint: &Endpoint) -> u64 {
    endpoint.metrics().snapshot().slow_consumers
}

/// Floods `topic` with 32 KiB broadcasts while a reading client keeps up;
/// returns the reader's connection when `n` were read.
async fn flood_and_read(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    topic: &str,
    n: usize,
    mut during: impl FnMut(),
) -> Box<dyn std::any::Any> {
    let mut ws = reader(addr, topic).await;
    // the join reply
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed") };
        if serde_json::from_str::<Value>(&t).unwrap()[3] == "phx_reply" {
            break;
        }
    }
    let pad = "x".repeat(32 * 1024);
    let mut got = 0;
    for i in 0..n {
        endpoint.broadcast(topic, "big", json!({"i": i, "pad": pad})).unwrap();
        loop {
            let msg =
                tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the reader gets each broadcast");
            let Some(Ok(Message::Text(t))) = msg else { panic!("the reader was closed: {msg:?}") };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v[3] == "big" {
                assert_eq!(v[4]["i"], i, "in order, none lost");
                got += 1;
                break;
            }
        }
        during();
    }
    assert_eq!(got, n);
    Box::new(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_within_a_second_of_overflowing() {
    // the default write timeout (30 s) stays: the queue's limit must act first
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| c.outbox_bytes = 256 * 1024)).await;
    let _stalled = stalled_reader(addr, "room:flood").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut closed_after = None;
    let mut peak = 0;
    let _reader = flood_and_read(&endpoint, addr, "room:flood", 1500, || {
        peak = peak.max(endpoint.outbound_bytes());
        if closed_after.is_none() && slow_consumers(&endpoint) >= 1 {
            closed_after = Some(started.elapsed());
        }
    })
    .await;
    let closed_after = closed_after.expect("the stalled reader was closed during the flood");
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
    assert_eq!(endpoint.pubsub().subscriber_count("room:flood"), 1, "only the reader is left");
    // one connection's queue (256 KiB), what the transport holds unwritten
    // (at most as much again) and the reader's few frames in flight
    assert!(peak <= 600 * 1024, "{peak} bytes queued at the peak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_budget_closes_the_largest_queues_first() {
    // queues may each hold 8 MiB, but all together only 1 MiB
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| c.outbox_bytes = 8 << 20)).await;
    endpoint.set_outbound_budget(1 << 20);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_reader(addr, "room:budget").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut peak = 0;
    let _reader =
        flood_and_read(&endpoint, addr, "room:budget", 1500, || peak = peak.max(endpoint.outbound_bytes())).await;
    wait_until("the four stalled readers closed", Duration::from_secs(5), || slow_consumers(&endpoint) >= 4).await;
    assert_eq!(slow_consumers(&endpoint), 4, "the reader is never closed");
    assert_eq!(endpoint.pubsub().subscriber_count("room:budget"), 1);
    // the budget is enforced every quarter of a second at the latest
    assert!(peak < 24 << 20, "{peak} bytes queued at the peak");
    wait_until("the queues are given back", Duration::from_secs(5), || endpoint.outbound_bytes() < 64 * 1024).await;
}
