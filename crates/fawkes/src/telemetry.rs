//! Telemetry: `tracing` events named after Phoenix's telemetry events, and
//! counters.
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
//! The endpoint's counters ([`Metrics`]) render in Prometheus's text format
//! with [`MetricsSnapshot::prometheus`], for a `/metrics` route:
//!
//! ```
//! # let endpoint = fawkes::Endpoint::local();
//! let text = endpoint.metrics().snapshot().prometheus();
//! assert!(text.contains("# TYPE fawkes_connections gauge\nfawkes_connections 0\n"));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub(crate) const TARGET: &str = "fawkes::telemetry";

pub(crate) fn socket_connected(transport: &'static str, vsn: &'static str, ok: bool, started: Instant) {
    tracing::info!(name: "socket_connected", target: TARGET, transport, vsn, result = if ok { "ok" } else { "error" }, duration_us = micros(started));
}

pub(crate) fn channel_joined(topic: &str, result: &'static str, started: Instant) {
    tracing::info!(name: "channel_joined", target: TARGET, topic, result, duration_us = micros(started));
}

pub(crate) fn channel_handled_in(topic: &str, event: &str, started: Instant) {
    tracing::debug!(name: "channel_handled_in", target: TARGET, topic, event, duration_us = micros(started));
}

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Counters of an endpoint, readable at any time.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicU64,
    connections_total: AtomicU64,
    refused: AtomicU64,
    channels: AtomicU64,
    slow_consumers: AtomicU64,
    decode_errors: AtomicU64,
    messages_in: AtomicU64,
    rate_limited: AtomicU64,
}

/// A snapshot of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused since start (by `connect`, `vsn` or origin).
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
}

impl MetricsSnapshot {
    /// The counters in Prometheus's text exposition format.
    pub fn prometheus(&self) -> String {
        let rows: [(&str, &str, &str, u64); 8] = [
            ("fawkes_connections", "gauge", "Connections open now.", self.connections),
            ("fawkes_connections_total", "counter", "Connections accepted.", self.connections_total),
            ("fawkes_connections_refused_total", "counter", "Connections refused.", self.refused),
            ("fawkes_channels", "gauge", "Channels joined now.", self.channels),
            (
                "fawkes_slow_consumers_total",
                "counter",
                "Connections closed because they did not read what was sent to them.",
                self.slow_consumers,
            ),
            (
                "fawkes_decode_errors_total",
                "counter",
                "Connections closed because they sent a frame that does not decode.",
                self.decode_errors,
            ),
            ("fawkes_messages_in_total", "counter", "Messages received from clients.", self.messages_in),
            ("fawkes_rate_limited_total", "counter", "Client messages refused by a rate limit.", self.rate_limited),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

impl Metrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections: l(&self.connections),
            connections_total: l(&self.connections_total),
            refused: l(&self.refused),
            channels: l(&self.channels),
            slow_consumers: l(&self.slow_consumers),
            decode_errors: l(&self.decode_errors),
            messages_in: l(&self.messages_in),
            rate_limited: l(&self.rate_limited),
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn channel_joined(&self) {
        self.channels.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn channel_left(&self) {
        self.channels.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn decode_error(&self) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}
