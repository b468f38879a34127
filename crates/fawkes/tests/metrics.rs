//! Prometheus metrics: the exposition served at `/metrics`, read by a real
//! parser (`prometheus-parse`), and the Grafana dashboard kept in the repo
//! naming only metrics that are exported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prometheus_parse::{Scrape, Value as Sampled};
use serde_json::{json, Value};
use support::{handler, http, serve, Log};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(3), ws.next()).await.expect("a frame").expect("open").unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Serves the endpoint's `/metrics` alone on another listener, behind `token`.
async fn metrics_listener(endpoint: &fawkes::Endpoint, token: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fawkes::telemetry::metrics_router(endpoint, Some(token.to_owned()));
    tokio::spawn(async move { fawkes::serve(listener, app).await });
    addr
}

async fn scrape(addr: SocketAddr, token: &str) -> (Scrape, String) {
    let auth = format!("Bearer {token}");
    let (status, headers, body) = http(addr, "GET", "/metrics", &[("authorization", &auth)], b"").await;
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")));
    let text = String::from_utf8(body).unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (scrape, text)
}

/// The value of the sample named `metric` with `labels` (all of them).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match &s.value {
            Sampled::Counter(v) | Sampled::Gauge(v) | Sampled::Untyped(v) => *v,
            Sampled::Histogram(b) => b.last().map(|c| c.count).unwrap_or(0.0),
            Sampled::Summary(_) => f64::NAN,
        },
    )
}

