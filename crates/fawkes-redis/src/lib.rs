//! PubSub across nodes over Redis, as `phoenix_pubsub_redis` 3.x does it,
//! on the [`redis`](https://docs.rs/redis) crate.
//!
//! Every node publishes its broadcasts to one Redis channel and subscribes
//! to it; a node delivers what other nodes published to its local
//! subscribers. Messages are written in `phoenix_pubsub_redis`'s format
//! (see [`wire`]), so Fawkes nodes and Phoenix nodes configured with the
//! same channel exchange channel broadcasts both ways.
//!
//! Where Redis is ([`RedisConfig::url`]):
//!
//! | URL | what |
//! | --- | --- |
//! | `redis://[[user]:password@]host[:port][/db]` | one server |
//! | `rediss://...` | the same over TLS ([`RedisConfig::ca_file`], and [`RedisConfig::cert_file`] with [`RedisConfig::key_file`] for a client certificate) |
//! | `redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name` | the master that the sentinels name, followed through failovers (the credentials are the master's; the sentinels are asked without) |
//! | `redis+cluster://[[user]:password@]host:port[,host:port...]` | a Redis Cluster, reached through any of the nodes given |
//!
//! (`rediss+sentinel://` and `rediss+cluster://` use TLS everywhere.)
//!
//! **Sharded fan-out** ([`RedisConfig::shards`]): with `K` shards, topics
//! hash to `K` channels and a node subscribes only to the channels of the
//! topics it has local subscribers for (the PubSub tells the adapter, see
//! [`fawkes_pubsub::Adapter::topic_subscribed`]); direct broadcasts go to a
//! channel of the node's own. On a Redis Cluster these are sharded
//! channels (`SPUBLISH`/`SSUBSCRIBE`), each carried by the master of its
//! slot only, so that neither a Redis node nor a Fawkes node carries the
//! whole fleet's traffic. Phoenix nodes do not speak it: fleets that mix
//! them keep the single channel (the default). A node receives a topic's
//! broadcasts from other nodes from one Redis round trip after its first
//! local subscriber on.
//!
//! **Delivery is at most once, and never late.** A node disconnected from
//! Redis misses what is published meanwhile. What this node publishes waits
//! in a queue bounded in messages and bytes ([`RedisConfig::queue_limit`],
//! [`RedisConfig::queue_bytes`]); a message still unpublished
//! [`RedisConfig::deadline`] after it was queued is dropped (and counted),
//! not sent late. Every connection carries nothing until a `PING` round
//! trip succeeded, is pinged every [`RedisConfig::keepalive`] and is made
//! again when a ping or a publish goes unanswered for the deadline (a
//! stalled or half-open server). When a link comes back after a failure,
//! the PubSub's subscribers of [`fawkes_pubsub::RECONNECTED_TOPIC`] hear of
//! it: state kept in step by broadcasts must resynchronise then. The
//! counters ([`RedisStats`]) are served with the PubSub's
//! [`fawkes_pubsub::PubSub::prometheus`].
//!
//! ```no_run
//! # async fn run() -> Result<(), fawkes_redis::RedisError> {
//! let config = fawkes_redis::RedisConfig::new("redis://127.0.0.1:6379", "node-a");
//! let pubsub = fawkes_redis::connect(config).await?;
//! // then `fawkes::Endpoint::new(pubsub)`: broadcasts reach every node
//! # let _ = pubsub; Ok(()) }
//! ```

mod channels;
pub mod env;
mod history;
mod inbound;
mod publisher;
mod subscriber;
mod target;
pub mod test_server;
pub mod wire;

pub use history::RedisHistory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes_pubsub::{Adapter, AdapterMetric, PubSub, PubSubError, RemoteMessage};
use tokio::sync::{oneshot, watch};

use crate::channels::Channels;
use crate::publisher::{PubConn, Queue};
use crate::target::{Connector, Mode};

