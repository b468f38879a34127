//! Presence: who is on a topic, as the official client's `Presence` expects
//! it (`presence_state` and `presence_diff`), on Phoenix.Tracker's CRDT.
//!
//! Each tracked presence belongs to a channel; when the channel ends (leave,
//! stop, crash, or its connection closing) its presences are removed and a
//! leave is broadcast. Several channels may track the same key (one user in
//! two tabs): the key then has several metas, each with its own `phx_ref`.
//!
//! Diffs are broadcast on the topic as `presence_diff`. With a diff window
//! of zero (the default, as Phoenix) every change is one diff; with a window,
//! the changes of one topic are coalesced into one net diff per window, so a
//! large topic costs far fewer frames while every client ends in the same
//! state.
//!
//! On several nodes the trackers replicate over the endpoint's PubSub with
//! Phoenix.Tracker's protocol ([`replication`]'s documentation): in JSON
//! among Fawkes nodes, or, with [`PresenceBuilder::phoenix`], in Phoenix's
//! own terms as one of a Phoenix application's `Phoenix.Presence` shards,
//! so that Phoenix and Fawkes nodes list each other's presences.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fawkes_protocol::event;
use fawkes_tracker::{Element, ReplicaId, State};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::{ChannelContext, Endpoint, Socket};

mod phoenix;
mod replication;

pub use replication::Replication;

/// Who holds a presence: a channel of some node.
///
/// Among Fawkes nodes a pid is the node's name and the channel's id. With
/// Phoenix nodes ([`PresenceBuilder::phoenix`]) pids are Erlang pids, which
/// Phoenix holds as they are and never sends to: a Fawkes node's are
/// `<node name>@fawkes` (or the node name itself when it has an `@`), its
/// channel's id as the pid's number and serial (`id`: the serial in the
/// high 32 bits), and the node's creation, which changes with every start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PresencePid {
    /// The node.
    pub node: String,
    /// The owner's id on that node (for an Erlang pid, its serial in the
    /// high 32 bits and its number in the low ones).
    pub id: u64,
    /// For an Erlang pid, its node's creation (0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creation: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

type Meta = Map<String, Value>;
type Entries = Map<String, Value>;
type FetchFn = dyn Fn(String, Entries) -> Pin<Box<dyn Future<Output = Entries> + Send>> + Send + Sync;

/// Errors of presence operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// This channel already tracks this key on this topic.
    #[error("already tracked")]
    AlreadyTracked,
    /// This channel does not track this key on this topic.
    #[error("no presence")]
    NoPresence,
    /// Metas must be JSON objects.
    #[error("presence metas must be JSON objects")]
    MetaNotAnObject,
    /// A presence's owner must belong to this node (presences of other
    /// nodes are theirs to track).
    #[error("the pid belongs to another node")]
    ForeignPid,
    /// Tracking or updating from `handle_in` fans out to every subscriber
    /// of the topic, and the socket id's `fanout_rate` is spent.
    #[error(transparent)]
    RateLimited(#[from] crate::RateLimited),
}

/// A presence tracker for an endpoint. Cheap to clone.
///
/// # Example
///
/// ```
/// use fawkes::{Endpoint, Presence};
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let endpoint = Endpoint::local();
/// let presence = Presence::builder(&endpoint)
///     // enrich every list and diff in one call, e.g. names from a database
///     .fetch(|_topic, mut entries| async move {
///         for (key, entry) in entries.iter_mut() {
///             entry["name"] = format!("user {key}").into();
///         }
///         entries
///     })
///     .diff_window(Duration::from_millis(20))
///     .build();
/// assert!(presence.list("room:lobby").await.is_empty());
/// # });
/// ```
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replicas: Vec<&ReplicaId> = self.inner.shards.iter().map(|s| &s.replica).collect();
        f.debug_struct("Presence").field("replicas", &replicas).finish()
    }
}

