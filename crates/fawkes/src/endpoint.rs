//! The endpoint: the process-wide handle to PubSub, metrics and shutdown, and
//! the place sockets are mounted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use fawkes_protocol::{Broadcast, IntoPayload, Payload};
use fawkes_pubsub::{PubSub, SubscriberId, Subscription};
use parking_lot::Mutex;

use crate::channel::BroadcastError;
use crate::queue::{Out, OutboundBudget, Outbox};
use crate::telemetry::Metrics;
use crate::{Socket, SocketHandler};

/// The endpoint: broadcast from anywhere (HTTP handlers, background tasks),
/// mount sockets, shut down gracefully. Cheap to clone.
///
/// # Example
///
/// ```
/// use fawkes::Endpoint;
/// use serde_json::json;
///
/// let endpoint = Endpoint::local();
/// // from an HTTP handler, a background job, anywhere:
/// endpoint.broadcast("room:lobby", "new_msg", json!({"body": "hello"})).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pubsub: PubSub,
    metrics: Metrics,
    shutdown: ShutdownList,
    budget: Arc<OutboundBudget>,
    /// Whether the task that enforces the budget runs.
    enforcing: AtomicBool,
    history: crate::history::Histories,
    /// The secret key base of [`Endpoint::sign`] and [`Endpoint::verify`].
    secret_key_base: parking_lot::RwLock<Option<Arc<str>>>,
}

/// How [`Endpoint::drain`] closes connections: Phoenix's drainer options
/// (`batch_size`, `batch_interval`, `shutdown`), with Phoenix's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drain {
    /// Connections closed per batch (default 10 000).
    pub batch_size: usize,
    /// Time between batches (default 2 s).
    pub interval: std::time::Duration,
    /// Time by which the last batch is closed (default 30 s): batches grow
    /// beyond `batch_size` when there are too many connections for it.
    pub max: std::time::Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            batch_size: 10_000,
            interval: std::time::Duration::from_secs(2),
            max: std::time::Duration::from_secs(30),
        }
    }
}

impl Drain {
    /// `batch_size` connections every `interval`, all within `max`.
    pub fn new(batch_size: usize, interval: std::time::Duration, max: std::time::Duration) -> Drain {
        Drain { batch_size, interval, max }
    }
}

/// The default of [`Endpoint::set_outbound_budget`]: 1 GiB.
pub const DEFAULT_OUTBOUND_BUDGET: usize = 1 << 30;

/// How often the budget is checked when nothing signals it.
const BUDGET_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Closes the connections with the largest queues while the endpoint's
/// queued bytes are over its budget. Ends with the endpoint.
async fn enforce_budget(inner: Weak<Inner>, budget: Arc<OutboundBudget>) {
    loop {
        let _ = tokio::time::timeout(BUDGET_CHECK, budget.over.notified()).await;
        let Some(inner) = inner.upgrade() else { return };
        let limit = budget.limit();
        if budget.total() <= limit {
            continue;
        }
        let mut queues: Vec<(usize, Arc<Outbox>)> =
            inner.shutdown.live().into_iter().filter(|o| !o.is_overflowed()).map(|o| (o.queued_bytes(), o)).collect();
        let mut total: usize = queues.iter().map(|(n, _)| n).sum();
        queues.sort_unstable_by_key(|q| std::cmp::Reverse(q.0));
        // down to 90 % of the budget, so that one more broadcast does not
        // start it over at once
        let target = limit - limit / 10;
        let mut closed = 0usize;
        for (bytes, outbox) in queues {
            if total <= target || bytes == 0 {
                break;
            }
            outbox.mark_overflow();
            total -= bytes;
            closed += 1;
        }
        if closed > 0 {
            tracing::warn!(
                closed,
                budget = limit,
                "outbound queues over the endpoint's budget: closing the largest as slow consumers"
            );
        }
    }
}