/// How a node reaches Redis and names itself.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is: `redis://`, `rediss://`, `redis+sentinel://` or
    /// `redis+cluster://` (see the crate's documentation). The database
    /// number does not matter to PubSub and is ignored.
    pub url: String,
    /// This node's name, unique among the nodes sharing the channel.
    pub node_name: String,
    /// The Redis channel. Phoenix's is `phx:` followed by the PubSub's
    /// adapter name, `phx:Elixir.MyApp.PubSub.Adapter` for `MyApp.PubSub`
    /// (see [`RedisConfig::phoenix_pubsub`]). In sharded mode, the prefix of
    /// the channels' names.
    pub channel: String,
    /// With TLS: the CA certificates (PEM) that the server's certificate
    /// must chain to, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// With TLS: this node's certificate (PEM), for servers that ask for
    /// one (`tls-auth-clients`); with [`RedisConfig::key_file`].
    pub cert_file: Option<PathBuf>,
    /// With TLS: the private key (PEM) of [`RedisConfig::cert_file`].
    pub key_file: Option<PathBuf>,
    /// Sharded fan-out over this many channels; 0 (the default) for the
    /// single channel Phoenix uses.
    pub shards: u32,
    /// Messages waiting to be published, at most; a broadcast that finds
    /// the queue full fails with an error instead of growing memory.
    pub queue_limit: usize,
    /// Bytes of messages waiting to be published, at most (as
    /// [`RedisConfig::queue_limit`]).
    pub queue_bytes: usize,
    /// A message not published this long after it was queued is dropped
    /// (and counted) rather than sent late; a publish or a ping that Redis
    /// does not answer within it ends the connection.
    pub deadline: Duration,
    /// Time between reconnection attempts (Phoenix's is 5 s).
    pub reconnect_every: Duration,
    /// Time allowed to connect (TLS, authentication and the first `PING`
    /// included).
    pub connect_timeout: Duration,
    /// Both connections ping Redis this often when nothing else proves it
    /// alive.
    pub keepalive: Duration,
}

impl RedisConfig {
    /// A config with the default channel `phx:Fawkes.PubSub.Adapter`.
    pub fn new(url: impl Into<String>, node_name: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            node_name: node_name.into(),
            channel: "phx:Fawkes.PubSub.Adapter".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            shards: 0,
            queue_limit: 65_536,
            queue_bytes: 16 << 20,
            deadline: Duration::from_secs(2),
            reconnect_every: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(1),
        }
    }

    /// Uses the channel of a Phoenix application's PubSub named `name`
    /// (for example `MyApp.PubSub`), to share broadcasts with its nodes.
    #[must_use]
    pub fn phoenix_pubsub(mut self, name: &str) -> RedisConfig {
        self.channel = format!("phx:Elixir.{name}.Adapter");
        self
    }
}

/// Why a node could not join the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not one of the forms in the crate's documentation.
    #[error("invalid redis url: {0}")]
    Url(String),
    /// An empty node name.
    #[error("the node name must not be empty")]
    NodeName,
    /// TLS files that cannot be used: unreadable, not PEM, a certificate
    /// without its key, or files given for a URL without TLS.
    #[error("{0}")]
    TlsFiles(String),
    /// Redis could not be reached, refused the credentials or the
    /// subscription, or did not answer in time.
    #[error("cannot connect to Redis at {addr}: {reason}")]
    Io {
        /// The URL tried, without its credentials.
        addr: String,
        /// Why, in words.
        reason: String,
    },
}

/// Counts of what the adapter did.
#[derive(Debug, Default)]
pub struct RedisStats {
    published: AtomicU64,
    dropped: AtomicU64,
    expired: AtomicU64,
    received: AtomicU64,
    undecodable: AtomicU64,
    ignored: AtomicU64,
    reconnects: AtomicU64,
    queued_bytes: AtomicU64,
    channels: AtomicU64,
    publish_duration: PublishDuration,
}

/// The time each batch of publishes took, from sending to Redis's answer
/// (`fawkes_redis_publish_duration_seconds`).
#[derive(Debug, Clone)]
struct PublishDuration(prometheus_client::metrics::histogram::Histogram);

impl Default for PublishDuration {
    fn default() -> Self {
        // 100 µs, 250 µs, ... ~2.4 s
        PublishDuration(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.5, 12),
        ))
    }
}

