//! PubSub across nodes over Redis, as `phoenix_pubsub_redis` 3.x does it.
//!
//! Every node publishes its broadcasts to one Redis channel and subscribes
//! to it; a node delivers what other nodes published to its local
//! subscribers. Messages are written in `phoenix_pubsub_redis`'s format
//! (see [`wire`]), so Fawkes nodes and Phoenix nodes configured with the
//! same channel exchange channel broadcasts both ways.
//!
//! Delivery is at most once, as in Phoenix: a node that is disconnected from
//! Redis misses what is published meanwhile, and what it publishes
//! meanwhile is dropped (and counted). Both connections reconnect by
//! themselves.
//!
//! ```no_run
//! # async fn run() -> Result<(), fawkes_redis::RedisError> {
//! let config = fawkes_redis::RedisConfig::new("redis://127.0.0.1:6379", "node-a");
//! let pubsub = fawkes_redis::connect(config).await?;
//! // then `fawkes::Endpoint::new(pubsub)`: broadcasts reach every node
//! # let _ = pubsub; Ok(()) }
//! ```

mod inbound;
mod metrics;
mod resp;
pub mod test_server;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes_pubsub::{Adapter, PubSub, PubSubError, RemoteMessage, WeakPubSub};
use tokio::sync::{mpsc, oneshot, watch};

use crate::resp::{command, Conn, Value};

/// How a node reaches Redis and names itself.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]` (the database number
    /// does not matter to PubSub and is ignored).
    pub url: String,
    /// This node's name, unique among the nodes sharing the channel.
    pub node_name: String,
    /// The Redis channel. Phoenix's is `phx:` followed by the PubSub's
    /// adapter name, `phx:Elixir.MyApp.PubSub.Adapter` for `MyApp.PubSub`
    /// (see [`RedisConfig::phoenix_pubsub`]).
    pub channel: String,
    /// Messages waiting to be published, at most; a broadcast that finds
    /// the queue full fails with an error instead of growing memory.
    pub queue_limit: usize,
    /// Time between reconnection attempts (Phoenix's is 5 s).
    pub reconnect_every: Duration,
    /// Time allowed to connect (and authenticate), and for Redis to answer
    /// a batch of publishes.
    pub connect_timeout: Duration,
    /// The subscriber pings Redis this often; a subscription silent for
    /// three of these periods is taken for dead (a half-open connection
    /// after a failover, say) and made again.
    pub keepalive: Duration,
}

impl RedisConfig {
    /// A config with the default channel `phx:Fawkes.PubSub.Adapter`.
    pub fn new(url: impl Into<String>, node_name: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            node_name: node_name.into(),
            channel: "phx:Fawkes.PubSub.Adapter".into(),
            queue_limit: 65_536,
            reconnect_every: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
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
    /// The URL is not `redis://...` with a host.
    #[error("invalid redis url: {0}")]
    Url(String),
    /// An empty node name.
    #[error("the node name must not be empty")]
    NodeName,
    /// Redis could not be reached, refused the credentials or the
    /// subscription.
    #[error("cannot connect to Redis at redis://{addr}: {}", reason(source))]
    Io {
        /// The `host:port` tried (the URL's credentials left out).
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// An I/O error as people read it: `connection refused`, without the
/// operating system's error number.
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // the system's messages are capitalized sentences with a number
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => {
            let mut chars = text[..at].chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        _ => text,
    }
}

struct Target {
    addr: String,
    user: Option<String>,
    password: Option<String>,
}

impl Target {
    fn auth(&self) -> Option<(Option<&str>, &str)> {
        self.password.as_deref().map(|p| (self.user.as_deref(), p))
    }
}

fn parse_url(url: &str) -> Result<Target, RedisError> {
    let bad = || RedisError::Url(url.to_owned());
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hostport.is_empty() {
        return Err(bad());
    }
    let has_port = match hostport.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(v6) => v6.split_once(']').is_some_and(|(_, rest)| rest.starts_with(':')),
        None => hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
    };
    let addr = if has_port { hostport.to_owned() } else { format!("{hostport}:6379") };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => ((!user.is_empty()).then(|| percent_decode(user)), Some(percent_decode(pass))),
            None => (None, Some(percent_decode(u))),
        },
    };
    Ok(Target { addr, user, password })
}

/// Decodes `%XX` escapes (a password may hold `@`, `:` or `/`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts of what the adapter did.
#[derive(Debug, Default)]
pub struct RedisStats {
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    undecodable: AtomicU64,
    ignored: AtomicU64,
    reconnects: AtomicU64,
}

impl RedisStats {
    /// Messages published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Messages not published: the queue was full or Redis unreachable.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Messages received from other nodes (or for this one).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Messages on the channel that were not PubSub messages at all.
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
}

/// What the publisher is asked to do.
enum Outgoing {
    /// Publish these bytes.
    Message(Vec<u8>),
    /// Tell when everything queued before has been written (or dropped).
    Flush(oneshot::Sender<()>),
}

