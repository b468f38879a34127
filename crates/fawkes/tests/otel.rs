//! OpenTelemetry traces (feature `otel`): the spans of a connection, its
//! joins and its events continue the `traceparent` the client sent at
//! connect, read back from the SDK's in-memory exporter.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{json, Value};
use support::{handler, serve, Log};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Runs one client session (connect with `traceparent` as a param or a
/// header, join, an event, close) and returns the spans exported.
async fn session(traceparent_in_query: bool, traceparent: Option<&str>) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let (addr, _endpoint) = serve(handler(Log::default())).await;
    let query = match (traceparent, traceparent_in_query) {
        (Some(t), true) => format!("vsn=2.0.0&traceparent={t}"),
        _ => "vsn=2.0.0".to_owned(),
    };
    let mut req = format!("ws://{addr}/socket/websocket?{query}").into_client_request().unwrap();
    if let (Some(t), false) = (traceparent, traceparent_in_query) {
        req.headers_mut().insert("traceparent", t.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut send = async |v: Value| ws.send(Message::text(v.to_string())).await.unwrap();
    send(json!(["1", "1", "room:t", "phx_join", {}])).await;
    send(json!(["1", "2", "room:t", "echo", {"a": 1}])).await;
    // the echo's reply
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            if serde_json::from_str::<Value>(&t).unwrap()[1] == "2" {
                break;
            }
        }
    }
    ws.close(None).await.unwrap();
    // the socket and channel spans end once the connection's tasks are over
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        if ["connect", "socket", "channel", "join", "handle_in"].iter().all(|n| names.contains(n)) {
            return spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "spans exported: {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap()
}

fn check_continued(spans: &[SpanData]) {
    let trace = TraceId::from_hex(TRACE).unwrap();
    let parent = SpanId::from_hex(PARENT).unwrap();
    for name in ["connect", "socket", "channel", "join", "handle_in"] {
        assert_eq!(named(spans, name).span_context.trace_id(), trace, "{name} is in the client's trace");
    }
    // connect and the connection's span hang from the client's span
    assert_eq!(named(spans, "connect").parent_span_id, parent);
    assert_eq!(named(spans, "socket").parent_span_id, parent);
    // join and handle_in inside the channel's span, inside the socket's
    let channel = named(spans, "channel");
    assert_eq!(channel.parent_span_id, named(spans, "socket").span_context.span_id());
    assert_eq!(named(spans, "join").parent_span_id, channel.span_context.span_id());
    let handle_in = named(spans, "handle_in");
    assert_eq!(handle_in.parent_span_id, channel.span_context.span_id());
    assert!(handle_in.attributes.iter().any(|kv| kv.key.as_str() == "event" && kv.value.as_str() == "echo"));
}

#[tokio::test]
async fn a_traceparent_connect_param_is_continued() {
    let spans = session(true, Some(&format!("00-{TRACE}-{PARENT}-01"))).await;
    check_continued(&spans);
}

#[tokio::test]
async fn a_traceparent_header_is_continued() {
    let spans = session(false, Some(&format!("00-{TRACE}-{PARENT}-01"))).await;
    check_continued(&spans);
}

#[tokio::test]
async fn without_a_traceparent_a_new_trace_starts() {
    let spans = session(true, None).await;
    let trace = named(&spans, "socket").span_context.trace_id();
    assert_ne!(trace, TraceId::from_hex(TRACE).unwrap());
    assert_ne!(trace, TraceId::INVALID);
    assert_eq!(named(&spans, "handle_in").span_context.trace_id(), trace);
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored() {
    let spans = session(true, Some("00-not-a-trace-01")).await;
    assert_ne!(named(&spans, "socket").span_context.trace_id(), TraceId::INVALID);
    assert_ne!(named(&spans, "socket").span_context.trace_id(), TraceId::from_hex(TRACE).unwrap());
}
