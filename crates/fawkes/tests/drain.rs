//! Drain on deploy, as Phoenix's socket drainer: connections are closed in
//! batches over a window instead of all at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

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