/// The adapter a [`PubSub`] publishes through.
struct RedisAdapter {
    queue: mpsc::Sender<Outgoing>,
    stats: Arc<RedisStats>,
    /// Dropped with the adapter (that is, with the PubSub): tells the
    /// receiving task to stop.
    _alive: watch::Sender<()>,
}

impl Adapter for RedisAdapter {
    fn publish(&self, msg: RemoteMessage) -> Result<(), PubSubError> {
        let bytes = match wire::encode(&msg) {
            Ok(b) => b,
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(PubSubError::Remote(e.to_string()));
            }
        };
        match self.queue.try_send(Outgoing::Message(bytes)) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Err(PubSubError::Remote("the redis publish queue is full".into()))
            }
        }
    }

    fn flush(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            // waits for room in the queue: a flush is never dropped
            if self.queue.send(Outgoing::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
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
}

/// Connects to Redis and returns a PubSub that spans the cluster. Waits
/// until the subscription is in place (so that nothing published after it
/// returns is missed), then keeps both connections up in the background
/// until the PubSub is dropped.
///
/// # Errors
///
/// A bad URL or node name, or Redis unreachable (or refusing the
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
    let target = Arc::new(parse_url(&config.url)?);
    let config = Arc::new(config);
    // Fail early on a wrong address or password.
    let failed = |source| RedisError::Io { addr: target.addr.clone(), source };
    let first = subscribe(&target, &config).await.map_err(failed)?;
    let publisher = Conn::open(&target.addr, target.auth(), config.connect_timeout).await.map_err(failed)?;
    let stats = Arc::new(RedisStats::default());
    let (queue, rx) = mpsc::channel(config.queue_limit.max(1));
    let (alive, alive_rx) = watch::channel(());
    let adapter = RedisAdapter { queue, stats: stats.clone(), _alive: alive };
    let pubsub = PubSub::with_adapter(config.node_name.clone(), Arc::new(adapter));
    tokio::spawn(publish_loop(target.clone(), config.clone(), publisher, rx, stats.clone()));
    tokio::spawn(receive_loop(target, config, first, pubsub.downgrade(), alive_rx, stats.clone()));
    Ok(Cluster { pubsub, stats })
}

/// Opens a connection and subscribes to the channel; returns once Redis
/// confirmed the subscription.
async fn subscribe(target: &Target, config: &RedisConfig) -> std::io::Result<Conn> {
    let mut conn = Conn::open(&target.addr, target.auth(), config.connect_timeout).await?;
    let mut out = Vec::new();
    command(&mut out, &[b"SUBSCRIBE", config.channel.as_bytes()]);
    conn.write(&out).await?;
    let confirmed = tokio::time::timeout(config.connect_timeout, conn.read()).await;
    match confirmed {
        Ok(Ok(Value::Array(Some(items)))) if items.first().is_some_and(|k| is_bulk(k, b"subscribe")) => Ok(conn),
        Ok(Ok(Value::Error(e))) => Err(std::io::Error::other(format!("SUBSCRIBE refused: {e}"))),
        Ok(Ok(_)) => Err(std::io::Error::other("unexpected reply to SUBSCRIBE")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "SUBSCRIBE timed out")),
    }
}

fn is_bulk(v: &Value, s: &[u8]) -> bool {
    matches!(v, Value::Bulk(Some(b)) if b.eq_ignore_ascii_case(s))
}

/// Most messages written to Redis in one batch.
const BATCH: usize = 256;

/// Publishes queued messages, pipelined in batches, and reconnects when the
/// connection fails; ends when the adapter (the PubSub) is dropped.
async fn publish_loop(
    target: Arc<Target>,
    config: Arc<RedisConfig>,
    conn: Conn,
    mut rx: mpsc::Receiver<Outgoing>,
    stats: Arc<RedisStats>,
) {
    let mut conn = Some(conn);
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushed = Vec::new();
    let mut out = Vec::new();
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        out.clear();
        let mut n = 0;
        for item in batch.drain(..) {
            match item {
                Outgoing::Message(msg) => {
                    command(&mut out, &[b"PUBLISH", config.channel.as_bytes(), &msg]);
                    n += 1;
                }
                Outgoing::Flush(done) => flushed.push(done),
            }
        }
        if n > 0 && !publish(&target, &config, &mut conn, &out, n, &stats).await {
            // Redis is unreachable: what is queued now is dropped (at most
            // once, as Phoenix), not delivered minutes late; then wait
            while let Ok(item) = rx.try_recv() {
                match item {
                    Outgoing::Message(_) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Outgoing::Flush(done) => flushed.push(done),
                }
            }
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
            tokio::time::sleep(config.reconnect_every).await;
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Publishes one pipelined batch of `n` commands, reconnecting first if
/// needed; on failure the batch is dropped and counted. False when Redis
/// could not be reached at all.
async fn publish(
    target: &Target,
    config: &RedisConfig,
    conn: &mut Option<Conn>,
    out: &[u8],
    n: usize,
    stats: &RedisStats,
) -> bool {
    let c = match conn.as_mut() {
        Some(c) => c,
        None => match Conn::open(&target.addr, target.auth(), config.connect_timeout).await {
            Ok(c) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("redis publisher reconnected");
                conn.insert(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, dropped = n, "redis unreachable: dropping broadcasts");
                stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                return false;
            }
        },
    };
    let sent = match tokio::time::timeout(config.connect_timeout, send_batch(c, out, n)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "redis did not answer")),
    };
    match sent {
        Ok(()) => {
            stats.published.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, dropped = n, "redis publish failed; reconnecting");
            stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
            *conn = None;
        }
    }
    true
}