/// The endpoint's live connections, each told through its outbox when the
/// endpoint shuts down: one weak pointer per connection, and no future or
/// receiver per connection to wait on.
#[derive(Debug, Default)]
pub(crate) struct ShutdownList {
    done: AtomicBool,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    outboxes: Vec<Option<Weak<Outbox>>>,
    free: Vec<usize>,
}

impl ShutdownList {
    /// Adds a connection; returns its key. A connection that arrives after
    /// the shutdown is told at once.
    pub(crate) fn register(&self, outbox: &Arc<Outbox>) -> usize {
        let weak = Some(Arc::downgrade(outbox));
        let key = {
            let mut s = self.slots.lock();
            match s.free.pop() {
                Some(key) => {
                    s.outboxes[key] = weak;
                    key
                }
                None => {
                    s.outboxes.push(weak);
                    s.outboxes.len() - 1
                }
            }
        };
        if self.done.load(Ordering::Acquire) {
            outbox.push_control(Out::Shutdown);
        }
        key
    }

    /// Every live connection's outbox.
    fn live(&self) -> Vec<Arc<Outbox>> {
        self.slots.lock().outboxes.iter().flatten().filter_map(Weak::upgrade).collect()
    }

    /// Removes a connection.
    pub(crate) fn deregister(&self, key: usize) {
        let mut s = self.slots.lock();
        if s.outboxes.get_mut(key).and_then(Option::take).is_some() {
            s.free.push(key);
        }
    }

    fn trigger(&self) {
        self.done.store(true, Ordering::Release);
        let live: Vec<Arc<Outbox>> = self.slots.lock().outboxes.iter().flatten().filter_map(Weak::upgrade).collect();
        for outbox in live {
            outbox.push_control(Out::Shutdown);
        }
    }
}

/// Checks a broadcast's payload as Phoenix does: a JSON object or binary;
/// and that its event is not the one that carries Erlang terms.
pub(crate) fn checked(topic: &str, event: &str, payload: Payload) -> Result<Broadcast, BroadcastError> {
    if !(payload.is_object() || payload.is_binary()) {
        return Err(BroadcastError::PayloadNotAnObject);
    }
    if event == fawkes_pubsub::TERM_EVENT {
        return Err(BroadcastError::ReservedEvent(event.to_owned()));
    }
    Ok(Broadcast::new(topic, event, payload))
}

impl Endpoint {
    /// An endpoint over `pubsub`.
    pub fn new(pubsub: PubSub) -> Endpoint {
        let mut metrics = Metrics::default();
        pubsub.register_metrics(metrics.registry_mut());
        Endpoint {
            inner: Arc::new(Inner {
                pubsub,
                metrics,
                shutdown: ShutdownList::default(),
                budget: Arc::new(OutboundBudget::new(DEFAULT_OUTBOUND_BUDGET)),
                enforcing: AtomicBool::new(false),
                history: crate::history::Histories::new(),
                secret_key_base: parking_lot::RwLock::new(None),
            }),
        }
    }

    /// Sets the budget of bytes queued for clients across every connection
    /// of this endpoint (default [`DEFAULT_OUTBOUND_BUDGET`], 1 GiB). Each
    /// connection's queue has its own limit (`SocketConfig::outbox_bytes`);
    /// this one bounds the node when many clients are slow at once: when
    /// the total is over the budget, the connections with the largest
    /// queues are closed first (1013, counted as slow consumers), within a
    /// quarter of a second.
    pub fn set_outbound_budget(&self, bytes: usize) {
        self.inner.budget.set_limit(bytes);
    }

    /// Bytes queued for clients now, across every connection.
    pub fn outbound_bytes(&self) -> usize {
        self.inner.budget.total()
    }

    /// The budget shared by every connection's outbox; starts the task that
    /// enforces it on first use (connections only exist inside a runtime).
    pub(crate) fn outbound_budget(&self) -> Arc<OutboundBudget> {
        if !self.inner.enforcing.swap(true, Ordering::AcqRel) {
            tokio::spawn(enforce_budget(Arc::downgrade(&self.inner), self.inner.budget.clone()));
        }
        self.inner.budget.clone()
    }

