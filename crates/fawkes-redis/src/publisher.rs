//! The publishing side: a queue bounded in messages and bytes whose
//! messages carry the time they were queued, and the task that publishes
//! them in pipelined batches, drops what waited past the deadline, and
//! makes the connection again when Redis stops answering.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use fawkes_pubsub::WeakPubSub;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use crate::target::Connector;
use crate::{add, within, Ctx, RedisConfig, RedisStats};

/// Most messages written to Redis in one batch.
const BATCH: usize = 256;

enum Item {
    /// Publish `data` on `channel`; queued at `at`.
    Message { at: Instant, channel: Arc<str>, data: Vec<u8> },
    /// Tell when everything queued before has been published (or dropped).
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    messages: usize,
    bytes: usize,
    closed: bool,
}

/// What waits to be published.
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Notify,
    /// True once closed.
    closed: watch::Sender<bool>,
    limit: usize,
    byte_limit: usize,
    stats: Arc<RedisStats>,
}

impl Queue {
    pub(crate) fn new(config: &RedisConfig, stats: Arc<RedisStats>) -> Queue {
        Queue {
            state: Mutex::default(),
            ready: Notify::new(),
            closed: watch::channel(false).0,
            limit: config.queue_limit.max(1),
            byte_limit: config.queue_bytes.max(1),
            stats,
        }
    }

    /// Queues a message, unless the queue is full (in messages or bytes).
    pub(crate) fn push(&self, channel: Arc<str>, data: Vec<u8>) -> Result<(), ()> {
        let mut s = self.state.lock();
        if s.closed || s.messages >= self.limit || s.bytes + data.len() > self.byte_limit {
            return Err(());
        }
        s.messages += 1;
        s.bytes += data.len();
        self.stats.queued_bytes.store(s.bytes as u64, std::sync::atomic::Ordering::Relaxed);
        s.items.push_back(Item::Message { at: Instant::now(), channel, data });
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a flush; answered at once when the queue is closed.
    pub(crate) fn push_flush(&self, done: oneshot::Sender<()>) {
        let mut s = self.state.lock();
        if s.closed {
            return;
        }
        s.items.push_back(Item::Flush(done));
        drop(s);
        self.ready.notify_one();
    }

    /// No more messages: the task drops what is queued and ends.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        let n = s.messages;
        s.items.clear();
        (s.messages, s.bytes) = (0, 0);
        self.stats.queued_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        drop(s);
        add(&self.stats.dropped, n as u64);
        self.closed.send_replace(true);
        self.ready.notify_one();
    }

