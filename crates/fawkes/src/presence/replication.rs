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
//!
//! Among Fawkes nodes the messages are JSON broadcasts (event
//! `replication`) on `phx_presence:<name>`; with Phoenix nodes they are
//! Phoenix.Tracker's own terms ([`super::phoenix`]), on each shard's topic,
//! carried by the PubSub as `TERM_EVENT` messages, as `Phoenix.PubSub`
//! carries them between Phoenix nodes. A node that leaves for good says so
//! (Phoenix's graceful permanent down) and the others forget it at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fawkes_protocol::{Broadcast, Payload};
use fawkes_pubsub::{Delivery, FrameCache, Subscriber, Subscription, TERM_EVENT};
use fawkes_tracker::{Clocks, Context, Delta, Element, Entry, ReplicaId, ReplicaStatus, Tag};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::phoenix::{self, Codec, Incoming, Msg};
use super::{triple, Change, Format, Inner, Meta, PresencePid};

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
/// The terms kept of other nodes' presences are swept of the gone ones
/// every this many periods.
const SWEEP_PERIODS: u32 = 20;
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

/// A replication message in JSON, among Fawkes nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsonMsg {
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

impl JsonMsg {
    fn of(msg: &Msg) -> JsonMsg {
        match msg {
            Msg::Heartbeat { from, clocks, delta } => JsonMsg::Heartbeat {
                from: from.clone(),
                clocks: ctx_out(clocks),
                delta: delta.as_ref().map(WireDelta::from_delta),
            },
            Msg::TransferReq { from, clocks, .. } => {
                JsonMsg::TransferReq { from: from.clone(), clocks: ctx_out(clocks) }
            }
            Msg::TransferAck { from, state, .. } => {
                JsonMsg::TransferAck { from: from.clone(), state: WireDelta::from_delta(state) }
            }
            Msg::GracefulPermdown { from } => JsonMsg::GracefulPermdown { from: from.clone() },
        }
    }

    fn into_msg(self) -> Msg {
        match self {
            JsonMsg::Heartbeat { from, clocks, delta } => {
                Msg::Heartbeat { from, clocks: ctx_in(clocks), delta: delta.map(WireDelta::into_delta) }
            }
            JsonMsg::TransferReq { from, clocks } => Msg::TransferReq { from, clocks: ctx_in(clocks), reference: None },
            JsonMsg::TransferAck { from, state } => {
                Msg::TransferAck { from, state: state.into_delta(), reference: None }
            }
            JsonMsg::GracefulPermdown { from } => Msg::GracefulPermdown { from },
        }
    }
}

/// A broadcast on a shard's topic carrying `msg`, in `format`.
fn message(
    topic: &str,
    format: Format,
    codec: Option<&mut Codec>,
    msg: &Msg,
    replicas: &Replicas,
) -> Option<Broadcast> {
    let payload = match (format, codec) {
        (Format::Phoenix, Some(codec)) => Payload::binary(fawkes_etf::encode(&codec.encode(msg, replicas))),
        // (a shard that speaks Phoenix's terms always has its codec)
        (Format::Phoenix, None) => return None,
        (Format::Json, _) => match Payload::json(&JsonMsg::of(msg)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "presence replication message not encoded");
                return None;
            }
        },
    };
    let event = if format == Format::Phoenix { TERM_EVENT } else { EVENT };
    Some(Broadcast::new(topic, event, payload))
}

type Replicas = BTreeMap<ReplicaId, ReplicaStatus>;

/// Broadcasts that this node's replicas leave the cluster for good, and
/// stops their replication: nothing more is sent or merged (anything more
/// would bring them back on the other nodes).
pub(super) fn leave(inner: &Inner) {
    if inner.left.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let Some(format) = inner.replication else { return };
    for shard in inner.shards.iter() {
        let from = shard.replica.clone();
        let b = match format {
            Format::Phoenix => {
                let term = phoenix::graceful_permdown(&from);
                Some(Broadcast::new(shard.topic.as_str(), TERM_EVENT, Payload::binary(fawkes_etf::encode(&term))))
            }
            Format::Json => message(&shard.topic, format, None, &Msg::GracefulPermdown { from }, &Replicas::new()),
        };
        let Some(b) = b else { continue };
        if let Err(e) = inner.endpoint.pubsub().broadcast(b) {
            tracing::warn!(error = %e, "presence replication: leaving message not sent");
        }
    }
}

