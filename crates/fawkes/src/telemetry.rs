//! Telemetry: `tracing` events named after Phoenix's telemetry events, and
//! Prometheus metrics.
//!
//! | event (`tracing` name, target `fawkes::telemetry`) | fields |
//! | --- | --- |
//! | `socket_connected` | `transport`, `vsn`, `result` (`ok`/`error`), `duration_us` |
//! | `channel_joined` | `topic`, `result` (`ok`/`error`/`crashed`), `duration_us` |
//! | `channel_handled_in` | `topic`, `event`, `duration_us` |
//!
//! Each connection runs inside a `socket` span (`transport`, `vsn`) and each
//! channel inside a `channel` span (`topic`). Payloads are never logged.
//!
//! # Metrics
//!
//! Each endpoint keeps its metrics in a
//! [`prometheus-client`](prometheus_client) registry;
//! [`Endpoint::prometheus`](crate::Endpoint::prometheus) renders them (and
//! the PubSub adapter's, e.g. Redis's) in the OpenMetrics text format that
//! Prometheus scrapes, for a `/metrics` route ([`metrics_router`] serves
//! one, optionally behind a bearer token, on any listener):
//!
//! ```
//! # let endpoint = fawkes::Endpoint::local();
//! let text = endpoint.prometheus();
//! assert!(text.contains("# TYPE fawkes_connections gauge\nfawkes_connections 0\n"));
//! ```
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `fawkes_connections` | gauge | | connections open now |
//! | `fawkes_connections_accepted_total` | counter | | connections accepted |
//! | `fawkes_connections_refused_total` | counter | | refused (by `connect`, `vsn`, origin or a limit) |
//! | `fawkes_connect_duration_seconds` | histogram | `transport`, `result` | time `Socket::connect` took |
//! | `fawkes_longpoll_sessions` | gauge | | long-poll sessions open now |
//! | `fawkes_channels` | gauge | | channels joined now |
//! | `fawkes_join_duration_seconds` | histogram | `result` (`ok`/`error`/`crashed`) | time a join took |
//! | `fawkes_handle_in_duration_seconds` | histogram | `event` | time `handle_in` took; at most [`MAX_EVENT_LABELS`] events are named, the others are `event="other"` |
//! | `fawkes_messages_in_total` | counter | | messages received from clients (heartbeats included) |
//! | `fawkes_broadcasts_total` | counter | | broadcasts sent through the endpoint (by channels, the server API, the application) |
//! | `fawkes_deliveries_total` | counter | | subscribers on this node that took one of those broadcasts |
//! | `fawkes_outbound_bytes` | gauge | | bytes queued for clients, every connection together |
//! | `fawkes_slow_consumers_total` | counter | | connections closed because they did not read what was sent to them (1013) |
//! | `fawkes_decode_errors_total` | counter | | connections closed because a frame did not decode |
//! | `fawkes_rate_limited_total` | counter | | client messages refused by a rate limit |
//! | `fawkes_history_bytes` | gauge | | bytes of topic history kept |
//! | `fawkes_presence_topics` | gauge | | topics with presences (a [`Presence`](crate::Presence) of this endpoint, every node's presences as replicated here) |
//! | `fawkes_presences` | gauge | | presences (metas) on those topics |
//!
//! Durations are in seconds (Prometheus's base unit), in buckets from
//! 100 µs to 14.9 s, each 2.5 times the one before.

use std::collections::HashSet;
use std::time::Instant;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub(crate) const TARGET: &str = "fawkes::telemetry";

/// How many distinct `event` label values `fawkes_handle_in_duration_seconds`
/// names; events seen after that are counted as `event="other"`, so that
/// clients sending arbitrary event names cannot grow the exposition.
pub const MAX_EVENT_LABELS: usize = 64;