    fn took(&self, s: &mut State, data: &[u8]) {
        s.messages -= 1;
        s.bytes -= data.len();
        self.stats.queued_bytes.store(s.bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes up to [`BATCH`] messages and the flushes among them; messages
    /// older than `deadline` are dropped and counted.
    fn take(&self, deadline: Duration, batch: &mut Vec<(Arc<str>, Vec<u8>)>, flushes: &mut Vec<oneshot::Sender<()>>) {
        let mut s = self.state.lock();
        let mut expired = 0;
        while batch.len() < BATCH {
            match s.items.pop_front() {
                None => break,
                Some(Item::Flush(done)) => flushes.push(done),
                Some(Item::Message { at, channel, data }) => {
                    self.took(&mut s, &data);
                    if at.elapsed() > deadline {
                        expired += 1;
                    } else {
                        batch.push((channel, data));
                    }
                }
            }
        }
        drop(s);
        self.count_expired(expired);
    }

    /// Drops the messages at the head that are older than `deadline`, and
    /// answers the flushes that no longer wait for anything.
    fn expire(&self, deadline: Duration) {
        let mut s = self.state.lock();
        let mut expired = 0;
        loop {
            match s.items.front() {
                Some(Item::Message { at, .. }) if at.elapsed() > deadline => {
                    if let Some(Item::Message { data, .. }) = s.items.pop_front() {
                        self.took(&mut s, &data);
                        expired += 1;
                    }
                }
                Some(Item::Flush(_)) => {
                    if let Some(Item::Flush(done)) = s.items.pop_front() {
                        let _ = done.send(());
                    }
                }
                _ => break,
            }
        }
        drop(s);
        self.count_expired(expired);
    }

    fn count_expired(&self, n: u64) {
        if n > 0 {
            add(&self.stats.dropped, n);
            add(&self.stats.expired, n);
        }
    }

    fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }
}

/// The publishing connection.
pub(crate) enum PubConn {
    /// A server's connection, and the server's address.
    Single(MultiplexedConnection, Option<(String, u16)>),
    /// A cluster's connection, and which master serves which slots.
    Cluster(ClusterConnection, Slots),
}

/// The masters of a cluster's slots, from `CLUSTER SLOTS`: `(first, last,
/// host, port)`, so that a batch goes out as one pipeline per master.
#[derive(Default)]
pub(crate) struct Slots(Vec<(u16, u16, String, u16)>);

impl Slots {
    fn parse(v: &redis::Value) -> Slots {
        use redis::Value as V;
        let mut out = Vec::new();
        let V::Array(ranges) = v else { return Slots(out) };
        for range in ranges {
            let V::Array(r) = range else { continue };
            let (Some(V::Int(first)), Some(V::Int(last)), Some(V::Array(master))) = (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            let host = match master.first() {
                Some(V::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(V::SimpleString(h)) => h.clone(),
                _ => continue,
            };
            if let (Some(V::Int(port)), Ok(first), Ok(last)) =
                (master.get(1), u16::try_from(*first), u16::try_from(*last))
            {
                if let Ok(port) = u16::try_from(*port) {
                    out.push((first, last, host, port));
                }
            }
        }
        Slots(out)
    }

    /// The master of `channel`'s slot.
    fn master(&self, channel: &str) -> Option<(&str, u16)> {
        let slot = slot(channel.as_bytes());
        self.0.iter().find(|(a, b, _, _)| *a <= slot && slot <= *b).map(|(_, _, h, p)| (h.as_str(), *p))
    }
}

/// A key's (here a channel's) cluster slot: CRC16 (XMODEM) of its hash tag
/// (what is between the first `{` and the next `}`, when not empty) or of
/// the whole name, modulo 16 384.
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| key[open + 1..].iter().position(|b| *b == b'}').map(|len| &key[open + 1..open + 1 + len]))
        .filter(|tag| !tag.is_empty());
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(key) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16_384
}

impl PubConn {
    /// Connects, and returns once a `PING` round trip succeeded.
    pub(crate) async fn open(ctx: &Ctx) -> Result<PubConn, String> {
        let limit = ctx.config.connect_timeout;
        let mut conn = match &ctx.connector {
            Connector::Cluster { .. } => {
                let client = ctx.connector.cluster(limit, None::<fn(redis::PushInfo) -> Result<(), ()>>);
                let client = client.map_err(|e| crate::target::words(&e.to_string()))?;
                let mut conn = within(limit, "connecting", client.get_async_connection()).await?;
                let slots =
                    within(limit, "CLUSTER SLOTS", redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn)).await?;
                PubConn::Cluster(conn, Slots::parse(&slots))
            }
            _ => {
                let client = within(limit, "asking the sentinels", ctx.connector.client()).await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(limit))
                    .set_response_timeout(Some(limit));
                let conn = within(limit, "connecting", client.get_multiplexed_async_connection_with_config(&config));
                PubConn::Single(conn.await?, crate::target::client_addr(&client))
            }
        };
        conn.ping(limit, ctx.sentinel()).await?;
        Ok(conn)
    }

    /// A `PING` round trip (to every master of a cluster) within `limit`;
    /// with `master`, a `ROLE` round trip that must say `master` (a
    /// sentinel's master demoted by a failover keeps its clients).
    pub(crate) async fn ping(&mut self, limit: Duration, master: bool) -> Result<(), String> {
        match self {
            PubConn::Single(c, _) if master => {
                let role = within(limit, "ROLE", redis::cmd("ROLE").query_async::<redis::Value>(c)).await?;
                match role {
                    redis::Value::Array(items)
                        if items.first() == Some(&redis::Value::BulkString(b"master".to_vec())) =>
                    {
                        redis::Value::Nil
                    }
                    _ => return Err("the server is no longer the master".into()),
                }
            }
            PubConn::Single(c, _) => within(limit, "PING", redis::cmd("PING").query_async::<redis::Value>(c)).await?,
            PubConn::Cluster(c, _) => {
                let all =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                within(limit, "PING", c.route_command(redis::cmd("PING"), all)).await?
            }
        };
        Ok(())
    }

    /// [`PubConn::ping`]; and with Sentinel, whether the sentinels still
    /// name this server the master (a demoted master says it is one for a
    /// while after a failover).
    async fn probe(&mut self, ctx: &Ctx, limit: Duration) -> Result<(), String> {
        self.ping(limit, ctx.sentinel()).await?;
        if let (Connector::Sentinel(sentinels), PubConn::Single(_, Some(addr))) = (&ctx.connector, &self) {
            match sentinels.master_addr(limit).await {
                Ok(master) if master != *addr => {
                    return Err(format!("the sentinels name {}:{} the master now", master.0, master.1))
                }
                Ok(_) => {}
                // the master answers: the sentinels' trouble is not the node's
                Err(e) => tracing::debug!(error = %e, "the sentinels did not answer"),
            }
        }
        Ok(())
    }

    /// Publishes a batch: one pipeline per channel (a cluster's pipelines
    /// must stay within one slot), all at once.
    async fn publish(&mut self, batch: &[(Arc<str>, Vec<u8>)], sharded: bool) -> redis::RedisResult<()> {
        let command = if sharded { "SPUBLISH" } else { "PUBLISH" };
        match self {
            PubConn::Single(c, _) => {
                let mut pipe = redis::pipe();
                for (channel, data) in batch {
                    pipe.cmd(command).arg(&**channel).arg(data).ignore();
                }
                pipe.query_async::<()>(c).await
            }
            PubConn::Cluster(c, slots) => {
                // one pipeline per master (a channel of a slot it does not
                // serve is refused with MOVED: the connection is made
                // again, with the new map)
                let mut pipes: Vec<((&str, u16), redis::Pipeline, usize)> = Vec::new();
                for (channel, data) in batch {
                    let Some(master) = slots.master(channel) else {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::ClusterConnectionNotFound,
                            "a slot without a master",
                        )));
                    };
                    let i = match pipes.iter().position(|(m, _, _)| *m == master) {
                        Some(i) => i,
                        None => {
                            pipes.push((master, redis::pipe(), 0));
                            pipes.len() - 1
                        }
                    };
                    pipes[i].1.cmd(command).arg(&**channel).arg(data);
                    pipes[i].2 += 1;
                }
                let sends = pipes.into_iter().map(|((host, port), pipe, n)| {
                    let mut c = c.clone();
                    let to = SingleNodeRoutingInfo::ByAddress { host: host.to_owned(), port };
                    async move {
                        for reply in c.route_pipeline(pipe, 0, n, to).await? {
                            if let redis::Value::ServerError(e) = reply {
                                return Err(e.into());
                            }
                        }
                        Ok(())
                    }
                });
                futures_util::future::join_all(sends).await.into_iter().collect()
            }
        }
    }
}

