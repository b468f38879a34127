//! Topic publish/subscribe for Fawkes, shaped after Phoenix.PubSub.
//!
//! A [`PubSub`] is a registry of local subscribers, sharded by topic so that
//! subscribing and broadcasting scale across cores, plus an optional remote
//! [`Adapter`] that carries broadcasts to the other nodes of a cluster (the
//! Redis adapter plugs in here). Local fan-out is never the adapter's job.
//!
//! A subscriber is anything that implements [`Subscriber`]. Delivery must not
//! block: a subscriber enqueues (into a bounded queue) and returns. Socket
//! subscribers use the [`FrameCache`] they are handed, so that a broadcast is
//! encoded once per serializer and the same bytes are shared by every
//! subscriber (Phoenix's "fastlane").
//!
//! Guarantees are Phoenix's: at most once, in order per sender, no persistence.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use fawkes_pubsub::{Broadcast, Payload, PubSub};
//!
//! let pubsub = PubSub::local("node1");
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! let sub = pubsub.subscribe_fn("room:lobby", move |b: &Broadcast| sink.lock().unwrap().push(b.event.clone()));
//! pubsub.broadcast(Broadcast::new("room:lobby", "new_msg", Payload::empty())).unwrap();
//! drop(sub); // unsubscribes
//! pubsub.broadcast(Broadcast::new("room:lobby", "ignored", Payload::empty())).unwrap();
//! assert_eq!(*seen.lock().unwrap(), vec!["new_msg".to_string()]);
//! ```

pub mod history;
mod registry;
mod remote;

use std::fmt;
use std::sync::Arc;

pub use fawkes_protocol::{Broadcast, Frame, Payload, Vsn};
pub use registry::{FrameCache, SubscriberId, Subscription};
pub use remote::{Adapter, AdapterMetric, RemoteMessage, Target, WireError, TERM_EVENT};

use registry::Registry;

/// The local topic on which [`PubSub::notify_reconnected`] announces that
/// this node's link to the other nodes came back after a failure: messages
/// to or from this node may have been lost meanwhile (delivery is at most
/// once). State that other nodes' broadcasts keep up to date (a cache
/// cleared by "changed" broadcasts, say) must resynchronise when it hears
/// this. The broadcast's event is `"reconnected"`, its payload
/// `{"node": <this node>}`; it is never sent to other nodes.
pub const RECONNECTED_TOPIC: &str = "fawkes:pubsub:reconnected";

/// What a subscriber did with a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for delivery (or deliberately skipped by the subscriber).
    Delivered,
    /// The subscriber's queue was full: the message was dropped, and the
    /// subscriber is responsible for acting on it (a socket closes itself).
    Overflow,
    /// The subscriber is gone; its subscription will be removed.
    Gone,
    /// The subscriber takes no message of this kind (a channel given a
    /// [`TERM_EVENT`] message, say): nothing was done with it.
    Ignored,
}

/// A receiver of broadcasts.
///
/// `deliver` is called from the broadcasting task with no lock held; it must
/// not block. Enqueue and return.
pub trait Subscriber: Send + Sync + 'static {
    /// Takes one broadcast. `frames` encodes it once per serializer for all
    /// subscribers of this dispatch.
    fn deliver(&self, msg: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery;
}

/// Errors of a broadcast.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The remote adapter could not publish the message.
    #[error("remote publish failed: {0}")]
    Remote(String),
}

/// Counts of one local dispatch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Subscribers that took the message.
    pub delivered: usize,
    /// Subscribers whose queue was full.
    pub overflowed: usize,
    /// Subscribers that took no action on it ([`Delivery::Ignored`]).
    pub ignored: usize,
}

/// A PubSub handle that does not keep it alive (see [`PubSub::downgrade`]).
#[derive(Clone)]
pub struct WeakPubSub {
    inner: std::sync::Weak<Inner>,
}

impl WeakPubSub {
    /// The PubSub, while it lives.
    pub fn upgrade(&self) -> Option<PubSub> {
        self.inner.upgrade().map(|inner| PubSub { inner })
    }
}

impl fmt::Debug for WeakPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakPubSub").field("alive", &(self.inner.strong_count() > 0)).finish()
    }
}

/// The PubSub handle: cheap to clone, shared by the whole process.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    registry: Registry,
    adapter: Option<Arc<dyn Adapter>>,
}

impl fmt::Debug for PubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSub").field("node", &self.inner.node).field("remote", &self.inner.adapter.is_some()).finish()
    }
}

impl PubSub {
    /// A PubSub for one node, with no remote delivery.
    pub fn local(node_name: impl Into<String>) -> PubSub {
        PubSub { inner: Arc::new(Inner { node: node_name.into(), registry: Registry::new(None), adapter: None }) }
    }

    /// A PubSub whose broadcasts also reach other nodes through `adapter`.
    /// Messages from other nodes are handed to [`PubSub::deliver_remote`].
    pub fn with_adapter(node_name: impl Into<String>, adapter: Arc<dyn Adapter>) -> PubSub {
        PubSub {
            inner: Arc::new(Inner {
                node: node_name.into(),
                registry: Registry::new(Some(adapter.clone())),
                adapter: Some(adapter),
            }),
        }
    }

    /// A handle that does not keep this PubSub alive: for an adapter's
    /// receiving task, which must end when the PubSub is dropped.
    pub fn downgrade(&self) -> WeakPubSub {
        WeakPubSub { inner: Arc::downgrade(&self.inner) }
    }

    /// True when broadcasts also go to other nodes (an adapter is set).
    pub fn is_distributed(&self) -> bool {
        self.inner.adapter.is_some()
    }