impl RedisStats {
    /// Messages published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Messages not published: the queue was full, they were older than
    /// the deadline when their turn came (see [`RedisStats::expired`]), or
    /// Redis did not confirm them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Of the dropped messages, those older than the deadline when their
    /// turn came.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
    /// Messages received from other nodes (or for this one).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Messages on the channel that were not channel broadcasts of format 3.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }
    /// Messages for this node it took no action on: of another format
    /// version, a `Phoenix.PubSub` message no subscriber here takes (see
    /// `fawkes_pubsub::TERM_EVENT`), or a broadcast whose payload no client
    /// could be sent.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
    /// Reconnections of either connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    /// Bytes of messages waiting to be published now.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }
    /// Redis channels subscribed to now.
    pub fn channels(&self) -> u64 {
        self.channels.load(Ordering::Relaxed)
    }

    /// Notes how long a batch of publishes took to be confirmed by Redis.
    pub(crate) fn publish_took(&self, d: std::time::Duration) {
        self.publish_duration.0.observe(d.as_secs_f64());
    }

    /// Registers `fawkes_redis_publish_duration_seconds` in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "fawkes_redis_publish_duration_seconds",
            "Time a batch of publishes took to be confirmed by Redis.",
            self.publish_duration.0.clone(),
        );
    }

    /// The counters in Prometheus's text exposition format (`fawkes_redis_*`;
    /// the same text `PubSub::prometheus` serves for this adapter).
    pub fn prometheus(&self) -> String {
        self.metrics().iter().map(AdapterMetric::prometheus).collect()
    }

    fn metrics(&self) -> Vec<AdapterMetric> {
        let m = |name, gauge, help, value| AdapterMetric { name, gauge, help, value };
        vec![
            m("fawkes_redis_published_total", false, "Messages published to Redis.", self.published()),
            m(
                "fawkes_redis_dropped_total",
                false,
                "Messages not published: queue full, past the deadline, or unconfirmed by Redis.",
                self.dropped(),
            ),
            m(
                "fawkes_redis_expired_total",
                false,
                "Messages dropped because they waited past the deadline.",
                self.expired(),
            ),
            m("fawkes_redis_received_total", false, "Messages received from Redis.", self.received()),
            m(
                "fawkes_redis_ignored_total",
                false,
                "Messages for this node that it took no action on (another format version, a Phoenix.PubSub message nothing here takes, a broadcast no client could be sent).",
                self.ignored(),
            ),
            m(
                "fawkes_redis_undecodable_total",
                false,
                "Messages from Redis that were not broadcasts.",
                self.undecodable(),
            ),
            m(
                "fawkes_redis_reconnects_total",
                false,
                "Connections to Redis made again after a failure.",
                self.reconnects(),
            ),
            m("fawkes_redis_queue_bytes", true, "Bytes of messages waiting to be published.", self.queued_bytes()),
            m("fawkes_redis_channels", true, "Redis channels subscribed to.", self.channels()),
        ]
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The adapter a [`PubSub`] publishes through.
struct RedisAdapter {
    queue: Arc<Queue>,
    channels: Arc<Channels>,
    stats: Arc<RedisStats>,
    /// Dropped with the adapter (that is, with the PubSub): tells the
    /// receiving task to stop.
    _alive: watch::Sender<()>,
}

impl Drop for RedisAdapter {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Adapter for RedisAdapter {
    fn publish(&self, msg: RemoteMessage) -> Result<(), PubSubError> {
        let bytes = match wire::encode(&msg) {
            Ok(b) => b,
            Err(e) => {
                add(&self.stats.dropped, 1);
                return Err(PubSubError::Remote(e.to_string()));
            }
        };
        let channel = self.channels.publish_channel(&msg);
        self.queue.push(channel, bytes).map_err(|()| {
            add(&self.stats.dropped, 1);
            PubSubError::Remote("the redis publish queue is full".into())
        })
    }

    fn flush(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            // a flush is never refused
            self.queue.push_flush(done);
            let _ = wait.await;
        })
    }

    fn topic_subscribed(&self, topic: &str) {
        self.channels.topic_added(topic);
    }

    fn topic_unsubscribed(&self, topic: &str) {
        self.channels.topic_removed(topic);
    }

    fn metrics(&self) -> Vec<AdapterMetric> {
        self.stats.metrics()
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.stats.register_metrics(registry);
    }
}