#[tokio::test]
async fn the_exposition_parses_and_counts_what_happened() {
    let (addr, endpoint) =
        serve(handler(Log::default()).configure(|c| c.socket_event_rate = Some(fawkes::RateLimit::new(1.0, 1.0))))
            .await;
    let metrics = metrics_listener(&endpoint, "s3cret").await;

    // unauthorized scrapes are refused with a JSON body
    let (status, _, body) = http(metrics, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 401);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"error": "unauthorized"}));
    let (status, _, _) = http(metrics, "GET", "/metrics", &[("authorization", "Bearer nope")], b"").await;
    assert_eq!(status, 401);

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?vsn=2.0.0&user_id=m")).await.unwrap();
    send(&mut ws, json!([null, "1", "phoenix", "heartbeat", {}])).await;
    assert_eq!(next_text(&mut ws).await[1], "1");
    send(&mut ws, json!(["1", "2", "room:m", "phx_join", {}])).await;
    assert_eq!(next_text(&mut ws).await[1], "2");
    send(&mut ws, json!(["1", "3", "room:m", "broadcast", {"n": 1}])).await;
    send(&mut ws, json!(["1", "4", "room:m", "echo", {}])).await;
    let mut refused = false;
    while !refused {
        let v = next_text(&mut ws).await;
        refused = v[1] == "4" && v[4]["response"]["reason"] == "rate_limited";
    }
    // a join refused by the channel
    send(&mut ws, json!(["5", "5", "room:private", "phx_join", {}])).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), next_text(&mut ws)).await;

    let (s, text) = scrape(metrics, "s3cret").await;
    assert_eq!(value(&s, "fawkes_connections", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_connections_accepted_total", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_channels", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_messages_in_total", &[]), Some(5.0), "{text}");
    assert_eq!(value(&s, "fawkes_rate_limited_total", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_broadcasts_total", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_deliveries_total", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_connections_refused_total", &[]), Some(0.0), "{text}");
    // histograms: the +Inf bucket counts every observation
    assert_eq!(
        value(&s, "fawkes_connect_duration_seconds", &[("transport", "websocket"), ("result", "ok")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&s, "fawkes_join_duration_seconds", &[("result", "ok")]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_join_duration_seconds", &[("result", "error")]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_handle_in_duration_seconds", &[("event", "broadcast")]), Some(1.0), "{text}");
    assert!(value(&s, "fawkes_outbound_bytes", &[]).is_some(), "{text}");
    assert!(text.ends_with("# EOF\n"));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn handle_in_labels_are_bounded() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    let metrics = metrics_listener(&endpoint, "t").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?vsn=2.0.0")).await.unwrap();
    send(&mut ws, json!(["1", "1", "room:b", "phx_join", {}])).await;
    assert_eq!(next_text(&mut ws).await[1], "1");
    // more distinct events than are named: the channel's handle_in answers
    // "echo" and crashes on the others, each observed
    for i in 0..(fawkes::telemetry::MAX_EVENT_LABELS + 20) {
        send(&mut ws, json!(["1", format!("e{i}"), "room:b", "echo", {}])).await;
    }
    for i in 0..(fawkes::telemetry::MAX_EVENT_LABELS + 20) {
        send(&mut ws, json!(["1", null, "room:b", format!("ev{i}"), {}])).await;
        send(&mut ws, json!(["1", "j", "room:b", "phx_join", {}])).await;
        loop {
            let v = next_text(&mut ws).await;
            if v[1] == "j" {
                break;
            }
        }
    }
    let (s, text) = scrape(metrics, "t").await;
    let events: BTreeSet<&str> = s
        .samples
        .iter()
        .filter(|x| x.metric == "fawkes_handle_in_duration_seconds")
        .filter_map(|x| x.labels.get("event"))
        .collect();
    assert!(events.len() <= fawkes::telemetry::MAX_EVENT_LABELS + 1, "{events:?}");
    assert!(events.contains("other"), "{text}");
    assert!(events.contains("echo"));
}

/// Every metric name a dashboard query uses, without the suffixes of a
/// histogram's series.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("fawkes_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.insert(base.to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    // presence's gauges are exported while the endpoint has a Presence
    let _presence = fawkes::Presence::new(&endpoint);
    // a connection and a join, so that the labelled histograms have series
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?vsn=2.0.0")).await.unwrap();
    send(&mut ws, json!(["1", "1", "room:d", "phx_join", {}])).await;
    assert_eq!(next_text(&mut ws).await[1], "1");
    send(&mut ws, json!(["1", "2", "room:d", "echo", {}])).await;
    while next_text(&mut ws).await[1] != "2" {}
    let metrics = metrics_listener(&endpoint, "t").await;
    let (s, text) = scrape(metrics, "t").await;
    // the names a dashboard can query: each sample's, histograms' series as their base name
    let mut exported: HashMap<String, ()> = HashMap::new();
    for sample in &s.samples {
        exported.insert(sample.metric.clone(), ());
    }
    // the Redis adapter's metrics, present only with that adapter: named
    // by its own exposition
    let stats = fawkes_redis::RedisStats::default();
    let mut registry = prometheus_client::registry::Registry::default();
    stats.register_metrics(&mut registry);
    let mut redis_text = stats.prometheus();
    prometheus_client::encoding::text::encode(&mut redis_text, &registry).unwrap();
    let redis = Scrape::parse(redis_text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let redis: BTreeSet<String> = redis.samples.iter().map(|s| s.metric.clone()).collect();
    assert!(redis.len() >= 5);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana/fawkes.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let used = dashboard_metrics(&dashboard);
    for name in &used {
        if name.starts_with("fawkes_redis_") {
            assert!(redis.contains(name), "{name} is not a metric of the Redis adapter");
        } else {
            assert!(exported.contains_key(name), "the dashboard queries {name}, which is not exported:\n{text}");
        }
    }
    assert!(used.contains("fawkes_handle_in_duration_seconds"));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn presence_sizes_are_gauges() {
    let endpoint = fawkes::Endpoint::local();
    let presence = fawkes::Presence::new(&endpoint);
    let metrics = metrics_listener(&endpoint, "t").await;
    let (a, b) = (presence.pid(1), presence.pid(2));
    presence.track_pid(a.clone(), "room:1", "ann", json!({})).unwrap();
    presence.track_pid(b.clone(), "room:1", "bob", json!({})).unwrap();
    presence.track_pid(b.clone(), "room:2", "bob", json!({})).unwrap();
    let (s, text) = scrape(metrics, "t").await;
    assert_eq!(value(&s, "fawkes_presence_topics", &[]), Some(2.0), "{text}");
    assert_eq!(value(&s, "fawkes_presences", &[]), Some(3.0), "{text}");
    presence.untrack_pid(&b);
    let (s, text) = scrape(metrics, "t").await;
    assert_eq!(value(&s, "fawkes_presence_topics", &[]), Some(1.0), "{text}");
    assert_eq!(value(&s, "fawkes_presences", &[]), Some(1.0), "{text}");
    // gone with the presence
    drop(presence);
    let (_, text) = scrape(metrics, "t").await;
    assert!(!text.contains("fawkes_presences"), "{text}");
}