/// Reads replication messages as they are delivered and hands them to the
/// replication task; what is not one of its messages is ignored.
struct Inbox {
    tx: mpsc::Sender<Incoming>,
    format: Format,
}

impl Inbox {
    fn read(&self, msg: &Broadcast) -> Option<Incoming> {
        match self.format {
            Format::Json if msg.event == EVENT => match msg.payload.decode::<JsonMsg>() {
                Ok(m) => Some(Incoming { msg: m.into_msg(), originals: HashMap::new(), mapset: None }),
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring a presence replication message");
                    None
                }
            },
            Format::Phoenix if msg.event == TERM_EVENT => {
                let Payload::Binary(bytes) = &msg.payload else { return None };
                let read = fawkes_etf::decode(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|t| phoenix::decode(&t).map_err(|e| e.to_string()));
                match read {
                    Ok(incoming) => Some(incoming),
                    Err(e) => {
                        tracing::debug!(topic = %msg.topic, error = %e, "ignoring a message on a presence shard's topic");
                        None
                    }
                }
            }
            _ => None,
        }
    }
}

impl Subscriber for Inbox {
    fn deliver(&self, msg: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
        let Some(incoming) = self.read(msg) else { return Delivery::Ignored };
        match self.tx.try_send(incoming) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("presence replication inbox full: a message is dropped");
                Delivery::Delivered
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

/// Starts replicating shard `shard` of `inner`.
pub(super) fn start(inner: &Arc<Inner>, shard: usize, format: Format, config: Replication) {
    let (tx, rx) = mpsc::channel(INBOX);
    let topic = inner.shards[shard].topic.clone();
    let subscription = inner.endpoint.pubsub().subscribe(&topic, Arc::new(Inbox { tx, format }));
    let codec = (format == Format::Phoenix).then(|| Codec::new(inner.pid_node.clone(), inner.creation));
    let task = Task {
        inner: Arc::downgrade(inner),
        shard,
        topic,
        format,
        codec,
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
    shard: usize,
    topic: String,
    format: Format,
    /// Phoenix's terms: what is kept to write them.
    codec: Option<Codec>,
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
    async fn run(mut self, mut rx: mpsc::Receiver<Incoming>) {
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
                    self.on_message(&inner, msg);
                }
            }
        }
    }

