//! Topic history: broadcasts on opted-in topics get a position and are kept
//! for a while, so that a client that rejoins with the last position it saw
//! gets what it missed, in order, before live broadcasts, with no duplicate
//! and no gap.
//!
//! A position is `<epoch>.<offset>`: the epoch names one run of the topic's
//! history (a new one when history was lost, for example when the node
//! restarted), the offset counts broadcasts from 1. It travels in the ref
//! slot of the broadcast frame, which Phoenix leaves null for broadcasts;
//! the official client passes it to `channel.on(event, (payload, ref) => ...)`
//! as the second argument and otherwise ignores it. An epoch always starts
//! with a letter, so a position is never a plain integer string (the
//! client compares incoming refs with its pending heartbeat's).
//!
//! A client rejoins with `{"since": position}` in its join params; the
//! official client evaluates params given as a function on every join and
//! rejoin, so `socket.channel(topic, () => ({since: last}))` is all an
//! application writes. When what was missed cannot all be replayed (older
//! than the history, or another epoch), the join still succeeds, the
//! channel receives [`GAP_EVENT`] first, then everything still kept.
//!
//! On one node, history lives in memory, bounded per topic (count, bytes,
//! age) and per node ([`Endpoint::set_history_budget`](crate::Endpoint::set_history_budget)).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fawkes_protocol::Broadcast;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::router::Pattern;

pub use fawkes_pubsub::history::{
    parse_position, position, position_of, HistoryConfig, Replay, SharedHistory, GAP_EVENT,
};

/// The default of [`Endpoint::set_history_budget`](crate::Endpoint::set_history_budget): 256 MiB.
pub const DEFAULT_HISTORY_BUDGET: usize = 256 << 20;

/// What an entry costs besides its payload (the broadcast's strings and
/// the entry itself), for the byte bounds.
const ENTRY_OVERHEAD: usize = 96;

struct Stored {
    offset: u64,
    at: Instant,
    broadcast: Broadcast,
    bytes: usize,
}

/// One topic's history.
pub(crate) struct TopicHistory {
    config: HistoryConfig,
    inner: Mutex<TopicInner>,
}

struct TopicInner {
    epoch: Arc<str>,
    /// The offset the next broadcast gets.
    next: u64,
    entries: VecDeque<Stored>,
    bytes: usize,
    touched: Instant,
}

fn new_epoch() -> Arc<str> {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // a clock-derived epoch still differs between runs
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    Arc::from(fawkes_pubsub::history::epoch_from(bytes))
}

impl TopicHistory {
    fn new(config: HistoryConfig, now: Instant) -> TopicHistory {
        TopicHistory {
            config,
            inner: Mutex::new(TopicInner {
                epoch: new_epoch(),
                next: 1,
                entries: VecDeque::new(),
                bytes: 0,
                touched: now,
            }),
        }
    }

    /// The topic's bounds.
    pub(crate) fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Gives `b` the topic's next position, keeps it, and runs `dispatch`
    /// with it while no other broadcast of the topic can be positioned or
    /// dispatched, and no join can read the history: positions, the kept
    /// order and every subscriber's order agree. Returns the bytes the
    /// history grew by (negative when it shrank).
    pub(crate) fn append<T>(&self, b: Broadcast, node: &Histories, dispatch: impl FnOnce(Broadcast) -> T) -> T {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let offset = inner.next;
        inner.next += 1;
        inner.touched = now;
        let b = b.with_position(Some(position(&inner.epoch, offset)));
        let bytes = b.payload.len() + b.topic.len() + b.event.len() + ENTRY_OVERHEAD;
        inner.entries.push_back(Stored { offset, at: now, broadcast: b.clone(), bytes });
        inner.bytes += bytes;
        let before = inner.bytes - bytes;
        inner.trim(&self.config, now);
        node.grew(before, inner.bytes);
        let out = dispatch(b);
        drop(inner);
        out
    }

