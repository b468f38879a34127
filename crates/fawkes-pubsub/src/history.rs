//! What a topic's history is made of, shared by the in-memory history of
//! `fawkes` and the stores that keep it for a cluster (`fawkes-redis`):
//! bounds, positions, what a rejoin replays, and the store's contract.
//!
//! A position is `<epoch>.<offset>`: the epoch names one run of the topic's
//! history (a new one when history was lost), the offset counts broadcasts
//! from 1. An epoch always starts with a letter, so a position is never a
//! plain integer string.

use std::time::Duration;

use fawkes_protocol::{Broadcast, Ref};
use serde_json::{json, Value};

/// The event a channel receives after a join whose `since` position cannot
/// be served whole: `{"reason": ..., "since": <the position asked for>,
/// "from": <the first position replayed, or null>}`. `reason` is
/// `"expired"` (broadcasts after `since` were dropped from the history:
/// too old, or over its bounds), `"epoch"` (the history was lost since:
/// the node restarted, or Redis lost it) or `"invalid"` (not a position of
/// this topic), or `"unavailable"` (a shared history could not be read).
/// Everything still kept follows, then live broadcasts.
pub const GAP_EVENT: &str = "history_gap";

/// Bounds of one topic's history. A broadcast is dropped from the history
/// when any bound is reached (the oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Events that are neither positioned nor kept: ephemeral signals such
    /// as typing notices, which a client that was away has no use for
    /// (default none). They are broadcast as on a topic without history.
    pub ephemeral: Vec<String>,
    /// Most broadcasts kept (default 1000).
    pub max_messages: usize,
    /// Most payload bytes kept (default 4 MiB).
    pub max_bytes: usize,
    /// Oldest broadcast kept (default 5 minutes).
    pub max_age: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            ephemeral: Vec::new(),
            max_messages: 1000,
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(300),
        }
    }
}

impl HistoryConfig {
    /// The defaults: 1000 broadcasts, 4 MiB, 5 minutes.
    pub fn new() -> HistoryConfig {
        HistoryConfig::default()
    }

    /// Keeps at most `n` broadcasts.
    #[must_use]
    pub fn max_messages(mut self, n: usize) -> Self {
        self.max_messages = n;
        self
    }

    /// Keeps at most `bytes` of payloads.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Keeps broadcasts at most `age` old.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Neither positions nor keeps these events (see [`HistoryConfig::ephemeral`]).
    #[must_use]
    pub fn ephemeral<E: Into<String>>(mut self, events: impl IntoIterator<Item = E>) -> Self {
        self.ephemeral.extend(events.into_iter().map(Into::into));
        self
    }

    /// Whether broadcasts of `event` are kept.
    pub fn keeps(&self, event: &str) -> bool {
        !self.ephemeral.iter().any(|e| e == event)
    }
}

/// What a rejoin gets: an optional gap, then the broadcasts to replay.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The payload of [`GAP_EVENT`], when what was missed cannot all be
    /// replayed.
    pub gap: Option<Value>,
    /// The broadcasts after the position, in order, each with its position.
    pub items: Vec<Broadcast>,
}

impl Replay {
    /// A gap (`reason`: `expired`, `epoch` or `invalid`) followed by `items`.
    pub fn gap(reason: &str, since: &Value, items: Vec<Broadcast>) -> Replay {
        let from = items.first().and_then(|b| b.position.as_ref()).map_or(Value::Null, |p| p.as_value().clone());
        Replay { gap: Some(json!({"reason": reason, "since": since, "from": from})), items }
    }
}

/// A history shared by every node of a cluster (for example through
/// Redis), set with `Endpoint::set_shared_history` (in `fawkes`).
/// It replaces the in-memory history for every topic with history: a
/// broadcast is positioned and kept by the shared store, which delivers it
/// to every node, this one included, in the order of the positions; a
/// rejoin reads from it, so a client that reconnects to another node, or
/// to its node after a restart, recovers too.
pub trait SharedHistory: std::fmt::Debug + Send + Sync + 'static {
    /// Queues `broadcast` (on a topic kept by `config`) to be positioned,
    /// kept and delivered to every node's local subscribers, on this node
    /// but to the subscription `except`. Must not block: queue and return.
    ///
    /// # Errors
    ///
    /// When it cannot be queued (the store is unreachable and its queue full).
    fn append(
        &self,
        broadcast: Broadcast,
        except: Option<crate::SubscriberId>,
        config: &HistoryConfig,
    ) -> Result<(), String>;

    /// What a join with `since` on `topic` must replay.
    fn since<'a>(
        &'a self,
        topic: &'a str,
        since: &'a Value,
        config: &'a HistoryConfig,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Replay, String>> + Send + 'a>>;
}

/// The position `<epoch>.<offset>` as a ref.
pub fn position(epoch: &str, offset: u64) -> Ref {
    Ref::from(format!("{epoch}.{offset}"))
}

/// The epoch and offset of a broadcast's position, if it has one.
pub fn position_of(b: &Broadcast) -> Option<(&str, u64)> {
    b.position.as_ref().and_then(|p| p.as_value().as_str()).and_then(parse_position)
}

/// Splits a position into its epoch and offset; `None` when it is not one.
pub fn parse_position(p: &str) -> Option<(&str, u64)> {
    let (epoch, offset) = p.split_once('.')?;
    let first = epoch.chars().next()?;
    if !first.is_ascii_alphabetic() || !epoch.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((epoch, offset.parse().ok()?))
}

/// An epoch from 8 random bytes: a letter, then 7 letters or digits.
pub fn epoch_from(bytes: [u8; 8]) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(8);
    s.push(char::from(LETTERS[usize::from(bytes[0]) % LETTERS.len()]));
    for b in &bytes[1..] {
        s.push(char::from(ALNUM[usize::from(*b) % ALNUM.len()]));
    }
    s
}

/// A position received as text, as a ref (checked with [`parse_position`]).
pub fn position_ref(position: &str) -> Ref {
    Ref::from(position.to_owned())
}