    fn state<'a>(&self, inner: &'a Inner) -> &'a parking_lot::Mutex<fawkes_tracker::State<PresencePid, Meta>> {
        &inner.shards[self.shard].state
    }

    fn me<'a>(&self, inner: &'a Inner) -> &'a ReplicaId {
        &inner.shards[self.shard].replica
    }

    /// Sends `msg` to node `to`, or to every other node.
    fn send(&mut self, inner: &Inner, to: Option<&str>, msg: &Msg) {
        let replicas = match msg {
            Msg::TransferAck { .. } => self.state(inner).lock().replicas().clone(),
            _ => Replicas::new(),
        };
        let Some(b) = message(&self.topic, self.format, self.codec.as_mut(), msg, &replicas) else { return };
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
        let me = self.me(inner).clone();
        let heartbeat = {
            let mut state = self.state(inner).lock();
            let clocks = self.visible_clocks(&state);
            if state.has_delta() {
                let delta = state.delta().clone();
                state.reset_delta();
                // fold this replica's dots into its clock, as Phoenix does
                // on every heartbeat: without it the clouds grow forever on a
                // node that never merges anything
                state.compact();
                self.silent = 0;
                Some(Msg::Heartbeat { from: me.clone(), clocks, delta: Some(delta) })
            } else if self.silent >= MAX_SILENT_PERIODS {
                self.silent = 0;
                Some(Msg::Heartbeat { from: me.clone(), clocks, delta: None })
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
        if self.ticks % SWEEP_PERIODS == 0 {
            if let Some(codec) = self.codec.as_mut() {
                let state = inner.shards[self.shard].state.lock();
                codec.originals.retain(|tag, _| state.has_dot(tag));
            }
        }
    }

    /// This replica's context without the replicas it holds for down.
    fn visible_clocks(&self, state: &fawkes_tracker::State<PresencePid, Meta>) -> Context {
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
        let mine = self.visible_clocks(&self.state(inner).lock());
        let me = self.me(inner).clone();
        clocks.append(me.clone(), mine.clone());
        let from: Vec<ReplicaId> = clocks.replicas().filter(|r| *r != &me).cloned().collect();
        for r in from {
            let req = Msg::TransferReq { from: me.clone(), clocks: mine.clone(), reference: None };
            self.send(inner, Some(&r.name), &req);
        }
    }

    fn detect_downs(&mut self, inner: &Inner) {
        let now = Instant::now();
        let permdown = self.config.permdown_period;
        self.departed.retain(|_, at| now.saturating_duration_since(*at) <= permdown);
        let mut gone = Vec::new();
        let mut state = inner.shards[self.shard].state.lock();
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
            self.forget(&r);
        }
    }

    /// Drops the terms kept of a replica's presences.
    fn forget(&mut self, r: &ReplicaId) {
        if let Some(codec) = self.codec.as_mut() {
            codec.originals.retain(|tag, _| tag.replica != *r);
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
        let me = state.replica().clone();
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
                self.forget(&old);
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

    /// Merges a delta or a state from another replica; keeps the terms of
    /// the presences that joined.
    fn merge(
        &mut self,
        inner: &Inner,
        state: &mut fawkes_tracker::State<PresencePid, Meta>,
        delta: &Delta<PresencePid, Meta>,
        originals: &mut HashMap<Tag, fawkes_etf::Term>,
    ) {
        let (joins, leaves) = state.merge(delta);
        if let Some(codec) = self.codec.as_mut() {
            for el in &joins {
                if let Some(t) = originals.remove(&el.tag) {
                    codec.originals.insert(el.tag.clone(), t);
                }
            }
        }
        Self::emit(inner, changes(joins, leaves));
    }

    fn on_message(&mut self, inner: &Inner, incoming: Incoming) {
        let Incoming { msg, mut originals, mapset } = incoming;
        if let Some(codec) = self.codec.as_mut() {
            codec.learn(mapset);
        }
        let from = msg.from().clone();
        let me = self.me(inner).clone();
        if from.name == me.name {
            // this replica, or another tracker of the same name on this
            // node (node names are unique): never a peer
            if from != me && !self.warned_sibling {
                self.warned_sibling = true;
                tracing::warn!(name = %self.topic, "two presence trackers share a name on this node; give each its own");
            }
            return;
        }
        if self.departed.contains_key(&from) {
            return;
        }
        match msg {
            Msg::Heartbeat { from, clocks, delta } => {
                let mut transfer = false;
                {
                    let mut state = self.state(inner).lock();
                    self.saw(inner, &mut state, &from);
                    if let Some(delta) = delta {
                        let start = delta.range.0.get(&from).copied().unwrap_or(0);
                        let have = state.context().get(&from).copied().unwrap_or(0);
                        if have >= start {
                            self.merge(inner, &mut state, &delta, &mut originals);
                        } else {
                            // a delta was missed: ask for the state instead
                            transfer = true;
                        }
                    }
                }
                self.pending_clocks.append(from.clone(), clocks);
                if transfer {
                    let mine = self.visible_clocks(&self.state(inner).lock());
                    let req = Msg::TransferReq { from: me, clocks: mine, reference: None };
                    self.send(inner, Some(&from.name), &req);
                }
            }
            Msg::TransferReq { from, clocks, reference } => {
                let extract = {
                    let mut state = self.state(inner).lock();
                    self.saw(inner, &mut state, &from);
                    state.extract(&from, &clocks)
                };
                self.send(inner, Some(&from.name), &Msg::TransferAck { from: me, state: extract, reference });
            }
            Msg::GracefulPermdown { from } => {
                tracing::info!(replica = %from, "presence replica left the cluster");
                self.last_seen.remove(&from);
                self.departed.insert(from.clone(), Instant::now());
                let mut state = inner.shards[self.shard].state.lock();
                Self::permdown(inner, &mut state, &from);
                drop(state);
                self.forget(&from);
            }
            Msg::TransferAck { from, state: remote, .. } => {
                let mut state = inner.shards[self.shard].state.lock();
                self.saw(inner, &mut state, &from);
                self.merge(inner, &mut state, &remote, &mut originals);
            }
        }
    }
}