/// A PubSub whose broadcasts span every node on the same Redis channel, and
/// the adapter's counters.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The PubSub, to build an `Endpoint` with.
    pub pubsub: PubSub,
    /// What the adapter did so far.
    pub stats: Arc<RedisStats>,
    /// Topic history kept on Redis Streams for every node: give it to the
    /// endpoint (`Endpoint::set_shared_history`) so that a client recovers
    /// what it missed on any node, and after a node restarts. Its
    /// connection is made on first use (single server or sentinel; not on
    /// a Redis Cluster, and not in sharded mode).
    pub history: Arc<RedisHistory>,
}

/// Connects to Redis and returns a PubSub that spans the cluster. Waits
/// until the subscription is in place (so that nothing published after it
/// returns is missed), then keeps both connections up in the background
/// until the PubSub is dropped.
///
/// # Errors
///
/// A bad URL, node name or TLS file, or Redis unreachable (or refusing the
/// credentials) on the first try.
pub async fn connect(config: RedisConfig) -> Result<PubSub, RedisError> {
    Ok(connect_cluster(config).await?.pubsub)
}

/// As [`connect`], with the adapter's counters.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_cluster(config: RedisConfig) -> Result<Cluster, RedisError> {
    if config.node_name.is_empty() {
        return Err(RedisError::NodeName);
    }
    let target = target::parse_url(&config.url)?;
    let certs = target::certificates(&config, &target)?;
    let shown = target.shown();
    let failed = |e: String| RedisError::Io { addr: shown.clone(), reason: e };
    let connector = Connector::new(&target, certs).map_err(|e| failed(target::words(&e.to_string())))?;
    let sharded_commands = config.shards > 0 && target.mode == Mode::Cluster;
    let config = Arc::new(config);
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        connector,
        sharded_commands,
        stats: Arc::default(),
        moved: watch::channel(0).0,
    });
    // fail early on a wrong address or password
    let publisher = PubConn::open(&ctx).await.map_err(failed)?;
    let channels = Arc::new(Channels::new(&config));
    let queue = Arc::new(Queue::new(&config, ctx.stats.clone()));
    let (alive, alive_rx) = watch::channel(());
    let adapter =
        RedisAdapter { queue: queue.clone(), channels: channels.clone(), stats: ctx.stats.clone(), _alive: alive };
    let pubsub = PubSub::with_adapter(config.node_name.clone(), Arc::new(adapter));
    let first = subscriber::SubConn::open(&ctx, &channels, pubsub.downgrade()).await.map_err(failed)?;
    tokio::spawn(publisher::run(ctx.clone(), publisher, queue, pubsub.downgrade()));
    tokio::spawn(subscriber::run(ctx.clone(), first, channels, pubsub.downgrade(), alive_rx));
    let history = RedisHistory::start(ctx.clone());
    Ok(Cluster { pubsub, stats: ctx.stats.clone(), history })
}

/// What both connections share.
struct Ctx {
    config: Arc<RedisConfig>,
    connector: Connector,
    /// `SPUBLISH`/`SSUBSCRIBE` (sharded mode on a cluster) rather than
    /// `PUBLISH`/`SUBSCRIBE`.
    sharded_commands: bool,
    stats: Arc<RedisStats>,
    /// Bumped when the publisher finds its server gone or no longer the
    /// master: the subscriber, connected to the same one, moves too.
    moved: watch::Sender<u64>,
}

impl Ctx {
    /// Whether the server is a sentinel's master, whose role is checked.
    fn sentinel(&self) -> bool {
        matches!(self.connector, Connector::Sentinel(_))
    }
}

/// `fut`, or an error naming what did not answer within `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(target::words(&e.to_string())),
        Err(_) => Err(format!("{what}: no answer within {} ms", limit.as_millis())),
    }
}