pub(crate) fn socket_connected(
    metrics: &Metrics,
    transport: &'static str,
    vsn: &'static str,
    ok: bool,
    started: Instant,
) {
    let result = if ok { "ok" } else { "error" };
    metrics.connect_duration.get_or_create(&ConnectLabels { transport, result }).observe(seconds(started));
    tracing::info!(name: "socket_connected", target: TARGET, transport, vsn, result, duration_us = micros(started));
}

pub(crate) fn channel_joined(metrics: &Metrics, topic: &str, result: &'static str, started: Instant) {
    if result == "crashed" {
        metrics.error(format!("join crashed on {topic}"));
    }
    metrics.join_duration.get_or_create(&ResultLabel { result }).observe(seconds(started));
    tracing::info!(name: "channel_joined", target: TARGET, topic, result, duration_us = micros(started));
}

pub(crate) fn channel_handled_in(metrics: &Metrics, topic: &str, event: &str, started: Instant) {
    let label = metrics.event_label(event);
    metrics.handle_in_duration.get_or_create(&EventLabel { event: label }).observe(seconds(started));
    tracing::debug!(name: "channel_handled_in", target: TARGET, topic, event, duration_us = micros(started));
}

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectLabels {
    transport: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

fn duration_histogram() -> Histogram {
    // 100 µs, 250 µs, ... 14.9 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics of an endpoint, readable at any time ([`Metrics::snapshot`])
/// and rendered by [`Endpoint::prometheus`](crate::Endpoint::prometheus).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    connections_total: Counter,
    refused: Counter,
    longpoll_sessions: Gauge,
    channels: Gauge,
    slow_consumers: Counter,
    decode_errors: Counter,
    messages_in: Counter,
    rate_limited: Counter,
    broadcasts: Counter,
    deliveries: Counter,
    connect_duration: Durations<ConnectLabels>,
    join_duration: Durations<ResultLabel>,
    handle_in_duration: Durations<EventLabel>,
    events: RwLock<HashSet<String>>,
    errors: parking_lot::Mutex<std::collections::VecDeque<RecentError>>,
    sources: Sources,
}

#[derive(Default)]
struct Sources(parking_lot::Mutex<Vec<Source>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources({})", self.0.lock().len())
    }
}

/// Gauges read at scrape time from elsewhere (presence): `(name, help, value)`
/// each; `None` once the source is gone.
pub(crate) type Source = Box<dyn Fn() -> Option<Vec<(&'static str, &'static str, u64)>> + Send + Sync>;

/// How many errors [`Metrics::recent_errors`] keeps.
pub const RECENT_ERRORS: usize = 50;

/// An error the endpoint met (a crashed join, a slow consumer closed, a
/// frame that did not decode), kept for the admin page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RecentError {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub message: String,
}