/// Writes a pipelined batch and reads its `n` replies.
async fn send_batch(conn: &mut Conn, out: &[u8], n: usize) -> std::io::Result<()> {
    conn.write(out).await?;
    for _ in 0..n {
        match conn.read().await? {
            Value::Int(_) => {}
            Value::Error(e) => return Err(std::io::Error::other(format!("PUBLISH refused: {e}"))),
            _ => return Err(std::io::Error::other("unexpected reply to PUBLISH")),
        }
    }
    Ok(())
}

/// Delivers what other nodes publish, resubscribing after a failure; ends
/// when the PubSub is dropped.
async fn receive_loop(
    target: Arc<Target>,
    config: Arc<RedisConfig>,
    first: Conn,
    pubsub: WeakPubSub,
    mut alive: watch::Receiver<()>,
    stats: Arc<RedisStats>,
) {
    let mut conn = Some(first);
    loop {
        let c = match conn.take() {
            Some(c) => c,
            None => {
                let retry = tokio::select! {
                    _ = alive.changed() => return,
                    r = subscribe(&target, &config) => r,
                };
                match retry {
                    Ok(c) => {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("redis subscriber reconnected");
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis unreachable: retrying");
                        tokio::select! {
                            _ = alive.changed() => return,
                            _ = tokio::time::sleep(config.reconnect_every) => {}
                        }
                        continue;
                    }
                }
            }
        };
        tokio::select! {
            _ = alive.changed() => return,
            err = receive(c, &pubsub, &stats, config.keepalive) => {
                match err {
                    Some(e) => tracing::warn!(error = %e, "redis subscription lost; resubscribing"),
                    None => return,
                }
            }
        }
        tokio::select! {
            _ = alive.changed() => return,
            _ = tokio::time::sleep(config.reconnect_every) => {}
        }
    }
}

/// Reads pushes until the connection fails or stays silent for three
/// keepalive periods (`Some(error)`), or the PubSub is gone (`None`).
async fn receive(
    mut conn: Conn,
    pubsub: &WeakPubSub,
    stats: &RedisStats,
    keepalive: Duration,
) -> Option<std::io::Error> {
    let keepalive = keepalive.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut heard = tokio::time::Instant::now();
    let mut out = Vec::new();
    command(&mut out, &[b"PING"]);
    loop {
        // (reading is cancel-safe: what arrived stays in the buffer)
        let v = tokio::select! {
            v = conn.read() => match v {
                Ok(v) => v,
                Err(e) => return Some(e),
            },
            _ = ping.tick() => {
                if heard.elapsed() > keepalive * 3 {
                    return Some(std::io::Error::new(std::io::ErrorKind::TimedOut, "the redis subscription went silent"));
                }
                if let Err(e) = conn.write(&out).await {
                    return Some(e);
                }
                continue;
            }
        };
        heard = tokio::time::Instant::now();
        let Value::Array(Some(items)) = v else { continue };
        let [kind, _channel, Value::Bulk(Some(data))] = items.as_slice() else { continue };
        if !is_bulk(kind, b"message") {
            continue;
        }
        let pubsub = pubsub.upgrade()?;
        inbound::deliver(&pubsub, data, stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_and_credentials() {
        let t = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!((t.addr.as_str(), t.auth()), ("127.0.0.1:6379", None));
        let t = parse_url("redis://:secret@localhost:7000/2").unwrap();
        assert_eq!((t.addr.as_str(), t.auth()), ("localhost:7000", Some((None, "secret"))));
        let t = parse_url("redis://app:pw@h:1").unwrap();
        assert_eq!(t.auth(), Some((Some("app"), "pw")));
        let t = parse_url("redis://u%40x:p%2Fw%3Ad@h:1").unwrap();
        assert_eq!(t.auth(), Some((Some("u@x"), "p/w:d")));
        assert_eq!(parse_url("redis://[::1]").unwrap().addr, "[::1]:6379");
        assert_eq!(parse_url("redis://[::1]:7000").unwrap().addr, "[::1]:7000");
        for bad in ["http://h", "redis://", "rediss://h:1"] {
            assert!(matches!(parse_url(bad), Err(RedisError::Url(_))), "{bad}");
        }
    }
}
