//! Presence across nodes: Phoenix.Tracker's shard protocol over the
//! endpoint's PubSub (which spans the cluster when it has an adapter, such
//! as `fawkes-redis`).
//!
//! Every `broadcast_period` a tracker sends its delta (the changes since the
//! last heartbeat) to the other nodes in a heartbeat; after ten silent
//! periods it sends an empty heartbeat, so that the others know it is alive.
//! A receiver merges a delta that follows on from what it has of the sender;
//! otherwise, and whenever heartbeats show that another replica has seen more
//! (sampled every two periods, as Phoenix does), it asks for a transfer of
//! the state and merges that. A replica not heard from within `down_period`
//! is down: its presences leave (and come back if it does); after
//! `permdown_period` it is forgotten. A node that restarts is a new replica
//! (the version is the start time): the old one's presences leave at once.
//! Every merge turns into `presence_diff`s for the local subscribers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fawkes_protocol::{Broadcast, Payload};
use fawkes_pubsub::{Delivery, FrameCache, Subscriber, Subscription};
use fawkes_tracker::{Clocks, Context, Delta, Element, Entry, ReplicaId, ReplicaStatus, Tag};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{triple, Change, Inner, Meta, PresencePid};

/// How often a tracker tells the others what changed, and when a silent one
/// counts as down or gone. Phoenix's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Between two heartbeats (Phoenix: 1.5 s).
    pub broadcast_period: Duration,
    /// Silence after which a replica is down and its presences leave
    /// (Phoenix: 30 s; at least twice the broadcast period).
    pub down_period: Duration,
    /// Silence after which a replica is forgotten (Phoenix: 20 minutes).
    pub permdown_period: Duration,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            broadcast_period: Duration::from_millis(1500),
            down_period: Duration::from_secs(30),
            permdown_period: Duration::from_secs(20 * 60),
        }
    }
}

/// Empty heartbeats are sent after this many silent periods.
const MAX_SILENT_PERIODS: u32 = 10;
/// Clocks seen in heartbeats are compared every this many periods.
const CLOCK_SAMPLE_PERIODS: u32 = 2;
/// Replication messages waiting to be handled, at most; more are dropped
/// (what they carried comes back through a transfer).
const INBOX: usize = 4096;
const EVENT: &str = "replication";

type Pairs = Vec<(ReplicaId, u64)>;

fn ctx_out(c: &Context) -> Pairs {
    c.iter().map(|(r, n)| (r.clone(), *n)).collect()
}

fn ctx_in(p: Pairs) -> Context {
    p.into_iter().collect()
}

/// A delta or an extracted state on the wire (JSON has no struct keys).
#[derive(Debug, Serialize, Deserialize)]
struct WireDelta {
    replica: ReplicaId,
    context: Pairs,
    clouds: Vec<(ReplicaId, Vec<u64>)>,
    values: Vec<(Tag, Entry<PresencePid, Meta>)>,
    range: (Pairs, Pairs),
}

impl WireDelta {
    fn from_delta(d: &Delta<PresencePid, Meta>) -> WireDelta {
        WireDelta {
            replica: d.replica.clone(),
            context: ctx_out(&d.context),
            clouds: d.clouds.iter().map(|(r, c)| (r.clone(), c.iter().copied().collect())).collect(),
            values: d.values.iter().map(|(t, e)| (t.clone(), e.clone())).collect(),
            range: (ctx_out(&d.range.0), ctx_out(&d.range.1)),
        }
    }

