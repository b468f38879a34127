//! The seam for remote delivery: an [`Adapter`] publishes node-tagged
//! envelopes to the other nodes, and hands the envelopes it receives to
//! [`crate::PubSub::deliver_remote`].

use base64::Engine as _;
use fawkes_protocol::{Broadcast, Payload};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::PubSubError;

/// The event of a broadcast that carries, as its binary payload, an Erlang
/// term in the external format (`131`, ...): a message that a Phoenix node
/// sent with `Phoenix.PubSub` and that is not a channel broadcast
/// (Phoenix.Tracker's replication, an application's own messages), or one
/// to send to Phoenix nodes that way. Adapters that speak Phoenix's format
/// carry the term itself rather than a broadcast; channels take no such
/// message, and an endpoint refuses to broadcast this event.
pub const TERM_EVENT: &str = "phx:term";

/// Which nodes a remote message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every node but this one (a broadcast; the sender delivered locally).
    Except(String),
    /// Only this node (a direct broadcast).
    Only(String),
}

/// A broadcast on its way between nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMessage {
    /// Which nodes it is for.
    pub target: Target,
    /// The broadcast.
    pub broadcast: Broadcast,
}

/// Carries broadcasts to the other nodes of a cluster.
pub trait Adapter: Send + Sync + 'static {
    /// Publishes `msg` to the other nodes. Must not block for long: queue
    /// and return.
    ///
    /// # Errors
    ///
    /// When the message cannot be handed to the transport.
    fn publish(&self, msg: RemoteMessage) -> Result<(), PubSubError>;

    /// Resolves once everything published before the call has been handed
    /// to the transport (or dropped by it): for a node about to stop. The
    /// default resolves at once (an adapter that publishes synchronously).
    fn flush(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// `topic` has its first local subscriber: an adapter that receives
    /// only the topics its node needs (sharded fan-out) starts receiving
    /// it. Called with the topic's registry shard locked, in order with
    /// [`Adapter::topic_unsubscribed`] for the same topic: note it and
    /// return, without calling back into the PubSub. Not called for
    /// [`crate::RECONNECTED_TOPIC`]. The default does nothing.
    fn topic_subscribed(&self, topic: &str) {
        let _ = topic;
    }

    /// `topic` has no local subscriber any more (see
    /// [`Adapter::topic_subscribed`]). The default does nothing.
    fn topic_unsubscribed(&self, topic: &str) {
        let _ = topic;
    }

    /// The adapter's counters, for a `/metrics` route (see
    /// [`crate::PubSub::prometheus`]). The default has none.
    fn metrics(&self) -> Vec<AdapterMetric> {
        Vec::new()
    }

    /// Registers the adapter's own `prometheus-client` metrics (histograms,
    /// say) in the registry the endpoint renders; called once, when the
    /// endpoint is made. The default registers none.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}

/// One counter or gauge of an adapter, in Prometheus's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterMetric {
    /// The metric's name, such as `fawkes_redis_dropped_total`.
    pub name: &'static str,
    /// `true` for a gauge (a level), `false` for a counter (a total).
    pub gauge: bool,
    /// What it counts, in one sentence.
    pub help: &'static str,
    /// The value now.
    pub value: u64,
}

impl AdapterMetric {
    /// The metric in Prometheus's text exposition format.
    pub fn prometheus(&self) -> String {
        let AdapterMetric { name, gauge, help, value } = self;
        let kind = if *gauge { "gauge" } else { "counter" };
        format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
    }
}

/// Why a remote envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid remote message: {0}")]
pub struct WireError(String);

#[derive(Deserialize)]
struct Envelope<'a> {
    v: u8,
    mode: &'a str,
    node: &'a str,
    topic: &'a str,
    event: &'a str,
    #[serde(borrow, default)]
    json: Option<&'a RawValue>,
    #[serde(default)]
    b64: Option<String>,
}

const WIRE_VERSION: u8 = 1;

impl RemoteMessage {
    /// Encodes the envelope as one JSON document:
    /// `{"v":1,"mode":"except"|"only","node","topic","event","json"|"b64"}`.
    pub fn encode(&self) -> Vec<u8> {
        let (mode, node) = match &self.target {
            Target::Except(n) => ("except", n.as_str()),
            Target::Only(n) => ("only", n.as_str()),
        };
        let b = &self.broadcast;
        // Strings through serde_json (escaping); the payload's JSON is
        // already valid and goes in as it is, without a second parse.
        let s = |v: &str| Value::from(v).to_string();
        let mut out = format!(
            "{{\"v\":{WIRE_VERSION},\"mode\":\"{mode}\",\"node\":{},\"topic\":{},\"event\":{},",
            s(node),
            s(&b.topic),
            s(&b.event)
        )
        .into_bytes();
        match &b.payload {
            Payload::Json(j) => {
                out.extend_from_slice(b"\"json\":");
                out.extend_from_slice(j.as_bytes());
            }
            Payload::Binary(bytes) => {
                out.extend_from_slice(b"\"b64\":");
                out.extend_from_slice(s(&base64::engine::general_purpose::STANDARD.encode(bytes)).as_bytes());
            }
        }
        out.push(b'}');
        out
    }

    /// Decodes an envelope made by [`RemoteMessage::encode`].
    ///
    /// # Errors
    ///
    /// Anything that is not such an envelope, of this wire version.
    pub fn decode(data: &[u8]) -> Result<RemoteMessage, WireError> {
        let env: Envelope<'_> = serde_json::from_slice(data).map_err(|e| WireError(e.to_string()))?;
        if env.v != WIRE_VERSION {
            return Err(WireError(format!("unsupported wire version {}", env.v)));
        }
        let target = match env.mode {
            "except" => Target::Except(env.node.to_owned()),
            "only" => Target::Only(env.node.to_owned()),
            m => return Err(WireError(format!("unknown mode {m:?}"))),
        };
        let payload = match (env.json, env.b64) {
            (Some(j), None) => Payload::json_text(j.get().to_owned()).map_err(|e| WireError(e.to_string()))?,
            (None, Some(b)) => Payload::binary(
                base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| WireError(e.to_string()))?,
            ),
            _ => return Err(WireError("exactly one of json and b64 is required".into())),
        };
        Ok(RemoteMessage { target, broadcast: Broadcast::new(env.topic, env.event, payload) })
    }
}