/// A snapshot of [`Metrics`]' counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused since start (by `connect`, `vsn`, origin or a limit).
    pub refused: u64,
    /// Channels joined now.
    pub channels: u64,
    /// Connections closed because they did not read what was sent to them.
    pub slow_consumers: u64,
    /// Connections closed because they sent a frame that does not decode.
    pub decode_errors: u64,
    /// Messages received from clients (heartbeats included).
    pub messages_in: u64,
    /// Client messages refused by a rate limit (joins and events).
    pub rate_limited: u64,
    /// Broadcasts sent through the endpoint.
    pub broadcasts: u64,
    /// Subscribers on this node that took one of those broadcasts.
    pub deliveries: u64,
    /// Long-poll sessions open now.
    pub longpoll_sessions: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            refused: Counter::default(),
            longpoll_sessions: Gauge::default(),
            channels: Gauge::default(),
            slow_consumers: Counter::default(),
            decode_errors: Counter::default(),
            messages_in: Counter::default(),
            rate_limited: Counter::default(),
            broadcasts: Counter::default(),
            deliveries: Counter::default(),
            connect_duration: Family::new_with_constructor(duration_histogram),
            join_duration: Family::new_with_constructor(duration_histogram),
            handle_in_duration: Family::new_with_constructor(duration_histogram),
            events: RwLock::new(HashSet::new()),
            errors: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            sources: Sources::default(),
            registry: Registry::default(),
        };
        registry.register("fawkes_connections", "Connections open now.", m.connections.clone());
        registry.register("fawkes_connections_accepted", "Connections accepted.", m.connections_total.clone());
        registry.register("fawkes_connections_refused", "Connections refused.", m.refused.clone());
        registry.register(
            "fawkes_connect_duration_seconds",
            "Time the socket's connect took, by transport and result.",
            m.connect_duration.clone(),
        );
        registry.register("fawkes_longpoll_sessions", "Long-poll sessions open now.", m.longpoll_sessions.clone());
        registry.register("fawkes_channels", "Channels joined now.", m.channels.clone());
        registry.register(
            "fawkes_join_duration_seconds",
            "Time a channel join took, by result (ok, error, crashed).",
            m.join_duration.clone(),
        );
        registry.register(
            "fawkes_handle_in_duration_seconds",
            "Time handle_in took, by event (at most 64 events named, the others as other).",
            m.handle_in_duration.clone(),
        );
        registry.register("fawkes_messages_in", "Messages received from clients.", m.messages_in.clone());
        registry.register("fawkes_broadcasts", "Broadcasts sent through the endpoint.", m.broadcasts.clone());
        registry.register(
            "fawkes_deliveries",
            "Subscribers on this node that took a broadcast sent through the endpoint.",
            m.deliveries.clone(),
        );
        registry.register(
            "fawkes_slow_consumers",
            "Connections closed because they did not read what was sent to them.",
            m.slow_consumers.clone(),
        );
        registry.register(
            "fawkes_decode_errors",
            "Connections closed because they sent a frame that does not decode.",
            m.decode_errors.clone(),
        );
        registry.register("fawkes_rate_limited", "Client messages refused by a rate limit.", m.rate_limited.clone());
        Metrics { registry, ..m }
    }
}

/// Values read at scrape time (gauges kept elsewhere, the PubSub adapter's
/// counters).
#[derive(Debug)]
pub(crate) struct Gathered {
    pub(crate) outbound_bytes: usize,
    pub(crate) history_bytes: usize,
    pub(crate) adapter: Vec<fawkes_pubsub::AdapterMetric>,
    /// Gauges of other parts, summed by name.
    pub(crate) gauges: Vec<(&'static str, &'static str, u64)>,
}