    /// This node's name, unique in the cluster.
    pub fn node_name(&self) -> &str {
        &self.inner.node
    }

    /// Subscribes `subscriber` to `topic` until the returned [`Subscription`]
    /// is dropped. Subscribing twice delivers twice.
    pub fn subscribe(&self, topic: &str, subscriber: Arc<dyn Subscriber>) -> Subscription {
        self.inner.registry.subscribe(&self.inner, topic, subscriber)
    }

    /// Subscribes a function; convenient for tests and background tasks.
    pub fn subscribe_fn<F>(&self, topic: &str, f: F) -> Subscription
    where
        F: Fn(&Broadcast) + Send + Sync + 'static,
    {
        struct FnSub<F>(F);
        impl<F: Fn(&Broadcast) + Send + Sync + 'static> Subscriber for FnSub<F> {
            fn deliver(&self, msg: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
                (self.0)(msg);
                Delivery::Delivered
            }
        }
        self.subscribe(topic, Arc::new(FnSub(f)))
    }

    /// Number of local subscriptions to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner.registry.count(topic)
    }

    /// The `limit` topics with the most local subscriptions, most first
    /// (ties by name), and the number of topics subscribed to on this node.
    /// It reads every topic: for an operator's page or API, not a hot path.
    pub fn top_topics(&self, limit: usize) -> (Vec<(String, usize)>, usize) {
        self.inner.registry.top(limit)
    }

    /// Broadcasts to every subscriber of the topic on every node.
    ///
    /// # Errors
    ///
    /// When the remote adapter fails; local subscribers have the message.
    pub fn broadcast(&self, msg: Broadcast) -> Result<Dispatched, PubSubError> {
        self.broadcast_inner(msg, None)
    }

    /// Broadcasts to every subscriber on every node except `from`.
    ///
    /// # Errors
    ///
    /// As [`PubSub::broadcast`].
    pub fn broadcast_from(&self, from: SubscriberId, msg: Broadcast) -> Result<Dispatched, PubSubError> {
        self.broadcast_inner(msg, Some(from))
    }

    fn broadcast_inner(&self, msg: Broadcast, from: Option<SubscriberId>) -> Result<Dispatched, PubSubError> {
        let sent = self.local_dispatch(&msg, from);
        if let Some(adapter) = &self.inner.adapter {
            adapter.publish(RemoteMessage { target: Target::Except(self.inner.node.clone()), broadcast: msg })?;
        }
        Ok(sent)
    }

    /// Broadcasts to the subscribers of this node only.
    pub fn local_broadcast(&self, msg: Broadcast) -> Dispatched {
        self.local_dispatch(&msg, None)
    }

    /// Broadcasts to the subscribers of this node only, except `from`.
    pub fn local_broadcast_from(&self, from: SubscriberId, msg: Broadcast) -> Dispatched {
        self.local_dispatch(&msg, Some(from))
    }

    /// Broadcasts to the subscribers of node `node` only (always through the
    /// adapter, as Phoenix does, unless `node` is this node).
    ///
    /// # Errors
    ///
    /// As [`PubSub::broadcast`].
    pub fn direct_broadcast(&self, node: &str, msg: Broadcast) -> Result<(), PubSubError> {
        if node == self.inner.node {
            self.local_dispatch(&msg, None);
            return Ok(());
        }
        match &self.inner.adapter {
            Some(adapter) => adapter.publish(RemoteMessage { target: Target::Only(node.to_owned()), broadcast: msg }),
            None => Ok(()),
        }
    }

    /// Resolves once every broadcast made before the call has left this
    /// node (see [`Adapter::flush`]); at once without an adapter. Call it
    /// before the process exits, so that last messages are not lost.
    pub async fn flush(&self) {
        if let Some(adapter) = &self.inner.adapter {
            adapter.flush().await;
        }
    }

    /// Tells this node's subscribers of [`RECONNECTED_TOPIC`] that the link
    /// to the other nodes is back after a failure. Adapters call it.
    pub fn notify_reconnected(&self) -> Dispatched {
        let payload = Payload::from(serde_json::json!({"node": self.inner.node}));
        self.local_dispatch(&Broadcast::new(RECONNECTED_TOPIC, "reconnected", payload), None)
    }

    /// Registers the adapter's own metrics (see [`Adapter::register_metrics`]).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let Some(a) = &self.inner.adapter {
            a.register_metrics(registry);
        }
    }

    /// The adapter's counters (see [`Adapter::metrics`]); empty without
    /// an adapter.
    pub fn adapter_metrics(&self) -> Vec<AdapterMetric> {
        self.inner.adapter.as_ref().map(|a| a.metrics()).unwrap_or_default()
    }

    /// The adapter's counters in Prometheus's text exposition format
    /// (see [`Adapter::metrics`]), to serve after the endpoint's own; empty
    /// without an adapter.
    pub fn prometheus(&self) -> String {
        self.inner
            .adapter
            .as_ref()
            .map(|a| a.metrics().iter().map(AdapterMetric::prometheus).collect())
            .unwrap_or_default()
    }

    /// Hands a message received from another node to the local subscribers,
    /// if it is meant for this node.
    pub fn deliver_remote(&self, msg: RemoteMessage) -> Dispatched {
        let for_me = match &msg.target {
            Target::Except(n) => *n != self.inner.node,
            Target::Only(n) => *n == self.inner.node,
        };
        if for_me {
            self.local_dispatch(&msg.broadcast, None)
        } else {
            Dispatched::default()
        }
    }

    fn local_dispatch(&self, msg: &Broadcast, from: Option<SubscriberId>) -> Dispatched {
        self.inner.registry.dispatch(msg, from)
    }
}
