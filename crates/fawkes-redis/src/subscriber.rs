//! The receiving side: one subscription connection (one server's, or a
//! cluster's), pinged to prove it alive, following the set of channels the
//! node needs, made again after a failure.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fawkes_pubsub::{PubSub, WeakPubSub};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{watch, Notify};

use crate::channels::Channels;
use crate::target::Connector;
use crate::{add, within, Ctx, RedisStats};

type Ping = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How subscriptions are made and proven alive.
enum Sub {
    /// A connection of its own, in RESP2's subscribed state.
    Single(PubSubSink),
    /// A RESP3 cluster connection (pushes arrive through its push sender).
    Cluster(ClusterConnection),
}

/// A subscription connection and the channels it is subscribed to.
pub(crate) struct SubConn {
    sub: Sub,
    /// The messages of a single server's connection.
    stream: Option<PubSubStream>,
    /// Told when a cluster connection reports a disconnection.
    lost: Arc<Notify>,
    current: BTreeSet<Arc<str>>,
}

impl SubConn {
    /// Connects, proves the connection alive with a `PING` round trip, and
    /// subscribes to the channels the node needs now.
    pub(crate) async fn open(ctx: &Ctx, channels: &Channels, pubsub: WeakPubSub) -> Result<SubConn, String> {
        let limit = ctx.config.connect_timeout;
        let lost = Arc::new(Notify::new());
        let (sub, stream) = match &ctx.connector {
            Connector::Cluster { .. } => {
                let (stats, lost) = (ctx.stats.clone(), lost.clone());
                let push = move |push: PushInfo| -> Result<(), ()> {
                    match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            if let [_, Value::BulkString(data)] = push.data.as_slice() {
                                if let Some(pubsub) = pubsub.upgrade() {
                                    deliver(&pubsub, &stats, data);
                                }
                            }
                        }
                        PushKind::Disconnection => lost.notify_one(),
                        _ => {}
                    }
                    Ok(())
                };
                let client =
                    ctx.connector.cluster(limit, Some(push)).map_err(|e| crate::target::words(&e.to_string()))?;
                (Sub::Cluster(within(limit, "connecting", client.get_async_connection()).await?), None)
            }
            _ => {
                let client = within(limit, "asking the sentinels", ctx.connector.client()).await?;
                let (sink, stream) = within(limit, "connecting", client.get_async_pubsub()).await?.split();
                (Sub::Single(sink), Some(stream))
            }
        };
        let mut conn = SubConn { sub, stream, lost, current: BTreeSet::new() };
        conn.sub.ping(limit).await?;
        conn.follow(ctx, channels, limit).await?;
        Ok(conn)
    }

    /// Subscribes to the channels wanted now and unsubscribes from the
    /// others.
    async fn follow(&mut self, ctx: &Ctx, channels: &Channels, limit: Duration) -> Result<(), String> {
        let wanted = channels.wanted();
        let new: Vec<Arc<str>> = wanted.difference(&self.current).cloned().collect();
        let old: Vec<Arc<str>> = self.current.difference(&wanted).cloned().collect();
        let sharded = ctx.sharded_commands;
        if !new.is_empty() {
            within(limit, "SUBSCRIBE", self.sub.subscribe(&new, true, sharded)).await?;
        }
        if !old.is_empty() {
            within(limit, "UNSUBSCRIBE", self.sub.subscribe(&old, false, sharded)).await?;
        }
        ctx.stats.channels.store(wanted.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.current = wanted;
        Ok(())
    }

    /// Delivers what arrives until the connection fails or stays silent
    /// (`Some(why)`), or the PubSub is gone (`None`).
    async fn serve(mut self, ctx: &Ctx, channels: &Channels, pubsub: &WeakPubSub) -> Option<String> {
        let deadline = ctx.config.deadline.max(Duration::from_millis(1));
        let keepalive = ctx.config.keepalive.max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        let mut ping: Option<Ping> = None;
        let mut wanted = channels.watch();
        wanted.mark_changed();
        let mut stream = self.stream.take();
        let lost = self.lost.clone();
        let mut moved = ctx.moved.subscribe();
        loop {
            tokio::select! {
                msg = async {
                    match stream.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(msg) = msg else { return Some("redis closed the connection".into()) };
                    let pubsub = pubsub.upgrade()?;
                    deliver(&pubsub, &ctx.stats, msg.get_payload_bytes());
                }
                _ = lost.notified() => return Some("the connection to a cluster node was lost".into()),
                _ = moved.changed(), if ctx.sentinel() => return Some("the master moved".into()),
                done = async {
                    match ping.as_mut() {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                } => {
                    ping = None;
                    if let Err(e) = done {
                        return Some(e);
                    }
                }
                _ = tick.tick() => {
                    if ping.is_none() {
                        ping = Some(self.sub.ping_later(deadline));
                    }
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    if let Err(e) = self.follow(ctx, channels, deadline).await {
                        return Some(e);
                    }
                }
            }
        }
    }
}

impl Sub {
    async fn ping(&self, limit: Duration) -> Result<(), String> {
        self.ping_later(limit).await
    }

    /// A `PING` round trip (to every master of a cluster) within `limit`.
    fn ping_later(&self, limit: Duration) -> Ping {
        match self {
            Sub::Single(sink) => {
                let mut sink = sink.clone();
                Box::pin(async move { within(limit, "PING", sink.ping::<Value>()).await.map(drop) })
            }
            Sub::Cluster(conn) => {
                let mut conn = conn.clone();
                let all =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                Box::pin(
                    async move { within(limit, "PING", conn.route_command(redis::cmd("PING"), all)).await.map(drop) },
                )
            }
        }
    }

    async fn subscribe(&mut self, channels: &[Arc<str>], on: bool, sharded: bool) -> redis::RedisResult<()> {
        let names: Vec<&str> = channels.iter().map(|c| &**c).collect();
        match self {
            Sub::Single(sink) if on => sink.subscribe(names).await,
            Sub::Single(sink) => sink.unsubscribe(names).await,
            Sub::Cluster(conn) => {
                // one by one: the channels of one sharded command must
                // share a slot
                let each = names.into_iter().map(|name| {
                    let mut conn = conn.clone();
                    async move {
                        match (on, sharded) {
                            (true, true) => conn.ssubscribe(name).await,
                            (false, true) => conn.sunsubscribe(name).await,
                            (true, false) => conn.subscribe(name).await,
                            (false, false) => conn.unsubscribe(name).await,
                        }
                    }
                });
                futures_util::future::join_all(each).await.into_iter().collect()
            }
        }
    }
}

/// Delivers what other nodes publish, resubscribing after a failure; ends
/// when the PubSub is dropped.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    first: SubConn,
    channels: Arc<Channels>,
    pubsub: WeakPubSub,
    mut alive: watch::Receiver<()>,
) {
    let mut conn = Some(first);
    loop {
        let c = match conn.take() {
            Some(c) => c,
            None => {
                let retry = tokio::select! {
                    _ = alive.changed() => return,
                    r = SubConn::open(&ctx, &channels, pubsub.clone()) => r,
                };
                match retry {
                    Ok(c) => {
                        add(&ctx.stats.reconnects, 1);
                        tracing::info!("redis subscriber reconnected");
                        match pubsub.upgrade() {
                            Some(pubsub) => pubsub.notify_reconnected(),
                            None => return,
                        };
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis unreachable: retrying");
                        tokio::select! {
                            _ = alive.changed() => return,
                            _ = tokio::time::sleep(ctx.config.reconnect_every) => {}
                        }
                        continue;
                    }
                }
            }
        };
        tokio::select! {
            _ = alive.changed() => return,
            err = c.serve(&ctx, &channels, &pubsub) => {
                match err {
                    Some(e) => tracing::warn!(error = %e, "redis subscription lost; resubscribing"),
                    None => return,
                }
            }
        }
        ctx.stats.channels.store(0, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = alive.changed() => return,
            _ = tokio::time::sleep(ctx.config.reconnect_every) => {}
        }
    }
}

/// Hands a message from the channel to the local subscribers.
fn deliver(pubsub: &PubSub, stats: &RedisStats, data: &[u8]) {
    if data.starts_with(crate::history::PREFIX) {
        return crate::history::deliver(pubsub, stats, data);
    }
    crate::inbound::deliver(pubsub, data, stats);
}