    /// Sets the secret key base that [`Endpoint::sign`] and
    /// [`Endpoint::verify`] use (Phoenix's endpoint `secret_key_base`):
    /// the same on every node, and the same as a Phoenix application's for
    /// its tokens to verify here and the other way round.
    ///
    /// # Errors
    ///
    /// [`SignError::SecretTooShort`](fawkes_token::SignError::SecretTooShort)
    /// when it is shorter than [`MIN_SECRET_LEN`](fawkes_token::MIN_SECRET_LEN)
    /// bytes (the endpoint keeps the one it had).
    pub fn set_secret_key_base(&self, secret_key_base: &str) -> Result<(), fawkes_token::SignError> {
        if secret_key_base.len() < fawkes_token::MIN_SECRET_LEN {
            return Err(fawkes_token::SignError::SecretTooShort);
        }
        *self.inner.secret_key_base.write() = Some(Arc::from(secret_key_base));
        Ok(())
    }

    /// Signs `data` with the endpoint's secret key base and `salt`, valid for
    /// a day (Phoenix's `Phoenix.Token.sign(MyEndpoint, salt, data)`): the
    /// token is for a client to send back, for example as a connect
    /// parameter, and [`Endpoint::verify`] gives `data` back.
    ///
    /// ```
    /// use fawkes::{token::{MaxAge, VerifyError}, Endpoint};
    ///
    /// let endpoint = Endpoint::local();
    /// endpoint.set_secret_key_base("a secret key base of at least twenty bytes").unwrap();
    /// let token = endpoint.sign("user socket", &42u64).unwrap();
    /// assert_eq!(endpoint.verify::<u64>("user socket", Some(&token), MaxAge::Seconds(60.0)), Ok(42));
    /// assert_eq!(endpoint.verify::<u64>("user socket", None, MaxAge::Seconds(60.0)), Err(VerifyError::Missing));
    /// ```
    ///
    /// # Errors
    ///
    /// [`SignError::NoSecretKeyBase`](fawkes_token::SignError::NoSecretKeyBase)
    /// before [`Endpoint::set_secret_key_base`];
    /// [`SignError::Data`](fawkes_token::SignError::Data) when `data` does
    /// not serialize.
    pub fn sign<T: serde::Serialize + ?Sized>(&self, salt: &str, data: &T) -> Result<String, fawkes_token::SignError> {
        let secret = self.inner.secret_key_base.read().clone().ok_or(fawkes_token::SignError::NoSecretKeyBase)?;
        fawkes_token::sign(&secret, salt, data, &fawkes_token::SignOptions::default())
    }

    /// Verifies a token made by [`Endpoint::sign`] (or by a Phoenix
    /// application with the same secret key base) with `salt`, no older
    /// than `max_age`, and gives its data back as a `T` (Phoenix's
    /// `Phoenix.Token.verify(MyEndpoint, salt, token, max_age: ...)`).
    /// `token` is `None` when the client sent none.
    ///
    /// # Errors
    ///
    /// [`VerifyError`](fawkes_token::VerifyError): `Missing`, `Invalid`
    /// (also before [`Endpoint::set_secret_key_base`], logged), `Expired`,
    /// or `Data` when the token's data is not a `T`.
    pub fn verify<T: serde::de::DeserializeOwned>(
        &self,
        salt: &str,
        token: Option<&str>,
        max_age: fawkes_token::MaxAge,
    ) -> Result<T, fawkes_token::VerifyError> {
        let Some(secret) = self.inner.secret_key_base.read().clone() else {
            if token.is_none() {
                return Err(fawkes_token::VerifyError::Missing);
            }
            tracing::error!("Endpoint::verify without a secret key base: call Endpoint::set_secret_key_base first");
            return Err(fawkes_token::VerifyError::Invalid);
        };
        let opts = fawkes_token::VerifyOptions { max_age: Some(max_age), now_ms: None };
        fawkes_token::verify(&secret, salt, token, &opts)
    }

    /// An endpoint with a local PubSub (a single node).
    pub fn local() -> Endpoint {
        Endpoint::new(PubSub::local("fawkes@localhost"))
    }