impl Collector for Gathered {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64| {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            &mut encoder,
            "fawkes_outbound_bytes",
            "Bytes queued for clients, every connection together.",
            self.outbound_bytes as u64,
        )?;
        gauge(&mut encoder, "fawkes_history_bytes", "Bytes of topic history kept.", self.history_bytes as u64)?;
        let mut summed: Vec<(&str, &str, u64)> = Vec::new();
        for (name, help, v) in &self.gauges {
            match summed.iter_mut().find(|g| g.0 == *name) {
                Some(g) => g.2 += v,
                None => summed.push((name, help, *v)),
            }
        }
        for (name, help, v) in summed {
            gauge(&mut encoder, name, help, v)?;
        }
        for m in &self.adapter {
            if m.gauge {
                gauge(&mut encoder, m.name, m.help, m.value)?;
            } else {
                // OpenMetrics names a counter's family without `_total`
                let family = m.name.strip_suffix("_total").unwrap_or(m.name);
                let c = ConstCounter::new(m.value);
                c.encode(encoder.encode_descriptor(family, m.help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        MetricsSnapshot {
            connections: g(&self.connections),
            connections_total: self.connections_total.get(),
            refused: self.refused.get(),
            channels: g(&self.channels),
            slow_consumers: self.slow_consumers.get(),
            decode_errors: self.decode_errors.get(),
            messages_in: self.messages_in.get(),
            rate_limited: self.rate_limited.get(),
            broadcasts: self.broadcasts.get(),
            deliveries: self.deliveries.get(),
            longpoll_sessions: g(&self.longpoll_sessions),
        }
    }

    /// Adds gauges read at each scrape; a source that answers `None` is
    /// dropped.
    pub(crate) fn add_source(&self, source: Source) {
        self.sources.0.lock().push(source);
    }

    /// The gauges of every live source.
    pub(crate) fn source_gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        self.sources.0.lock().retain(|s| match s() {
            Some(g) => {
                out.extend(g);
                true
            }
            None => false,
        });
        out
    }

    /// The OpenMetrics text of these metrics and of `gathered`.
    pub(crate) fn encode(&self, gathered: Gathered) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(gathered));
        let mut out = String::new();
        // writing to a String does not fail
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scraped);
        let _ = encode_eof(&mut out);
        out
    }

    /// The `event` label for `event`: itself while fewer than
    /// [`MAX_EVENT_LABELS`] distinct events were seen, else `other`.
    fn event_label(&self, event: &str) -> String {
        if self.events.read().contains(event) {
            return event.to_owned();
        }
        let mut seen = self.events.write();
        if seen.contains(event) || seen.len() < MAX_EVENT_LABELS {
            seen.insert(event.to_owned());
            event.to_owned()
        } else {
            "other".to_owned()
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
        self.connections_total.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn longpoll_opened(&self) {
        self.longpoll_sessions.inc();
    }

    pub(crate) fn longpoll_closed(&self) {
        self.longpoll_sessions.dec();
    }

    pub(crate) fn refused(&self) {
        self.refused.inc();
    }

    pub(crate) fn channel_joined(&self) {
        self.channels.inc();
    }

    pub(crate) fn channel_left(&self) {
        self.channels.dec();
    }

    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.inc();
        self.error("a slow consumer was closed (1013): it did not read what was sent to it".into());
    }

    pub(crate) fn decode_error(&self) {
        self.decode_errors.inc();
        self.error("a connection was closed: it sent a frame that does not decode".into());
    }

    /// Keeps `message` among the recent errors.
    pub(crate) fn error(&self, message: String) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut errors = self.errors.lock();
        if errors.len() == RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(RecentError { at_ms, message });
    }

    /// The last [`RECENT_ERRORS`] errors, oldest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.errors.lock().iter().cloned().collect()
    }

    pub(crate) fn message_in(&self) {
        self.messages_in.inc();
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub(crate) fn broadcast(&self, delivered: usize) {
        self.broadcasts.inc();
        self.deliveries.inc_by(delivered as u64);
    }
}

/// The content type of [`Endpoint::prometheus`](crate::Endpoint::prometheus)'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A router serving `GET /metrics` with the endpoint's metrics
/// ([`Endpoint::prometheus`](crate::Endpoint::prometheus)). With
/// `bearer = Some(token)` a scrape must send `Authorization: Bearer <token>`
/// (Prometheus's `authorization` scrape option), else it is answered 401
/// with a JSON body `{"error": "unauthorized"}`. Merge it into the
/// application's router, or serve it alone on another listener (a port only
/// the monitoring network reaches):
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let endpoint = fawkes::Endpoint::local();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9568").await?;
/// fawkes::serve(listener, fawkes::telemetry::metrics_router(&endpoint, None)).await
/// # }
/// ```
pub fn metrics_router(endpoint: &crate::Endpoint, bearer: Option<String>) -> axum::Router {
    use axum::response::IntoResponse;
    let endpoint = endpoint.clone();
    let bearer = std::sync::Arc::new(bearer);
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: http::HeaderMap| {
            let endpoint = endpoint.clone();
            let bearer = bearer.clone();
            async move {
                if let Some(token) = bearer.as_deref() {
                    if !bearer_matches(&headers, token) {
                        return unauthorized();
                    }
                }
                ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], endpoint.prometheus()).into_response()
            }
        }),
    )
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in
/// constant time).
pub(crate) fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 with a JSON body and `WWW-Authenticate: Bearer`.
pub(crate) fn unauthorized() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        http::StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": "unauthorized"})),
    )
        .into_response()
}

