//! Limits on real loopback sockets: replies leave in push order whether a
//! limit accepts or refuses them, the defaults never refuse what a normal
//! client does, and events that fan out are limited per socket id across
//! its connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fawkes::RateLimit;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{handler, serve, Log};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(addr: std::net::SocketAddr, query: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?vsn=2.0.0&{query}")).await.unwrap().0
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame").unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Sends every message in one go, without waiting for any answer.
async fn send_all(ws: &mut Ws, msgs: impl IntoIterator<Item = Value>) {
    for m in msgs {
        ws.feed(Message::text(m.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
}

/// The next reply, skipping pushes.
async fn reply(ws: &mut Ws) -> Value {
    loop {
        let v = next(ws).await;
        if v[3] == "phx_reply" {
            return v;
        }
    }
}

async fn join(ws: &mut Ws, join_ref: &str, topic: &str) -> Value {
    send_all(ws, [json!([join_ref, join_ref, topic, "phx_join", {}])]).await;
    reply(ws).await
}

/// Pushes `n` echoes back to back and returns the replies in arrival order
/// (ref, status).
async fn echoes(ws: &mut Ws, topic: &str, n: usize) -> Vec<(u64, String)> {
    send_all(ws, (1..=n).map(|i| json!(["1", (1000 + i).to_string(), topic, "echo", {"i": i}]))).await;
    let mut got = Vec::new();
    while got.len() < n {
        let r = reply(ws).await;
        let reason = r[4]["response"]["reason"].as_str().unwrap_or("").to_owned();
        let status = if reason.is_empty() { r[4]["status"].as_str().unwrap().to_owned() } else { reason };
        got.push((r[1].as_str().unwrap().parse::<u64>().unwrap() - 1000, status));
    }
    got
}

fn in_push_order(got: &[(u64, String)]) {
    for (i, (n, status)) in got.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "reply {} of push {n} ({status}) is out of push order", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_channel_limit_leave_in_push_order() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.channel_event_rate = Some(RateLimit::new(500.0, 1000.0));
    }))
    .await;
    let mut ws = open(addr, "").await;
    join(&mut ws, "1", "room:order").await;
    let got = echoes(&mut ws, "room:order", 1500).await;
    in_push_order(&got);
    let refused = got.iter().filter(|(_, s)| s == "rate_limited").count();
    assert!(refused > 0, "the limit must have refused some of 1500 pushes");
    assert!(got.iter().all(|(_, s)| s == "ok" || s == "rate_limited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_socket_limit_leave_in_push_order() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.socket_event_rate = Some(RateLimit::new(100.0, 300.0));
    }))
    .await;
    let mut ws = open(addr, "").await;
    join(&mut ws, "1", "room:order").await;
    let got = echoes(&mut ws, "room:order", 1000).await;
    in_push_order(&got);
    assert!(got.iter().any(|(_, s)| s == "rate_limited"));
}

/// A refused duplicate join is answered after the replies to the pushes
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_leaves_after_the_replies_before_it() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.join_rate = Some(RateLimit::new(0.001, 1.0));
    }))
    .await;
    let mut ws = open(addr, "").await;
    join(&mut ws, "1", "room:j").await;
    let mut msgs: Vec<Value> = (1..=200).map(|i| json!(["1", i.to_string(), "room:j", "sleep", 1])).collect();
    msgs.push(json!(["9", "9", "room:j", "phx_join", {}]));
    send_all(&mut ws, msgs).await;
    for i in 1..=200 {
        let r = reply(&mut ws).await;
        assert_eq!(r[1], i.to_string(), "{r}");
    }
    let r = reply(&mut ws).await;
    assert_eq!((r[1].as_str(), r[4]["response"]["reason"].as_str()), (Some("9"), Some("rate_limited")));
}