/// Publishes queued messages and reconnects when Redis fails; ends when
/// the adapter (the PubSub) is dropped.
pub(crate) async fn run(ctx: Arc<Ctx>, first: PubConn, queue: Arc<Queue>, pubsub: WeakPubSub) {
    let config = &ctx.config;
    let deadline = config.deadline.max(Duration::from_millis(1));
    let keepalive = config.keepalive.max(Duration::from_millis(10));
    let mut conn = Some(first);
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    let mut failed = false;
    let mut probed = Instant::now();
    loop {
        let Some(c) = conn.as_mut() else {
            // Redis is unreachable: what waited past the deadline goes
            queue.expire(deadline);
            if queue.is_closed() {
                return;
            }
            match PubConn::open(&ctx).await {
                Ok(c) => {
                    conn = Some(c);
                    probed = Instant::now();
                    add(&ctx.stats.reconnects, 1);
                    tracing::info!("redis publisher reconnected");
                    if std::mem::take(&mut failed) {
                        if let Some(pubsub) = pubsub.upgrade() {
                            pubsub.notify_reconnected();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis unreachable: retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(config.reconnect_every) => {}
                        _ = wait_closed(&queue) => return,
                    }
                }
            }
            continue;
        };
        // work, and a ping every keepalive period, busy or not
        if queue.is_empty() {
            let _ = tokio::time::timeout_at(probed + keepalive, queue.ready.notified()).await;
        }
        if probed.elapsed() >= keepalive {
            probed = Instant::now();
            if let Err(e) = c.probe(&ctx, deadline).await {
                tracing::warn!(error = %e, "redis publisher connection lost");
                (conn, failed) = (None, true);
                // the subscriber follows a master that moved
                ctx.moved.send_modify(|n| *n += 1);
                continue;
            }
        }
        queue.take(deadline, &mut batch, &mut flushes);
        if queue.is_closed() {
            return;
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let started = Instant::now();
            let sent = tokio::time::timeout(deadline, c.publish(&batch, ctx.sharded_commands)).await;
            batch.clear();
            match sent {
                Ok(Ok(())) => {
                    ctx.stats.publish_took(started.elapsed());
                    add(&ctx.stats.published, n);
                }
                Ok(Err(e)) => {
                    // unconfirmed: counted as dropped (at most once)
                    add(&ctx.stats.dropped, n);
                    tracing::warn!(error = %e, "redis publish failed; reconnecting");
                    (conn, failed) = (None, true);
                }
                Err(_) => {
                    add(&ctx.stats.dropped, n);
                    tracing::warn!("redis did not answer a publish within the deadline; reconnecting");
                    (conn, failed) = (None, true);
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn wait_closed(queue: &Queue) {
    let mut closed = queue.closed.subscribe();
    let _ = closed.wait_for(|c| *c).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_s() {
        // from the Redis Cluster specification and `CLUSTER KEYSLOT`
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // an empty tag is no tag: the whole name counts
        assert_ne!(slot(b"{}x"), slot(b"x"));
    }
}
