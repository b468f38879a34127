//! `telemetry::otel::init` exports over OTLP/HTTP: an in-process collector
//! on loopback receives the spans of a connection, in the trace its client
//! sent (feature `otel`).
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use support::{handler, serve, Log};
use tokio_tungstenite::tungstenite::Message;

/// What the collector received: each request's content type and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector() {
    // the collector: keeps every request to /v1/traces
    let received: Received = Arc::default();
    let keep = received.clone();
    let collector = fawkes::axum::Router::new().route(
        "/v1/traces",
        fawkes::axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let keep = keep.clone();
            async move {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                keep.lock().unwrap().push((ct, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { fawkes::serve(listener, collector).await });
    // SAFETY of the test: nothing else in this binary reads the environment concurrently
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector_addr}"));
    let provider = fawkes::telemetry::otel::init("fawkes-test").unwrap();

    let (addr, _endpoint) = serve(handler(Log::default())).await;
    let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&traceparent=00-{TRACE}-b7ad6b7169203331-01");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(json!(["1", "1", "room:otlp", "phx_join", {}]).to_string())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&TRACE[2 * i..2 * i + 2], 16).unwrap()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.force_flush()).await.unwrap().unwrap();
        let got = received.lock().unwrap().clone();
        let with_trace = got.iter().filter(|(_, b)| b.windows(16).any(|w| w == trace_bytes)).count();
        let names_join = got.iter().any(|(_, b)| b.windows(4).any(|w| w == b"join"));
        if with_trace > 0 && names_join {
            assert!(
                got.iter().all(|(ct, _)| ct == "application/x-protobuf"),
                "{:?}",
                got.iter().map(|g| &g.0).collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no span of the client's trace reached the collector ({} requests)",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
}