    /// Runs `subscribe` and reads what a join with `since` must replay, as
    /// one step: a broadcast is either in the replay or reaches the new
    /// subscriber, never both, never neither.
    pub(crate) fn subscribe_since<T>(
        &self,
        since: Option<&Value>,
        node: &Histories,
        subscribe: impl FnOnce() -> T,
    ) -> (T, Replay) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.touched = now;
        let before = inner.bytes;
        inner.trim(&self.config, now);
        node.grew(before, inner.bytes);
        let subscribed = subscribe();
        let replay = match since {
            None | Some(Value::Null) => Replay { gap: None, items: Vec::new() },
            Some(since) => inner.since(since),
        };
        drop(inner);
        (subscribed, replay)
    }

    /// Drops the oldest entries until `bytes` fit; returns how many bytes
    /// were dropped. A history busy elsewhere is left alone (two appends
    /// evicting from each other's topic must not wait for each other).
    fn evict(&self, bytes: usize) -> usize {
        let Some(mut inner) = self.inner.try_lock() else { return 0 };
        let mut freed = 0;
        while freed < bytes {
            let Some(e) = inner.entries.pop_front() else { break };
            inner.bytes -= e.bytes;
            freed += e.bytes;
        }
        freed
    }

    fn oldest(&self) -> Option<Instant> {
        self.inner.try_lock().and_then(|i| i.entries.front().map(|e| e.at))
    }

    fn idle_since(&self) -> Option<(Instant, bool)> {
        self.inner.try_lock().map(|i| (i.touched, i.entries.is_empty()))
    }
}

impl TopicInner {
    fn trim(&mut self, config: &HistoryConfig, now: Instant) {
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > config.max_messages
                || self.bytes > config.max_bytes
                || now.saturating_duration_since(front.at) > config.max_age;
            if !over {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 16 {
            self.entries = VecDeque::new();
        }
    }

    fn all(&self) -> Vec<Broadcast> {
        self.entries.iter().map(|e| e.broadcast.clone()).collect()
    }

    fn gap(&self, reason: &str, since: &Value) -> Replay {
        Replay::gap(reason, since, self.all())
    }

    fn since(&self, since: &Value) -> Replay {
        let Some((epoch, offset)) = since.as_str().and_then(parse_position) else {
            return self.gap("invalid", since);
        };
        if epoch != &*self.epoch {
            return self.gap("epoch", since);
        }
        if offset >= self.next {
            return self.gap("invalid", since);
        }
        let first = self.entries.front().map_or(self.next, |e| e.offset);
        if first > offset + 1 {
            return self.gap("expired", since);
        }
        let items = self.entries.iter().skip_while(|e| e.offset <= offset).map(|e| e.broadcast.clone()).collect();
        Replay { gap: None, items }
    }
}

/// The histories of an endpoint: which topics have one, and their state.
pub(crate) struct Histories {
    patterns: RwLock<Vec<(Pattern, HistoryConfig)>>,
    shared: RwLock<Option<Arc<dyn SharedHistory>>>,
    topics: Mutex<HashMap<String, Arc<TopicHistory>>>,
    bytes: AtomicUsize,
    budget: AtomicUsize,
    last_sweep: Mutex<Instant>,
}

impl std::fmt::Debug for Histories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histories").field("bytes", &self.bytes).finish()
    }
}