struct Inner {
    id: u64,
    endpoint: Endpoint,
    /// One replica per shard; a topic's presences live in one shard.
    shards: Box<[Shard]>,
    fetch: Option<Arc<FetchFn>>,
    diffs: mpsc::UnboundedSender<Change>,
    refs: AtomicU64,
    node_hash: u16,
    /// The node of this tracker's pids, and its creation.
    pid_node: String,
    creation: u32,
    /// How the shards replicate, when the endpoint's PubSub spans nodes.
    replication: Option<Format>,
    /// Set once this tracker left the cluster.
    left: std::sync::atomic::AtomicBool,
}

/// One tracker of a pool: its replica and state, and its replication topic.
struct Shard {
    replica: ReplicaId,
    state: Mutex<State<PresencePid, Meta>>,
    topic: String,
}

/// What a tracker's replication speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// JSON, among Fawkes nodes.
    Json,
    /// Phoenix.Tracker's terms.
    Phoenix,
}

impl Inner {
    /// The shard of a topic, as Phoenix.Tracker picks it
    /// (`:erlang.phash2(topic, pool_size)`).
    fn shard(&self, topic: &str) -> &Shard {
        let n = self.shards.len();
        let i = if n <= 1 { 0 } else { fawkes_etf::phash2_binary(topic.as_bytes(), n as u32) as usize };
        &self.shards[i.min(n - 1)]
    }
}

/// One change, queued for the diff task.
struct Change {
    topic: String,
    joins: Vec<(String, PresencePid, Meta)>,
    leaves: Vec<(String, PresencePid, Meta)>,
}

/// Builds a [`Presence`].
pub struct PresenceBuilder {
    endpoint: Endpoint,
    fetch: Option<Arc<FetchFn>>,
    window: Duration,
    name: String,
    phoenix: Option<String>,
    pool_size: usize,
    replication: Replication,
}

impl std::fmt::Debug for PresenceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceBuilder").field("window", &self.window).finish()
    }
}

static PRESENCE_IDS: AtomicU64 = AtomicU64::new(1);

impl PresenceBuilder {
    /// Enriches the presences of every list and diff in one call: `fetch`
    /// receives the topic and `{key: {"metas": [...]}}` and returns it with
    /// extra fields (it must keep `metas`).
    pub fn fetch<F, Fut>(mut self, fetch: F) -> Self
    where
        F: Fn(String, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Map<String, Value>> + Send + 'static,
    {
        self.fetch = Some(Arc::new(move |topic, entries| Box::pin(fetch(topic, entries))));
        self
    }

    /// Coalesces each topic's changes over `window` (zero: one diff per
    /// change, as Phoenix).
    pub fn diff_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Names this tracker in the cluster: trackers of the same name on
    /// different nodes replicate each other (default `Fawkes.Presence`; give
    /// each tracker of an application its own).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replicates as the Phoenix.Presence module `module` of a Phoenix
    /// application (`MyAppWeb.Presence`, without `Elixir.`) does, in
    /// Phoenix.Tracker's own terms, so that Phoenix nodes and Fawkes nodes
    /// on one cluster (a `fawkes_redis` PubSub on the application's Redis
    /// channel) list each other's presences. Its shards are
    /// `Elixir.<module>_shard<n>`, on the topics `phx_presence:Elixir.<module>_shard<n>`;
    /// set [`PresenceBuilder::pool_size`] to the module's `:pool_size`.
    /// Replica names are the PubSub's node name, as Phoenix's are its
    /// `node_name`.
    pub fn phoenix(mut self, module: impl Into<String>) -> Self {
        self.phoenix = Some(module.into());
        self
    }

    /// The number of shards (Phoenix.Tracker's `:pool_size`, 1 by default),
    /// for [`PresenceBuilder::phoenix`]: each topic's presences live in the
    /// shard `:erlang.phash2(topic, pool_size)`, as on the Phoenix nodes.
    pub fn pool_size(mut self, shards: usize) -> Self {
        self.pool_size = shards.max(1);
        self
    }

    /// Sets the replication periods (Phoenix's by default). Used only when
    /// the endpoint's PubSub spans several nodes. The down period is raised
    /// to twice the broadcast period and the permanent-down period above the
    /// down period if they are shorter, as Phoenix requires.
    pub fn replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self
    }

