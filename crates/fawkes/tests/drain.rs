//! Drain on deploy, as Phoenix's socket drainer: connections are closed in
//! batches over a window instead of all at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fawkes::{Drain, Endpoint};
use fawkes_test::connect;
use serde_json::json;
use support::{handler, Log};

/// Opens `n` connections and drains them; returns when each was closed,
/// in milliseconds since the drain started, sorted.
async fn drain_times(n: usize, drain: Drain) -> Vec<u128> {
    let endpoint = Endpoint::local();
    let svc = handler(Log::default()).build(&endpoint);
    let mut sockets = Vec::new();
    for i in 0..n {
        sockets.push(connect(&svc, json!({"user_id": format!("u{i}")})).await.unwrap());
    }
    let started = Instant::now();
    let waits: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                assert!(s.wait_closed(Duration::from_secs(30)).await, "closed by the drain");
                started.elapsed().as_millis()
            })
        })
        .collect();
    endpoint.drain(drain).await;
    let mut times = Vec::new();
    for w in waits {
        times.push(w.await.unwrap());
    }
    times.sort_unstable();
    times
}

/// The sizes of the groups of closes, a group ending where no connection
/// closed for `quiet` ms.
fn batches(times: &[u128], quiet: u128) -> Vec<usize> {
    let mut sizes = vec![1];
    for pair in times.windows(2) {
        if pair[1] - pair[0] > quiet {
            sizes.push(0);
        }
        *sizes.last_mut().unwrap() += 1;
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_connections_close_in_batches() {
    let times = drain_times(5000, Drain::new(1000, Duration::from_millis(400), Duration::from_secs(30))).await;
    // five batches of 1000, one every 400 ms
    assert_eq!(batches(&times, 200), [1000; 5]);
    assert!(*times.last().unwrap() >= 1600, "the last batch after four intervals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_grow_to_finish_within_the_window() {
    // 5000 in batches of 1000 every 400 ms would take 1.6 s: only 800 ms are
    // allowed, so two batches of 2500
    let times = drain_times(5000, Drain::new(1000, Duration::from_millis(400), Duration::from_millis(800))).await;
    assert_eq!(batches(&times, 200), [2500, 2500]);
}

/// Real WebSocket connections on loopback: each is closed with 1012
/// ("service restart"), in batches over the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_websockets_close_with_1012_in_batches() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let (addr, endpoint) = support::serve(handler(Log::default())).await;
    let n = 5000;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&user_id=w{i}");
        clients.push(tokio_tungstenite::connect_async(url).await.unwrap().0);
    }
    // every connection is registered before the drain starts
    let deadline = Instant::now() + Duration::from_secs(10);
    while endpoint.metrics().snapshot().connections < n as u64 {
        assert!(Instant::now() < deadline, "{:?}", endpoint.metrics().snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let waits: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            let started = started.clone();
            tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("closed by the drain") {
                        Some(Ok(Message::Close(frame))) => {
                            let at = started.get().expect("the drain started").elapsed().as_millis();
                            return (at, frame.map(|f| u16::from(f.code)));
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("the connection ended without a close frame: {other:?}"),
                    }
                }
            })
        })
        .collect();
    // every reader waits on its socket before the drain starts
    tokio::time::sleep(Duration::from_millis(500)).await;
    started.set(Instant::now()).unwrap();
    endpoint.drain(Drain::new(1000, Duration::from_secs(1), Duration::from_secs(30))).await;
    let mut times = Vec::with_capacity(n);
    for w in waits {
        let (at, code) = w.await.unwrap();
        assert_eq!(code, Some(1012));
        times.push(at);
    }
    times.sort_unstable();
    // The schedule is one batch of 1000 every second. A loaded machine can
    // only make a close arrive later than its batch's time, never earlier:
    // so no more than 1000·k connections are closed before second k, and
    // the last is closed after four intervals, within the window.
    for k in 1..5u128 {
        let early = times.iter().filter(|&&at| at + 50 < 1000 * k).count();
        assert!(early <= 1000 * k as usize, "{early} closed before {k} s: {:?}", batches(&times, 400));
    }
    // and they are spread: the first batch (due at 0 s) is in by 3 s even
    // on a loaded machine
    assert!(times.iter().filter(|&&at| at < 3000).count() >= 1000, "{:?}", batches(&times, 400));
    let last = *times.last().unwrap();
    assert!((4000..30_000).contains(&last), "the last close at {last} ms");
    eprintln!("batches as the clients saw them (sizes): {:?}", batches(&times, 400));
}