    /// The PubSub.
    pub fn pubsub(&self) -> &PubSub {
        &self.inner.pubsub
    }

    /// The endpoint's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Every metric of this endpoint and of its PubSub's adapter (e.g.
    /// Redis's `fawkes_redis_*`), in the OpenMetrics text format that
    /// Prometheus scrapes (content type [`telemetry::CONTENT_TYPE`](crate::telemetry::CONTENT_TYPE));
    /// the metrics are listed in [`telemetry`](crate::telemetry).
    pub fn prometheus(&self) -> String {
        self.inner.metrics.encode(crate::telemetry::Gathered {
            outbound_bytes: self.outbound_bytes(),
            history_bytes: self.history_bytes(),
            adapter: self.inner.pubsub.adapter_metrics(),
            gauges: self.inner.metrics.source_gauges(),
        })
    }

    /// Broadcasts `event` to every subscriber of `topic` on every node.
    ///
    /// # Errors
    ///
    /// When the payload is neither a JSON object nor binary, or the remote
    /// adapter fails.
    pub fn broadcast(&self, topic: &str, event: &str, payload: impl IntoPayload) -> Result<(), BroadcastError> {
        self.publish(checked(topic, event, payload.into_payload())?, None)
    }

    /// Broadcasts `b` (to all but `from`): through the topic's history when
    /// it has one that keeps the event, else straight to the PubSub.
    fn publish(&self, b: Broadcast, from: Option<SubscriberId>) -> Result<(), BroadcastError> {
        let pubsub = &self.inner.pubsub;
        let dispatch = |b| match from {
            Some(id) => pubsub.broadcast_from(id, b),
            None => pubsub.broadcast(b),
        };
        match self.inner.history.keeping(&b.topic, &b.event) {
            Some(h) => match self.inner.history.shared() {
                Some(shared) => {
                    shared.append(b, from, h.config()).map_err(BroadcastError::History)?;
                    // delivered by the shared store's dispatch, counted there
                    self.inner.metrics.broadcast(0);
                }
                None => {
                    let sent = h.append(b, &self.inner.history, dispatch)?;
                    self.inner.metrics.broadcast(sent.delivered);
                }
            },
            None => {
                let sent = dispatch(b)?;
                self.inner.metrics.broadcast(sent.delivered);
            }
        }
        Ok(())
    }

    /// Keeps a history of the broadcasts on every topic matching `pattern`
    /// (an exact topic, or a prefix ending in `*`), within `config`'s
    /// bounds: each broadcast gets a position, sent in its frame's ref slot,
    /// and a client that rejoins with `{"since": position}` gets what it
    /// missed before live broadcasts (see [`history`](crate::history)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use fawkes::{history::HistoryConfig, Endpoint};
    ///
    /// let endpoint = Endpoint::local();
    /// endpoint.history("history:*", HistoryConfig::new().max_messages(1000).max_age(Duration::from_secs(300)));
    /// ```
    ///
    /// # Panics
    ///
    /// When `pattern` has a `*` anywhere but at its end.
    pub fn history(&self, pattern: &str, config: crate::history::HistoryConfig) {
        if let Err(e) = self.inner.history.add(pattern, config) {
            panic!("{e}");
        }
    }

    /// Keeps the history of every topic with history in `store`, shared by
    /// the cluster's nodes, instead of in this node's memory (see
    /// [`SharedHistory`](crate::history::SharedHistory); `fawkes-redis`
    /// provides one on Redis Streams). Set it before the first connection.
    pub fn set_shared_history(&self, store: Arc<dyn crate::history::SharedHistory>) {
        self.inner.history.set_shared(store);
    }

    /// Sets the budget of history bytes kept across every topic of this
    /// endpoint (default [`DEFAULT_HISTORY_BUDGET`](crate::history::DEFAULT_HISTORY_BUDGET),
    /// 256 MiB): beyond it the oldest broadcasts of any topic are dropped.
    pub fn set_history_budget(&self, bytes: usize) {
        self.inner.history.set_budget(bytes);
    }