    /// Starts the tracker (and, when the endpoint's PubSub spans several
    /// nodes, its replication).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the tracker runs tasks on it): call it from
    /// async code, or after `Runtime::enter`. The panic points at the caller.
    #[track_caller]
    pub fn build(self) -> Presence {
        if tokio::runtime::Handle::try_current().is_err() {
            panic!(
                "Presence::new / PresenceBuilder::build called outside a tokio runtime: \
                 call it from async code (e.g. in #[tokio::main]) or after Runtime::enter"
            );
        }
        let node = self.endpoint.pubsub().node_name().to_owned();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let vsn = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        let node_hash = node.bytes().fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
        let (tx, rx) = mpsc::unbounded_channel();
        let distributed = self.endpoint.pubsub().is_distributed();
        let (shards, pid_node, creation): (Vec<Shard>, String, u32) = match &self.phoenix {
            Some(module) => {
                // each shard is a replica of its own, as in Phoenix
                let shards = (0..self.pool_size)
                    .map(|n| Shard {
                        replica: ReplicaId::new(node.clone(), vsn + n as u64),
                        state: Mutex::new(State::new(ReplicaId::new(node.clone(), vsn + n as u64))),
                        topic: format!("phx_presence:Elixir.{module}_shard{n}"),
                    })
                    .collect();
                let pid_node = if node.contains('@') { node.clone() } else { format!("{node}@fawkes") };
                // a creation per start, as an Erlang node's (never 0)
                (shards, pid_node, (now.as_secs() as u32).max(1))
            }
            None => {
                let replica = ReplicaId::new(node.clone(), vsn);
                let topic = format!("phx_presence:{}", self.name);
                (vec![Shard { state: Mutex::new(State::new(replica.clone())), replica, topic }], node.clone(), 0)
            }
        };
        let format = if self.phoenix.is_some() { Format::Phoenix } else { Format::Json };
        let inner = Arc::new(Inner {
            id: PRESENCE_IDS.fetch_add(1, Ordering::Relaxed),
            endpoint: self.endpoint,
            shards: shards.into_boxed_slice(),
            fetch: self.fetch,
            diffs: tx,
            refs: AtomicU64::new(0),
            node_hash,
            pid_node,
            creation,
            replication: distributed.then_some(format),
            left: std::sync::atomic::AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        inner.endpoint.metrics().add_source(Box::new(move || {
            let inner = weak.upgrade()?;
            let (mut topics, mut presences) = (0, 0);
            for shard in inner.shards.iter() {
                let (t, p) = shard.state.lock().counts();
                topics += t as u64;
                presences += p as u64;
            }
            Some(vec![
                ("fawkes_presence_topics", "Topics with presences.", topics),
                ("fawkes_presences", "Presences (metas) on those topics.", presences),
            ])
        }));
        tokio::spawn(diff_task(Arc::downgrade(&inner), rx, self.window));
        if let Some(format) = inner.replication {
            let mut r = self.replication;
            r.broadcast_period = r.broadcast_period.max(Duration::from_millis(1));
            r.down_period = r.down_period.max(r.broadcast_period * 2);
            r.permdown_period = r.permdown_period.max(r.down_period + Duration::from_millis(1));
            for shard in 0..inner.shards.len() {
                replication::start(&inner, shard, format, r);
            }
        }
        Presence { inner }
    }
}

fn grouped(items: &[(String, PresencePid, Meta)]) -> Entries {
    let mut out = Entries::new();
    for (key, _, meta) in items {
        let entry = out.entry(key.clone()).or_insert_with(|| serde_json::json!({"metas": []}));
        if let Some(Value::Array(metas)) = entry.get_mut("metas") {
            metas.push(Value::Object(meta.clone()));
        }
    }
    out
}

fn as_meta(v: Value) -> Result<Meta, PresenceError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(PresenceError::MetaNotAnObject),
    }
}

fn triple(e: Element<PresencePid, Meta>) -> (String, PresencePid, Meta) {
    (e.key, e.pid, e.meta)
}

