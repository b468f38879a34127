//! The countdown: ticks in order, news relayed, and after `done` nothing
//! more (the timer and the subscription ended with the channel).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fawkes::Endpoint;
use fawkes_test::{any_payload, assert_push, refute_push, socket};
use serde_json::json;

#[tokio::test]
async fn counts_down_relays_news_and_stops() {
    let endpoint = Endpoint::local();
    let service = fawkes_example_timers::service(&endpoint, Duration::from_millis(20));
    let (_, ch) = socket(&service, ()).join("countdown:2", json!({})).await.unwrap();
    assert_eq!(endpoint.pubsub().subscriber_count("news"), 1);
    endpoint.broadcast("news", "published", json!({"title": "hello"})).unwrap();
    assert_push!(ch, "news", json!({"title": "hello"}));
    assert_push!(ch, "left", json!({"left": 2}));
    assert_push!(ch, "left", json!({"left": 1}));
    assert_push!(ch, "done", json!({}));
    assert_push!(ch, "phx_close", json!({}));
    // the subscription goes as the channel's task ends, just after phx_close
    for _ in 0..100 {
        if endpoint.pubsub().subscriber_count("news") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(endpoint.pubsub().subscriber_count("news"), 0);
    refute_push!(ch, "left", any_payload, Duration::from_millis(100));
}
