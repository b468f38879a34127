//! Topics with history on real loopback sockets: positions in the ref slot,
//! rejoins that get what they missed in order before live broadcasts with
//! no duplicate and no gap (while broadcasts keep coming), and gaps said
//! out loud, over WebSocket and long polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes::history::{HistoryConfig, GAP_EVENT};
use fawkes::Endpoint;
use serde_json::{json, Value};
use support::{handler, Client, Log};

async fn serve(config: HistoryConfig) -> (SocketAddr, Endpoint) {
    let endpoint = Endpoint::local();
    endpoint.history("history:*", config);
    let handler = handler(Log::default()).channel::<support::Room>("history:*").configure(|c| c.longpoll = true);
    let app = endpoint.socket("/socket", handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    (addr, endpoint)
}

fn join(join_ref: &str, topic: &str, params: Value) -> Value {
    json!([join_ref, join_ref, topic, "phx_join", params])
}

/// The `n` of the next `tick` broadcast and its position.
async fn next_tick(c: &mut Client, topic: &str) -> (u64, Value) {
    let m = c.expect(topic, "tick").await;
    (m[4]["n"].as_u64().unwrap(), m[1].clone())
}

#[tokio::test]
async fn broadcasts_carry_their_position_in_the_ref_slot() {
    let (addr, endpoint) = serve(HistoryConfig::new()).await;
    let mut c = Client::connect(addr, false, "").await;
    c.send(join("1", "history:a", json!({}))).await;
    assert_eq!(c.expect("history:a", "phx_reply").await[4]["status"], "ok");
    c.expect("history:a", "joined").await;
    let mut last: Option<(String, u64)> = None;
    for n in 0..5 {
        endpoint.broadcast("history:a", "tick", json!({"n": n})).unwrap();
        let m = c.expect("history:a", "tick").await;
        assert_eq!(m[0], Value::Null, "no join ref on a broadcast");
        let p = m[1].as_str().expect("a position, as a string").to_owned();
        assert!(p.parse::<i64>().is_err(), "never a plain integer string: {p}");
        let (epoch, offset) = p.split_once('.').unwrap();
        let offset: u64 = offset.parse().unwrap();
        if let Some((e, o)) = &last {
            assert_eq!((epoch, offset), (e.as_str(), o + 1));
        }
        last = Some((epoch.to_owned(), offset));
    }
    // a topic without history keeps Phoenix's null ref
    c.send(join("2", "room:plain", json!({}))).await;
    c.expect("room:plain", "phx_reply").await;
    endpoint.broadcast("room:plain", "tick", json!({"n": 0})).unwrap();
    assert_eq!(c.expect("room:plain", "tick").await[1], Value::Null);
}

/// Broadcasts keep coming (every millisecond) while clients drop and
/// rejoin with the last position they saw: every client sees every
/// broadcast once, in order.
async fn rejoins_under_load(longpoll: bool) {
    let (addr, endpoint) = serve(HistoryConfig::new().max_messages(10_000)).await;
    let topic = "history:load";
    let running = Arc::new(AtomicBool::new(true));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (endpoint, running, published) = (endpoint.clone(), running.clone(), published.clone());
        async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                endpoint.broadcast(topic, "tick", json!({"n": n})).unwrap();
                n += 1;
                published.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        }
    });
    let mut c = Client::connect(addr, longpoll, "").await;
    c.send(join("1", topic, json!({}))).await;
    c.expect(topic, "phx_reply").await;
    let (first, mut position) = next_tick(&mut c, topic).await;
    let mut expected = first + 1;
    for round in 0..6 {
        // read a while, then drop the connection without a word
        for _ in 0..20 {
            let (n, p) = next_tick(&mut c, topic).await;
            assert_eq!(n, expected, "round {round}: in order, nothing missing, nothing twice");
            expected += 1;
            position = p;
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(30 + 10 * round)).await;
        c = Client::connect(addr, longpoll, "").await;
        c.send(join(&format!("r{round}"), topic, json!({"since": position}))).await;
        let reply = c.expect(topic, "phx_reply").await;
        assert_eq!(reply[4]["status"], "ok");
    }
    for _ in 0..50 {
        let (n, _) = next_tick(&mut c, topic).await;
        assert_eq!(n, expected);
        expected += 1;
    }
    running.store(false, Ordering::Relaxed);
    publisher.await.unwrap();
    assert!(published.load(Ordering::Relaxed) >= expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_miss_nothing_while_broadcasts_keep_coming_over_websocket() {
    rejoins_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_miss_nothing_while_broadcasts_keep_coming_over_long_polling() {
    rejoins_under_load(true).await;
}

async fn gaps_are_said(longpoll: bool) {
    let (addr, endpoint) = serve(HistoryConfig::new().max_messages(5)).await;
    let topic = "history:gap";
    let mut c = Client::connect(addr, longpoll, "").await;
    c.send(join("1", topic, json!({}))).await;
    c.expect(topic, "phx_reply").await;
    endpoint.broadcast(topic, "tick", json!({"n": 0})).unwrap();
    let (_, seen) = next_tick(&mut c, topic).await;
    c.close().await;
    for n in 1..=9 {
        endpoint.broadcast(topic, "tick", json!({"n": n})).unwrap();
    }
    // 9 missed, 5 kept: a gap, then the 5, then live
    let mut c = Client::connect(addr, longpoll, "").await;
    c.send(join("2", topic, json!({"since": seen}))).await;
    assert_eq!(c.expect(topic, "phx_reply").await[4]["status"], "ok", "the join succeeds");
    // pushes made by join come first (Phoenix's order), then the gap
    let gap = c.expect(topic, GAP_EVENT).await;
    assert_eq!(gap[4]["reason"], "expired");
    assert_eq!(gap[4]["since"], seen);
    let mut got = Vec::new();
    let mut positions = Vec::new();
    for _ in 0..5 {
        let (n, p) = next_tick(&mut c, topic).await;
        got.push(n);
        positions.push(p);
    }
    assert_eq!(got, [5, 6, 7, 8, 9]);
    assert_eq!(gap[4]["from"], positions[0], "the first position replayed");
    endpoint.broadcast(topic, "tick", json!({"n": 10})).unwrap();
    assert_eq!(next_tick(&mut c, topic).await.0, 10);

    // a position of another epoch (history lost): a gap too
    let mut c = Client::connect(addr, longpoll, "").await;
    c.send(join("3", topic, json!({"since": "zzzzzzzz.3"}))).await;
    c.expect(topic, "phx_reply").await;
    assert_eq!(c.expect(topic, GAP_EVENT).await[4]["reason"], "epoch");
    // an up-to-date client gets no gap and nothing replayed
    let mut d = Client::connect(addr, longpoll, "").await;
    d.send(join("4", topic, json!({}))).await;
    d.expect(topic, "phx_reply").await;
    endpoint.broadcast(topic, "tick", json!({"n": 11})).unwrap();
    let (_, at) = next_tick(&mut d, topic).await;
    d.close().await;
    let mut d = Client::connect(addr, longpoll, "").await;
    d.send(join("5", topic, json!({"since": at}))).await;
    d.expect(topic, "phx_reply").await;
    endpoint.broadcast(topic, "tick", json!({"n": 12})).unwrap();
    assert_eq!(next_tick(&mut d, topic).await.0, 12, "nothing replayed");
}

#[tokio::test]
async fn a_gap_is_said_and_what_is_kept_follows_over_websocket() {
    gaps_are_said(false).await;
}

#[tokio::test]
async fn a_gap_is_said_and_what_is_kept_follows_over_long_polling() {
    gaps_are_said(true).await;
}

/// Intercepted events are replayed through `handle_out`, per recipient.
#[tokio::test]
async fn replayed_intercepted_events_go_through_handle_out() {
    let (addr, endpoint) = serve(HistoryConfig::new()).await;
    let topic = "history:filtered";
    let mut c = Client::connect(addr, false, "user_id=u1").await;
    c.send(join("1", topic, json!({}))).await;
    c.expect(topic, "phx_reply").await;
    endpoint.broadcast(topic, "tick", json!({"n": 0})).unwrap();
    let (_, seen) = next_tick(&mut c, topic).await;
    c.close().await;
    endpoint.broadcast(topic, "filtered", json!({"to": "u2", "n": 1})).unwrap();
    endpoint.broadcast(topic, "filtered", json!({"to": "u1", "n": 2})).unwrap();
    endpoint.broadcast(topic, "tick", json!({"n": 3})).unwrap();
    let mut c = Client::connect(addr, false, "user_id=u1").await;
    c.send(join("2", topic, json!({"since": seen}))).await;
    c.expect(topic, "phx_reply").await;
    let f = c.expect(topic, "filtered").await;
    assert_eq!(f[4]["n"], 2, "u2's is dropped, u1's pushed");
    assert!(f[1].as_str().is_some_and(|p| p.contains('.')), "with its position: {f}");
    assert_eq!(next_tick(&mut c, topic).await.0, 3);
}