impl Presence {
    /// A tracker with Phoenix's defaults; see [`Presence::builder`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`PresenceBuilder::build`]; the panic
    /// points at the caller.
    #[track_caller]
    pub fn new(endpoint: &Endpoint) -> Presence {
        Presence::builder(endpoint).build()
    }

    /// A builder, to set a fetch hook or a diff window.
    pub fn builder(endpoint: &Endpoint) -> PresenceBuilder {
        PresenceBuilder {
            endpoint: endpoint.clone(),
            fetch: None,
            window: Duration::ZERO,
            name: "Fawkes.Presence".into(),
            phoenix: None,
            pool_size: 1,
            replication: Replication::default(),
        }
    }

    fn next_ref(&self) -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = self.inner.refs.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..10].copy_from_slice(&self.inner.node_hash.to_be_bytes());
        bytes[10..].copy_from_slice(&(n as u16).to_be_bytes());
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    }

    fn pid_of<S: Socket, I: Send + 'static>(&self, ctx: &ChannelContext<S, I>) -> PresencePid {
        self.pid(ctx.pid())
    }

    /// This node's pid for the owner `id` (a channel's id, or any number
    /// for [`Presence::track_pid`]). For Phoenix nodes it is an Erlang pid
    /// whose number and serial are the id's low 15 and next 13 bits (the
    /// widest pid Erlang reads), so ids 2^28 apart share a pid.
    pub fn pid(&self, id: u64) -> PresencePid {
        let inner = &self.inner;
        if inner.creation == 0 {
            return PresencePid { node: inner.pid_node.clone(), id, creation: 0 };
        }
        let (number, serial) = (id & 0x7fff, (id >> 15) & 0x1fff);
        PresencePid { node: inner.pid_node.clone(), id: (serial << 32) | number, creation: inner.creation }
    }

    /// Tracks the channel's socket under `key` on the channel's topic, with
    /// `meta` (a JSON object; `phx_ref` is added). Returns the `phx_ref`.
    /// The presence is removed when the channel ends.
    ///
    /// # Errors
    ///
    /// [`PresenceError::AlreadyTracked`] when this channel already tracks
    /// `key`; [`PresenceError::MetaNotAnObject`].
    pub fn track<S: Socket, I: Send + 'static>(
        &self,
        ctx: &ChannelContext<S, I>,
        key: &str,
        meta: impl Into<Value>,
    ) -> Result<String, PresenceError> {
        ctx.fan_out()?;
        let pid = self.pid_of(ctx);
        let this = self.clone();
        let exit_pid = pid.clone();
        ctx.exit_hooks.lock().add_once(self.inner.id, move || this.untrack_pid(&exit_pid));
        self.track_pid(pid, ctx.topic(), key, meta)
    }

    /// Tracks any owner (for presences not tied to a channel); untrack it
    /// with [`Presence::untrack_pid`].
    ///
    /// # Errors
    ///
    /// As [`Presence::track`].
    pub fn track_pid(
        &self,
        pid: PresencePid,
        topic: &str,
        key: &str,
        meta: impl Into<Value>,
    ) -> Result<String, PresenceError> {
        if pid.node != self.inner.pid_node || pid.creation != self.inner.creation {
            return Err(PresenceError::ForeignPid);
        }
        let mut meta = as_meta(meta.into())?;
        let phx_ref = self.next_ref();
        meta.insert("phx_ref".into(), Value::String(phx_ref.clone()));
        let mut state = self.inner.shard(topic).state.lock();
        state.join(pid.clone(), topic, key, meta.clone()).ok_or(PresenceError::AlreadyTracked)?;
        self.settle(&mut state);
        let change = Change { topic: topic.to_owned(), joins: vec![(key.to_owned(), pid, meta)], leaves: Vec::new() };
        // queued under the lock, so diffs keep the order of the changes
        let _ = self.inner.diffs.send(change);
        Ok(phx_ref)
    }

    /// Stops tracking `key` for this channel (`Ok` also when not tracked).
    pub fn untrack<S: Socket, I: Send + 'static>(&self, ctx: &ChannelContext<S, I>, key: &str) {
        let pid = self.pid_of(ctx);
        let mut state = self.inner.shard(ctx.topic()).state.lock();
        if let Some(el) = state.leave(&pid, ctx.topic(), key) {
            let _ =
                self.inner.diffs.send(Change { topic: el.topic.clone(), joins: Vec::new(), leaves: vec![triple(el)] });
        }
        self.settle(&mut state);
    }

    /// Removes every presence of `pid`.
    pub fn untrack_pid(&self, pid: &PresencePid) {
        for shard in self.inner.shards.iter() {
            let mut state = shard.state.lock();
            for el in state.leave_pid(pid) {
                let _ = self.inner.diffs.send(Change {
                    topic: el.topic.clone(),
                    joins: Vec::new(),
                    leaves: vec![triple(el)],
                });
            }
            self.settle(&mut state);
        }
    }

    /// On a single node nothing is replicated: the delta is dropped and the
    /// clock compacted after every change, so neither grows.
    fn settle(&self, state: &mut State<PresencePid, Meta>) {
        if self.inner.replication.is_none() {
            state.reset_delta();
            state.compact();
        }
    }

    /// Replaces this channel's meta under `key`; the new meta gets a new
    /// `phx_ref` and `phx_ref_prev`. `update` receives the current meta.
    ///
    /// # Errors
    ///
    /// [`PresenceError::NoPresence`] when not tracked;
    /// [`PresenceError::MetaNotAnObject`].
    pub fn update<S: Socket, I: Send + 'static>(
        &self,
        ctx: &ChannelContext<S, I>,
        key: &str,
        update: impl FnOnce(&Map<String, Value>) -> Value,
    ) -> Result<String, PresenceError> {
        ctx.fan_out()?;
        let pid = self.pid_of(ctx);
        let mut state = self.inner.shard(ctx.topic()).state.lock();
        let current = state.get_by_pid(&pid, ctx.topic(), key).ok_or(PresenceError::NoPresence)?;
        let mut meta = as_meta(update(&current.meta))?;
        let phx_ref = self.next_ref();
        meta.insert("phx_ref".into(), Value::String(phx_ref.clone()));
        if let Some(prev) = current.meta.get("phx_ref") {
            meta.insert("phx_ref_prev".into(), prev.clone());
        }
        let (old, _) = state.leave_join(&pid, ctx.topic(), key, meta.clone()).ok_or(PresenceError::NoPresence)?;
        self.settle(&mut state);
        let _ = self.inner.diffs.send(Change {
            topic: ctx.topic().to_owned(),
            joins: vec![(key.to_owned(), pid, meta)],
            leaves: vec![triple(old)],
        });
        Ok(phx_ref)
    }

    /// Tells the other nodes that this one is leaving for good, so that
    /// they drop its presences at once instead of after the down period
    /// (Phoenix's `graceful_permdown`). For a node about to stop: call it,
    /// then `endpoint.pubsub().flush().await`, then exit. Does nothing on a
    /// single node.
    pub fn leave_cluster(&self) {
        if self.inner.replication.is_some() {
            replication::leave(&self.inner);
        }
    }

    /// The topic's presences, `{key: {"metas": [...]}}`, through the fetch
    /// hook: the payload of `presence_state`.
    pub async fn list(&self, topic: &str) -> Map<String, Value> {
        // grouped by key into an ordered map; within a key, by pid as listed
        let items: Vec<_> = self.inner.shard(topic).state.lock().get_by_topic(topic).into_iter().map(triple).collect();
        self.fetched(topic, grouped(&items)).await
    }

    /// One key's presence, `{"metas": [...]}` plus fetched fields, if any.
    pub async fn get_by_key(&self, topic: &str, key: &str) -> Option<Value> {
        let metas: Vec<(String, PresencePid, Meta)> = self
            .inner
            .shard(topic)
            .state
            .lock()
            .get_by_key(topic, key)
            .into_iter()
            .map(|(pid, meta)| (key.to_owned(), pid, meta))
            .collect();
        if metas.is_empty() {
            return None;
        }
        self.fetched(topic, grouped(&metas)).await.remove(key)
    }

    async fn fetched(&self, topic: &str, entries: Entries) -> Entries {
        fetch_with(&self.inner.fetch, topic, entries).await
    }
}