    /// Bytes of history kept now, across every topic.
    pub fn history_bytes(&self) -> usize {
        self.inner.history.bytes()
    }

    pub(crate) fn histories(&self) -> &crate::history::Histories {
        &self.inner.history
    }

    /// Broadcasts to every subscriber but `from` (a subscription's id).
    ///
    /// # Errors
    ///
    /// As [`Endpoint::broadcast`].
    pub fn broadcast_from(
        &self,
        from: SubscriberId,
        topic: &str,
        event: &str,
        payload: impl IntoPayload,
    ) -> Result<(), BroadcastError> {
        self.publish(checked(topic, event, payload.into_payload())?, Some(from))
    }

    /// Broadcasts to the subscribers of this node only.
    ///
    /// # Errors
    ///
    /// When the payload is neither a JSON object nor binary.
    pub fn local_broadcast(&self, topic: &str, event: &str, payload: impl IntoPayload) -> Result<(), BroadcastError> {
        self.inner.pubsub.local_broadcast(checked(topic, event, payload.into_payload())?);
        Ok(())
    }

    /// Closes every connection whose socket id is `socket_id`, on every node
    /// (a `disconnect` broadcast on the id).
    ///
    /// # Errors
    ///
    /// When the remote adapter fails.
    pub fn disconnect(&self, socket_id: &str) -> Result<(), BroadcastError> {
        self.inner.pubsub.broadcast(crate::session::disconnect_broadcast(socket_id))?;
        Ok(())
    }

    /// Subscribes a function to `topic` (Phoenix's `Endpoint.subscribe`).
    pub fn subscribe<F>(&self, topic: &str, f: F) -> Subscription
    where
        F: Fn(&Broadcast) + Send + Sync + 'static,
    {
        self.inner.pubsub.subscribe_fn(topic, f)
    }

    /// Mounts a socket at `path` and returns its routes, to merge into the
    /// application's router: `<path>/websocket`.
    pub fn socket<S: Socket>(&self, path: &str, handler: SocketHandler<S>) -> axum::Router {
        handler.build(self).router(path)
    }

    /// Closes every connection of this endpoint (WebSocket close 1012,
    /// "service restart"); their channels run `terminate`. Pair it with the
    /// HTTP server's own graceful shutdown.
    pub fn shutdown(&self) {
        self.inner.shutdown.trigger();
    }

    /// Closes every connection of this endpoint in batches, as Phoenix's
    /// socket drainer does on shutdown, so that a deploy does not make every
    /// client reconnect at the same moment: `drain.batch_size` connections
    /// every `drain.interval`, the batches made larger when needed so that
    /// the last one goes within `drain.max`. Each connection is closed as
    /// by [`Endpoint::shutdown`] (1012, "service restart"; its channels run
    /// `terminate`); a connection that arrives meanwhile is closed at once.
    /// Returns once the last batch was told.
    pub async fn drain(&self, drain: Drain) {
        let list = &self.inner.shutdown;
        list.done.store(true, Ordering::Release);
        let live = list.live();
        let interval = drain.interval;
        let batches_in_time = if interval.is_zero() {
            usize::MAX
        } else {
            usize::try_from(drain.max.as_millis() / interval.as_millis().max(1)).unwrap_or(usize::MAX).max(1)
        };
        let size = drain.batch_size.max(1).max(live.len().div_ceil(batches_in_time));
        let batches = live.len().div_ceil(size);
        tracing::info!(connections = live.len(), batches, batch_size = size, "draining connections");
        for (i, batch) in live.chunks(size).enumerate() {
            for outbox in batch {
                outbox.push_control(Out::Shutdown);
            }
            if i + 1 < batches {
                tokio::time::sleep(interval).await;
            }
        }
    }

    /// True once [`Endpoint::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.done.load(Ordering::Acquire)
    }

    pub(crate) fn shutdown_list(&self) -> &ShutdownList {
        &self.inner.shutdown
    }
}