/// The trace a connection continues: the `traceparent` (and `tracestate`)
/// its client sent at connect, as a connect param (the official client's
/// `params`, sent in the query string) or an HTTP header of the connect
/// request. Without the `otel` feature it holds nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace {
    #[cfg(feature = "otel")]
    cx: Option<opentelemetry::Context>,
}

impl Trace {
    /// Reads the W3C trace context of a connect request.
    #[cfg(feature = "otel")]
    pub(crate) fn of(params: &crate::Params, info: &crate::ConnectInfo) -> Trace {
        use opentelemetry::propagation::{Extractor, TextMapPropagator};
        use opentelemetry::trace::TraceContextExt;
        struct Carrier<'a>(&'a crate::Params, &'a crate::ConnectInfo);
        impl Extractor for Carrier<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                self.0.get_str(key).or_else(|| self.1.headers().get(key).and_then(|v| v.to_str().ok()))
            }
            fn keys(&self) -> Vec<&str> {
                vec!["traceparent", "tracestate"]
            }
        }
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Carrier(params, info));
        Trace { cx: cx.span().span_context().is_valid().then_some(cx) }
    }

    /// Reads the W3C trace context of a connect request.
    #[cfg(not(feature = "otel"))]
    pub(crate) fn of(_: &crate::Params, _: &crate::ConnectInfo) -> Trace {
        Trace {}
    }
}

/// Makes `span` a child of the trace the client sent at connect, if any
/// (a no-op without the `otel` feature).
pub(crate) fn continue_trace(span: &tracing::Span, trace: &Trace) {
    #[cfg(feature = "otel")]
    if let Some(cx) = &trace.cx {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(cx.clone());
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, trace);
}

/// The span of a client event's `handle_in`.
pub(crate) fn handle_in_span(topic: &str, event: &str) -> tracing::Span {
    tracing::info_span!("handle_in", topic, event)
}

/// OpenTelemetry export over OTLP (feature `otel`).
///
/// [`otel::init`] installs a `tracing` subscriber that logs as
/// `tracing_subscriber::fmt` does (filtered by `RUST_LOG`) and exports every
/// span over OTLP/HTTP (protobuf) to `OTEL_EXPORTER_OTLP_ENDPOINT` (default
/// `http://localhost:4318`), the standard OpenTelemetry variables applying.
/// Fawkes's spans: `socket` (a connection's life; `transport`, `vsn`),
/// `connect` (`Socket::connect`), `channel` (a channel's life; `topic`),
/// `join` and `handle_in` (`topic`, `event`). A client that sends a W3C
/// `traceparent` at connect (a connect param, as
/// `new Socket(url, {params: {traceparent}})` sends it, or a header) has
/// these spans in its trace.
#[cfg(feature = "otel")]
pub mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    pub use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Why [`init`] failed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum OtelError {
        /// The OTLP exporter could not be built.
        #[error("the OTLP exporter could not be built: {0}")]
        Exporter(String),
        /// A global `tracing` subscriber was already set.
        #[error("a tracing subscriber is already installed: {0}")]
        Subscriber(String),
    }

    /// Installs the global subscriber (logs and OTLP export) for the
    /// service `service_name`; returns the provider, to
    /// [`shutdown`](SdkTracerProvider::shutdown) (flushing what is left) when
    /// the application stops.
    ///
    /// # Errors
    ///
    /// When the exporter cannot be built or a subscriber is already set.
    pub fn init(service_name: &str) -> Result<SdkTracerProvider, OtelError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("fawkes"));
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer())
            .with(layer)
            .try_init()
            .map_err(|e| OtelError::Subscriber(e.to_string()))?;
        Ok(provider)
    }
}