/// What a normal client does is never refused by the defaults: switching
/// rooms quickly, rejoining everything after reconnects, sending a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_refuse_nothing_a_normal_client_does() {
    let (addr, _) = serve(handler(Log::default())).await;

    // 60 rooms joined and left, three times over, on one socket
    let mut ws = open(addr, "").await;
    let mut refused = 0;
    for round in 0..3 {
        let joins = (0..60)
            .map(|i| json!([format!("{round}-{i}"), format!("{round}-{i}"), format!("room:{i}"), "phx_join", {}]));
        send_all(&mut ws, joins).await;
        for _ in 0..60 {
            refused += usize::from(reply(&mut ws).await[4]["status"] != "ok");
        }
        let leaves = (0..60)
            .map(|i| json!([format!("{round}-{i}"), format!("l{round}-{i}"), format!("room:{i}"), "phx_leave", {}]));
        send_all(&mut ws, leaves).await;
        for _ in 0..60 {
            reply(&mut ws).await;
        }
    }
    assert_eq!(refused, 0, "joins refused while switching 60 rooms three times");

    // a client that reconnects five times and rejoins up to the channel cap
    for round in 0..5 {
        let mut ws = open(addr, "").await;
        let joins = (0..100).map(|i| json!([format!("{i}"), format!("{i}"), format!("room:r{i}"), "phx_join", {}]));
        send_all(&mut ws, joins).await;
        for _ in 0..100 {
            let r = reply(&mut ws).await;
            assert_eq!(r[4]["status"], "ok", "reconnect {round}: {r}");
        }
    }

    // the same socket leaves and rejoins all 100 channels five times
    let mut ws = open(addr, "").await;
    for round in 0..5 {
        let joins = (0..100)
            .map(|i| json!([format!("{round}-{i}"), format!("{round}-{i}"), format!("room:s{i}"), "phx_join", {}]));
        send_all(&mut ws, joins).await;
        for _ in 0..100 {
            let r = reply(&mut ws).await;
            assert_eq!(r[4]["status"], "ok", "rejoin round {round}: {r}");
        }
    }

    // a burst of pushes on one channel
    let mut ws = open(addr, "").await;
    join(&mut ws, "1", "room:burst").await;
    let got = echoes(&mut ws, "room:burst", 3000).await;
    in_push_order(&got);
    assert!(got.iter().all(|(_, s)| s == "ok"), "a burst of 3000 pushes was refused in part");
}

/// Broadcasts made by `handle_in` fan out to every subscriber: they are
/// limited per socket id across that id's connections, the client gets a
/// `rate_limited` reply (not a crash), and other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_fan_out_are_limited_per_socket_id_across_its_sockets() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.fanout_rate = Some(RateLimit::new(5.0, 20.0));
    }))
    .await;
    let mut tabs = Vec::new();
    for _ in 0..4 {
        let mut ws = open(addr, "user_id=flooder").await;
        join(&mut ws, "1", "room:fan").await;
        tabs.push(ws);
    }
    let mut outcomes = Vec::new();
    for round in 0..10 {
        for (t, ws) in tabs.iter_mut().enumerate() {
            let event = if t % 2 == 0 { "broadcast" } else { "broadcast_from" };
            send_all(ws, [json!(["1", format!("{round}"), "room:fan", event, {"n": round}])]).await;
            let r = reply(ws).await;
            outcomes.push(r[4]["response"]["reason"].as_str().unwrap_or("ok").to_owned());
        }
    }
    let ok = outcomes.iter().filter(|o| *o == "ok").count();
    let limited = outcomes.iter().filter(|o| *o == "rate_limited").count();
    assert_eq!(ok + limited, 40, "{outcomes:?}");
    assert!((20..=23).contains(&ok), "the id's four sockets share one bucket of 20: {ok} went through");

    // the channels are alive: a plain echo still works
    send_all(&mut tabs[0], [json!(["1", "e", "room:fan", "echo", {}])]).await;
    assert_eq!(reply(&mut tabs[0]).await[4]["status"], "ok");

    // another user is not limited by the first one's spending
    let mut other = open(addr, "user_id=calm").await;
    join(&mut other, "1", "room:fan").await;
    send_all(&mut other, [json!(["1", "b", "room:fan", "broadcast", {}])]).await;
    assert_eq!(reply(&mut other).await[4]["status"], "ok");
}