async fn fetch_with(fetch: &Option<Arc<FetchFn>>, topic: &str, entries: Entries) -> Entries {
    match fetch {
        Some(f) if !entries.is_empty() => f(topic.to_owned(), entries).await,
        _ => entries,
    }
}

/// The changes of one topic within a window, folded so that applying them
/// (joins first, then leaves, as the client does) gives the same end state
/// as applying every change one by one, for a client that saw none, some or
/// all of them in a `presence_state`: a join drops a pending leave of the
/// same `phx_ref` (it is back), a leave is always kept.
#[derive(Default)]
struct Pending {
    joins: Vec<(String, PresencePid, Meta)>,
    leaves: Vec<(String, PresencePid, Meta)>,
}

fn ref_of(m: &Meta) -> Option<&Value> {
    m.get("phx_ref")
}

impl Pending {
    fn add(&mut self, change: Change) {
        self.leaves.extend(change.leaves);
        for join in change.joins {
            self.leaves.retain(|l| ref_of(&l.2) != ref_of(&join.2));
            if !self.joins.iter().any(|j| ref_of(&j.2) == ref_of(&join.2)) {
                self.joins.push(join);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

async fn broadcast_diff(inner: &Inner, topic: &str, mut p: Pending) {
    p.joins.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    p.leaves.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let joins = fetch_with(&inner.fetch, topic, grouped(&p.joins)).await;
    let leaves = fetch_with(&inner.fetch, topic, grouped(&p.leaves)).await;
    let payload = serde_json::json!({"joins": joins, "leaves": leaves});
    if let Err(e) = inner.endpoint.local_broadcast(topic, event::PRESENCE_DIFF, payload) {
        tracing::error!(topic, error = %e, "presence diff not broadcast");
    }
}

/// Broadcasts diffs in the order of the changes, one topic window at a time.
async fn diff_task(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Change>, window: Duration) {
    let mut pending: HashMap<String, (tokio::time::Instant, Pending)> = HashMap::new();
    loop {
        let next_deadline = pending.values().map(|(d, _)| *d).min();
        let change = match next_deadline {
            None => rx.recv().await,
            Some(deadline) => tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(deadline) => {
                    let Some(inner) = inner.upgrade() else { return };
                    let now = tokio::time::Instant::now();
                    let due: Vec<String> = pending.iter().filter(|(_, (d, _))| *d <= now).map(|(t, _)| t.clone()).collect();
                    for topic in due {
                        if let Some((_, p)) = pending.remove(&topic) {
                            if !p.is_empty() {
                                broadcast_diff(&inner, &topic, p).await;
                            }
                        }
                    }
                    continue;
                }
            },
        };
        let Some(change) = change else { return };
        let Some(inner) = inner.upgrade() else { return };
        if window.is_zero() {
            let topic = change.topic.clone();
            let p = Pending { joins: change.joins, leaves: change.leaves };
            broadcast_diff(&inner, &topic, p).await;
        } else {
            let entry = pending
                .entry(change.topic.clone())
                .or_insert_with(|| (tokio::time::Instant::now() + window, Pending::default()));
            entry.1.add(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a single node, tracking and untracking for ever keeps the state's
    /// bookkeeping (clouds, delta) from growing.
    #[tokio::test]
    async fn a_single_node_state_does_not_grow_with_churn() {
        let endpoint = Endpoint::local();
        let presence = Presence::new(&endpoint);
        for i in 0..2000 {
            let pid = presence.pid(i);
            presence.track_pid(pid.clone(), "t", "k", serde_json::json!({})).unwrap();
            presence.untrack_pid(&pid);
        }
        let state = presence.inner.shards[0].state.lock();
        let dots: usize = state.clouds().values().map(|c| c.len()).sum();
        assert_eq!((dots, state.delta().size()), (0, 0));
        assert!(state.get_by_topic("t").is_empty());
    }
}
