//! The adapter's counters in Prometheus's text format.

use crate::RedisStats;

impl RedisStats {
    /// The counters in Prometheus's text exposition format, to serve next
    /// to the endpoint's (`fawkes_redis_*`).
    pub fn prometheus(&self) -> String {
        let rows: [(&str, &str, u64); 6] = [
            ("fawkes_redis_published_total", "Messages published to the Redis channel.", self.published()),
            (
                "fawkes_redis_dropped_total",
                "Messages not published: the queue was full or Redis unreachable.",
                self.dropped(),
            ),
            ("fawkes_redis_received_total", "Messages received from the Redis channel.", self.received()),
            (
                "fawkes_redis_ignored_total",
                "Messages for this node that it took no action on (another format version, a Phoenix.PubSub message nothing here takes, a broadcast no client could be sent).",
                self.ignored(),
            ),
            ("fawkes_redis_undecodable_total", "Messages on the channel that were no PubSub message.", self.undecodable()),
            ("fawkes_redis_reconnects_total", "Reconnections to Redis.", self.reconnects()),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn every_counter_is_rendered() {
        let stats = RedisStats::default();
        stats.ignored.fetch_add(3, Ordering::Relaxed);
        let text = stats.prometheus();
        assert!(text.contains("# TYPE fawkes_redis_ignored_total counter\nfawkes_redis_ignored_total 3\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 6);
    }
}