/// How often idle topic histories are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Histories {
    pub(crate) fn new() -> Histories {
        Histories {
            patterns: RwLock::new(Vec::new()),
            shared: RwLock::new(None),
            topics: Mutex::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            budget: AtomicUsize::new(DEFAULT_HISTORY_BUDGET),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn add(&self, pattern: &str, config: HistoryConfig) -> Result<(), String> {
        let pattern = Pattern::parse(pattern)?;
        self.patterns.write().push((pattern, config));
        Ok(())
    }

    pub(crate) fn set_shared(&self, store: Arc<dyn SharedHistory>) {
        *self.shared.write() = Some(store);
    }

    /// The shared store, when there is one.
    pub(crate) fn shared(&self) -> Option<Arc<dyn SharedHistory>> {
        self.shared.read().clone()
    }

    pub(crate) fn set_budget(&self, bytes: usize) {
        self.budget.store(bytes, Ordering::Relaxed);
    }

    /// Bytes kept across every topic.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The history of `topic`, when its topic has one (made on first use).
    pub(crate) fn topic(&self, topic: &str) -> Option<Arc<TopicHistory>> {
        // a topic without history (most broadcasts) costs one read lock
        if !self.patterns.read().iter().any(|(p, _)| p.matches(topic)) {
            return None;
        }
        self.sweep();
        if let Some(t) = self.topics.lock().get(topic) {
            return Some(t.clone());
        }
        let config = self.patterns.read().iter().find(|(p, _)| p.matches(topic)).map(|(_, c)| c.clone())?;
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.to_owned()).or_insert_with(|| Arc::new(TopicHistory::new(config, Instant::now())));
        Some(t.clone())
    }

    /// The history that keeps `event` on `topic`, if any.
    pub(crate) fn keeping(&self, topic: &str, event: &str) -> Option<Arc<TopicHistory>> {
        self.topic(topic).filter(|t| t.config.keeps(event))
    }

    /// Accounts for a topic's history going from `before` to `after` bytes,
    /// and keeps the node within its budget (the oldest broadcasts of any
    /// topic go first).
    fn grew(&self, before: usize, after: usize) {
        let total = if after >= before {
            self.bytes.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            self.bytes.fetch_sub(before - after, Ordering::Relaxed) - (before - after)
        };
        let budget = self.budget.load(Ordering::Relaxed);
        if total > budget {
            self.bytes.fetch_sub(self.evict(total - budget), Ordering::Relaxed);
        }
    }

    /// Drops the oldest entries across topics (not the one whose lock the
    /// caller holds: `try_lock` skips it) until `bytes` are freed.
    fn evict(&self, bytes: usize) -> usize {
        let topics: Vec<Arc<TopicHistory>> = self.topics.lock().values().cloned().collect();
        let mut by_age: Vec<(Instant, Arc<TopicHistory>)> =
            topics.into_iter().filter_map(|t| t.oldest().map(|at| (at, t))).collect();
        by_age.sort_by_key(|(at, _)| *at);
        let mut freed = 0;
        for (_, t) in by_age {
            if freed >= bytes {
                break;
            }
            freed += t.evict(bytes - freed);
        }
        freed
    }

    /// Forgets topics idle and empty for long: the epoch and offset of a
    /// topic are kept for a while after its last broadcast expired, so that
    /// a client that saw the last one rejoins without a gap.
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock();
            if now.saturating_duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        let mut topics = self.topics.lock();
        topics.retain(|_, t| match t.idle_since() {
            Some((touched, empty)) => {
                let keep_for = (t.config.max_age * 2).max(Duration::from_secs(600));
                !(empty && now.saturating_duration_since(touched) > keep_for && Arc::strong_count(t) == 1)
            }
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use fawkes_protocol::Payload;
    use serde_json::json;

    use super::*;

    fn bc(n: u64) -> Broadcast {
        Broadcast::new("t", "e", Payload::from(json!({"n": n})))
    }

    fn offsets(items: &[Broadcast]) -> Vec<u64> {
        items
            .iter()
            .map(|b| parse_position(b.position.as_ref().unwrap().as_value().as_str().unwrap()).unwrap().1)
            .collect()
    }

    #[test]
    fn positions_are_never_integer_strings_and_parse_back() {
        for _ in 0..100 {
            let e = new_epoch();
            let p = position(&e, 42);
            let s = p.as_value().as_str().unwrap().to_owned();
            assert!(s.parse::<i64>().is_err() && s.parse::<f64>().is_err(), "{s}");
            assert_eq!(parse_position(&s), Some((&*e, 42)));
        }
        for bad in ["", "1.2", "a.", ".3", "a.-1", "a.1.2", "a b.1", "a.1e3", "é.1"] {
            assert_eq!(parse_position(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_rejoin_gets_what_followed_its_position_or_a_gap() {
        let node = Histories::new();
        node.add("t", HistoryConfig::new().max_messages(5)).unwrap();
        let t = node.topic("t").unwrap();
        let mut seen = Vec::new();
        for n in 0..8 {
            t.append(bc(n), &node, |b| seen.push(b));
        }
        let pos = |i: usize| seen[i].position.as_ref().unwrap().as_value().clone();
        // offsets 1..=8 assigned; 4..=8 kept
        let ((), r) = t.subscribe_since(Some(&pos(5)), &node, || ());
        assert!(r.gap.is_none());
        assert_eq!(offsets(&r.items), [7, 8]);
        let ((), r) = t.subscribe_since(Some(&pos(2)), &node, || ());
        assert!(r.gap.is_none(), "offset 3 seen: 4 onwards are all kept");
        assert_eq!(offsets(&r.items), [4, 5, 6, 7, 8]);
        let ((), r) = t.subscribe_since(Some(&pos(0)), &node, || ());
        assert_eq!(r.gap.as_ref().unwrap()["reason"], "expired");
        assert_eq!(offsets(&r.items), [4, 5, 6, 7, 8]);
        let ((), r) = t.subscribe_since(Some(&pos(7)), &node, || ());
        assert!(r.gap.is_none() && r.items.is_empty(), "up to date");
        let ((), r) = t.subscribe_since(Some(&json!("zzzzzzzz.3")), &node, || ());
        assert_eq!(r.gap.as_ref().unwrap()["reason"], "epoch");
        let ((), r) = t.subscribe_since(Some(&json!(17)), &node, || ());
        assert_eq!(r.gap.as_ref().unwrap()["reason"], "invalid");
        let ((), r) = t.subscribe_since(None, &node, || ());
        assert!(r.gap.is_none() && r.items.is_empty());
    }

    #[test]
    fn bytes_are_bounded_per_topic_and_per_node() {
        let node = Histories::new();
        node.add("a:*", HistoryConfig::new().max_bytes(10_000)).unwrap();
        node.set_budget(15_000);
        let pad = "x".repeat(900);
        let big = |n: u64| Broadcast::new("a:1", "e", Payload::from(json!({"n": n, "p": pad})));
        let a1 = node.topic("a:1").unwrap();
        for n in 0..50 {
            a1.append(big(n), &node, |_| ());
        }
        assert!(node.bytes() <= 10_000, "{}", node.bytes());
        let a2 = node.topic("a:2").unwrap();
        for n in 0..50 {
            a2.append(big(n), &node, |_| ());
        }
        assert!(node.bytes() <= 15_000, "{}", node.bytes());
        assert!(a2.inner.lock().entries.len() > 5, "the newest topic keeps its recent broadcasts");
        assert_eq!(node.bytes(), a1.inner.lock().bytes + a2.inner.lock().bytes);
    }

    #[test]
    fn ephemeral_events_are_not_kept() {
        let node = Histories::new();
        node.add("t", HistoryConfig::new().ephemeral(["typing"])).unwrap();
        assert!(node.keeping("t", "typing").is_none());
        assert!(node.keeping("t", "msg").is_some());
        assert!(node.keeping("other", "msg").is_none());
    }

    #[test]
    fn topics_without_a_pattern_have_no_history() {
        let node = Histories::new();
        assert!(node.topic("room:1").is_none());
        node.add("history:*", HistoryConfig::new()).unwrap();
        assert!(node.topic("room:1").is_none());
        assert!(node.topic("history:1").is_some());
        assert!(node.add("his*tory", HistoryConfig::new()).is_err());
    }
}