    fn into_delta(self) -> Delta<PresencePid, Meta> {
        Delta {
            replica: self.replica,
            context: ctx_in(self.context),
            clouds: self.clouds.into_iter().map(|(r, c)| (r, c.into_iter().collect())).collect(),
            values: self.values.into_iter().collect(),
            range: (ctx_in(self.range.0), ctx_in(self.range.1)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Msg {
    Heartbeat {
        from: ReplicaId,
        clocks: Pairs,
        delta: Option<WireDelta>,
    },
    TransferReq {
        from: ReplicaId,
        clocks: Pairs,
    },
    TransferAck {
        from: ReplicaId,
        state: WireDelta,
    },
    /// The sender is stopping for good: forget it now.
    GracefulPermdown {
        from: ReplicaId,
    },
}

/// Broadcasts that this replica leaves the cluster for good, and stops its
/// replication: nothing more is sent or merged (anything more would bring
/// it back on the other nodes).
pub(super) fn leave(inner: &Inner, topic: &str) {
    if inner.left.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let msg = Msg::GracefulPermdown { from: inner.replica.clone() };
    match Payload::json(&msg) {
        Ok(payload) => {
            if let Err(e) = inner.endpoint.pubsub().broadcast(Broadcast::new(topic, EVENT, payload)) {
                tracing::warn!(error = %e, "presence replication: leaving message not sent");
            }
        }
        Err(e) => tracing::error!(error = %e, "presence replication message not encoded"),
    }
}

/// Hands replication broadcasts to the replication task.
struct Inbox(mpsc::Sender<Broadcast>);

impl Subscriber for Inbox {
    fn deliver(&self, msg: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
        match self.0.try_send(msg.clone()) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("presence replication inbox full: a message is dropped");
                Delivery::Delivered
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

/// Starts replicating `inner`'s state on `topic`.
pub(super) fn start(inner: &Arc<Inner>, topic: String, config: Replication) {
    let (tx, rx) = mpsc::channel(INBOX);
    let subscription = inner.endpoint.pubsub().subscribe(&topic, Arc::new(Inbox(tx)));
    let task = Task {
        inner: Arc::downgrade(inner),
        topic,
        config,
        subscription,
        // the first tick announces this replica
        silent: MAX_SILENT_PERIODS,
        ticks: 0,
        last_seen: HashMap::new(),
        departed: HashMap::new(),
        pending_clocks: Clocks::new(),
        warned_sibling: false,
    };
    tokio::spawn(task.run(rx));
}

struct Task {
    inner: Weak<Inner>,
    topic: String,
    config: Replication,
    subscription: Subscription,
    silent: u32,
    ticks: u32,
    last_seen: HashMap<ReplicaId, Instant>,
    /// Replicas that left gracefully, ignored until the permanent-down
    /// period has passed (a message of theirs still in flight must not bring
    /// them back).
    departed: HashMap<ReplicaId, Instant>,
    pending_clocks: Clocks,
    warned_sibling: bool,
}

/// Groups elements by topic into changes for the diff task.
fn changes(joins: Vec<Element<PresencePid, Meta>>, leaves: Vec<Element<PresencePid, Meta>>) -> Vec<Change> {
    let mut by_topic: BTreeMap<String, Change> = BTreeMap::new();
    let all = leaves.into_iter().map(|e| (e, false)).chain(joins.into_iter().map(|e| (e, true)));
    for (el, joined) in all {
        let change = by_topic.entry(el.topic.clone()).or_insert_with(|| Change {
            topic: el.topic.clone(),
            joins: Vec::new(),
            leaves: Vec::new(),
        });
        if joined {
            change.joins.push(triple(el));
        } else {
            change.leaves.push(triple(el));
        }
    }
    by_topic.into_values().collect()
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Broadcast>) {
        let period = self.config.broadcast_period;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let Some(inner) = self.inner.upgrade() else { return };
                    if inner.left.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    self.on_tick(&inner);
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { return };
                    let Some(inner) = self.inner.upgrade() else { return };
                    if inner.left.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    self.on_message(&inner, &msg);
                }
            }
        }
    }

    fn send(&self, inner: &Inner, to: Option<&str>, msg: &Msg) {
        // straight to JSON bytes, no intermediate tree
        let payload = match Payload::json(msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "presence replication message not encoded");
                return;
            }
        };
        let b = Broadcast::new(self.topic.clone(), EVENT, payload);
        let pubsub = inner.endpoint.pubsub();
        let sent = match to {
            Some(node) => pubsub.direct_broadcast(node, b),
            None => pubsub.broadcast_from(self.subscription.id(), b).map(|_| ()),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "presence replication message not sent");
        }
    }

    fn emit(inner: &Inner, changes: Vec<Change>) {
        for c in changes {
            if !c.joins.is_empty() || !c.leaves.is_empty() {
                let _ = inner.diffs.send(c);
            }
        }
    }

    fn on_tick(&mut self, inner: &Inner) {
        self.ticks = self.ticks.wrapping_add(1);
        let heartbeat = {
            let mut state = inner.state.lock();
            let clocks = self.visible_clocks(&state);
            if state.has_delta() {
                let delta = WireDelta::from_delta(state.delta());
                state.reset_delta();
                // fold this replica's dots into its clock, as Phoenix does
                // on every heartbeat: without it the clouds grow forever on a
                // node that never merges anything
                state.compact();
                self.silent = 0;
                Some(Msg::Heartbeat { from: inner.replica.clone(), clocks, delta: Some(delta) })
            } else if self.silent >= MAX_SILENT_PERIODS {
                self.silent = 0;
                Some(Msg::Heartbeat { from: inner.replica.clone(), clocks, delta: None })
            } else {
                self.silent += 1;
                None
            }
        };
        if let Some(h) = heartbeat {
            self.send(inner, None, &h);
        }
        if self.ticks % CLOCK_SAMPLE_PERIODS == 0 {
            self.request_transfers(inner);
        }
        self.detect_downs(inner);
    }

    /// This replica's context without the replicas it holds for down.
    fn visible_clocks(&self, state: &fawkes_tracker::State<PresencePid, Meta>) -> Pairs {
        state
            .context()
            .iter()
            .filter(|(r, _)| state.replicas().get(*r) != Some(&ReplicaStatus::Down))
            .map(|(r, c)| (r.clone(), *c))
            .collect()
    }

    /// Asks for a state transfer every replica whose clock, as its
    /// heartbeats told, covers something this one has not seen.
    fn request_transfers(&mut self, inner: &Inner) {
        let mut clocks = std::mem::take(&mut self.pending_clocks);
        // without the replicas held for down: a transfer must not bring
        // back presences this node hides
        let mine = self.visible_clocks(&inner.state.lock());
        clocks.append(inner.replica.clone(), ctx_in(mine.clone()));
        let from: Vec<ReplicaId> = clocks.replicas().filter(|r| *r != &inner.replica).cloned().collect();
        for r in from {
            let req = Msg::TransferReq { from: inner.replica.clone(), clocks: mine.clone() };
            self.send(inner, Some(&r.name), &req);
        }
    }

    fn detect_downs(&mut self, inner: &Inner) {
        let now = Instant::now();
        let permdown = self.config.permdown_period;
        self.departed.retain(|_, at| now.saturating_duration_since(*at) <= permdown);
        let mut gone = Vec::new();
        let mut state = inner.state.lock();
        for (r, seen) in &self.last_seen {
            let silent = now.saturating_duration_since(*seen);
            if silent > self.config.permdown_period {
                gone.push(r.clone());
            } else if silent > self.config.down_period && state.replicas().get(r) == Some(&ReplicaStatus::Up) {
                tracing::info!(replica = %r, "presence replica down");
                let leaves = state.replica_down(r);
                Self::emit(inner, changes(Vec::new(), leaves));
            }
        }
        for r in gone {
            tracing::info!(replica = %r, "presence replica permanently down");
            self.last_seen.remove(&r);
            Self::permdown(inner, &mut state, &r);
        }
    }

    /// Forgets a replica; its presences that were still visible leave.
    fn permdown(inner: &Inner, state: &mut fawkes_tracker::State<PresencePid, Meta>, r: &ReplicaId) {
        let was_up = state.replicas().get(r) == Some(&ReplicaStatus::Up);
        let leaves = state.replica_down(r);
        state.remove_down_replicas(r);
        if was_up {
            Self::emit(inner, changes(Vec::new(), leaves));
        }
    }

    /// Notes that `from` is alive: a new replica is added, a down one comes
    /// back (its presences join again), and an older run of the same node is
    /// forgotten.
    fn saw(&mut self, inner: &Inner, state: &mut fawkes_tracker::State<PresencePid, Meta>, from: &ReplicaId) {
        let me = inner.replica.clone();
        self.last_seen.insert(from.clone(), Instant::now());
        let older: Vec<ReplicaId> = state
            .replicas()
            .keys()
            .filter(|r| r.name == from.name && r.vsn != from.vsn && **r != me)
            .cloned()
            .collect();
        for old in older {
            if old.vsn < from.vsn {
                tracing::info!(replica = %old, "presence replica restarted");
                self.last_seen.remove(&old);
                Self::permdown(inner, state, &old);
            }
        }
        match state.replicas().get(from) {
            Some(ReplicaStatus::Up) => {}
            Some(ReplicaStatus::Down) => {
                tracing::info!(replica = %from, "presence replica up again");
                let joins = state.replica_up(from);
                Self::emit(inner, changes(joins, Vec::new()));
            }
            None => {
                state.replica_up(from);
            }
        }
    }

    fn on_message(&mut self, inner: &Inner, b: &Broadcast) {
        if b.event != EVENT {
            return;
        }
        let msg: Msg = match b.payload.decode() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a presence replication message");
                return;
            }
        };
        let from = match &msg {
            Msg::Heartbeat { from, .. }
            | Msg::TransferReq { from, .. }
            | Msg::TransferAck { from, .. }
            | Msg::GracefulPermdown { from } => from,
        };
        let me = &inner.replica;
        if from.name == me.name {
            // this replica, or another tracker of the same name on this
            // node (node names are unique): never a peer
            if from != me && !self.warned_sibling {
                self.warned_sibling = true;
                tracing::warn!(name = %self.topic, "two presence trackers share a name on this node; give each its own");
            }
            return;
        }
        if self.departed.contains_key(from) {
            return;
        }
        match msg {
            Msg::Heartbeat { from, clocks, delta } => {
                let mut transfer = false;
                {
                    let mut state = inner.state.lock();
                    self.saw(inner, &mut state, &from);
                    if let Some(delta) = delta {
                        let delta = delta.into_delta();
                        let start = delta.range.0.get(&from).copied().unwrap_or(0);
                        let have = state.context().get(&from).copied().unwrap_or(0);
                        if have >= start {
                            let (joins, leaves) = state.merge(&delta);
                            Self::emit(inner, changes(joins, leaves));
                        } else {
                            // a delta was missed: ask for the state instead
                            transfer = true;
                        }
                    }
                }
                self.pending_clocks.append(from.clone(), ctx_in(clocks));
                if transfer {
                    let mine = self.visible_clocks(&inner.state.lock());
                    self.send(inner, Some(&from.name), &Msg::TransferReq { from: inner.replica.clone(), clocks: mine });
                }
            }
            Msg::TransferReq { from, clocks } => {
                let state = {
                    let mut state = inner.state.lock();
                    self.saw(inner, &mut state, &from);
                    WireDelta::from_delta(&state.extract(&from, &ctx_in(clocks)))
                };
                self.send(inner, Some(&from.name), &Msg::TransferAck { from: inner.replica.clone(), state });
            }
            Msg::GracefulPermdown { from } => {
                tracing::info!(replica = %from, "presence replica left the cluster");
                self.last_seen.remove(&from);
                self.departed.insert(from.clone(), Instant::now());
                let mut state = inner.state.lock();
                Self::permdown(inner, &mut state, &from);
            }
            Msg::TransferAck { from, state: remote } => {
                let mut state = inner.state.lock();
                self.saw(inner, &mut state, &from);
                let (joins, leaves) = state.merge(&remote.into_delta());
                Self::emit(inner, changes(joins, leaves));
            }
        }
    }
}
