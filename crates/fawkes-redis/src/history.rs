//! Topic history shared by every node, on Redis Streams.
//!
//! A broadcast on a topic with history is appended by one Lua script that
//! takes the topic's next offset (a counter in a hash beside the stream,
//! with the topic's epoch), adds the message to the topic's stream under
//! the id `<offset>-0` (trimmed to the history's count), and publishes it
//! with its position on the history channel (`<channel>:history`): Redis
//! runs scripts one at a time, so the stream's order, the positions and
//! the order in which every node receives the messages are the same. Each
//! node, this one included, delivers what it receives to its local
//! subscribers (the sender's own subscription left out on the sending node).
//! A rejoin reads the stream after its position. The keys expire when a
//! topic has been quiet for twice its history's age (at least 10 minutes).
//!
//! History topics need the single channel (not sharded mode): the history
//! channel is one more channel every node subscribes to, which Phoenix
//! nodes never see.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fawkes_pubsub::history::{self, HistoryConfig, Replay};
use fawkes_pubsub::{Broadcast, PubSub, RemoteMessage, SubscriberId, Target};
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::target::Connector;
use crate::{add, wire, within, Ctx, RedisStats};

/// What starts a message of the history channel.
pub(crate) const PREFIX: &[u8] = b"FWKH";

const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local n = redis.call('HINCRBY', KEYS[2], 'last', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], n .. '-0', 't', ARGV[7], 'w', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[4], 'FWKH' .. epoch .. '.' .. n .. '\n' .. ARGV[5] .. '\n' .. ARGV[1])
return n
";

const SINCE: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local last = redis.call('HGET', KEYS[2], 'last')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local after = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', '+')
return {epoch, last, first, after}
";

/// One broadcast waiting to be appended.
struct Job {
    topic: String,
    wire: Vec<u8>,
    header: String,
    max_messages: usize,
    ttl: Duration,
    queued: Instant,
}

/// The shared history of a cluster on Redis Streams (see the module's
/// documentation). Made by [`connect_cluster`](crate::connect_cluster) and
/// given to the endpoint with `Endpoint::set_shared_history`.
pub struct RedisHistory {
    jobs: mpsc::Sender<Job>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    ctx: Arc<Ctx>,
    channel: Arc<str>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory").field("channel", &self.channel).finish()
    }
}

/// The history channel of a PubSub channel.
pub(crate) fn channel_of(base: &str) -> String {
    format!("{base}:history")
}

fn keys(base: &str, topic: &str) -> (String, String) {
    (format!("{base}:h:{topic}"), format!("{base}:hm:{topic}"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn fresh_epoch() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    history::epoch_from(bytes)
}

impl RedisHistory {
    pub(crate) fn start(ctx: Arc<Ctx>) -> Arc<RedisHistory> {
        let (jobs, rx) = mpsc::channel(ctx.config.queue_limit.max(1));
        let channel: Arc<str> = Arc::from(channel_of(&ctx.config.channel));
        let history = Arc::new(RedisHistory { jobs, conn: tokio::sync::Mutex::new(None), ctx, channel });
        tokio::spawn(run(Arc::downgrade(&history), rx));
        history
    }

    /// The connection, made when there is none.
    async fn conn(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let limit = self.ctx.config.connect_timeout;
        if matches!(self.ctx.connector, Connector::Cluster { .. }) {
            return Err("topic history is not kept on a Redis Cluster".into());
        }
        let client = within(limit, "asking the sentinels", self.ctx.connector.client()).await?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(self.ctx.config.deadline));
        let conn = within(limit, "connecting", client.get_multiplexed_async_connection_with_config(&config)).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    async fn append(&self, job: Job) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let (stream, meta) = keys(&self.ctx.config.channel, &job.topic);
        let script = redis::Script::new(APPEND);
        let mut call = script.key(stream);
        call.key(meta)
            .arg(job.wire)
            .arg(job.max_messages.max(1))
            .arg(fresh_epoch())
            .arg(&*self.channel)
            .arg(job.header)
            .arg(u64::try_from(job.ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(now_ms());
        let _: i64 = within(self.ctx.config.deadline, "appending to a history", call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn read(&self, topic: &str, after: u64) -> Result<Value, String> {
        let mut conn = self.conn().await?;
        let (stream, meta) = keys(&self.ctx.config.channel, topic);
        let script = redis::Script::new(SINCE);
        let mut call = script.key(stream);
        call.key(meta).arg(after.saturating_add(1));
        let read = within(self.ctx.config.deadline, "reading a history", call.invoke_async(&mut conn)).await;
        if read.is_err() {
            self.forget().await;
        }
        read
    }
}

/// Appends queued broadcasts in order; drops (and counts) what waited past
/// the deadline. Ends with the history.
async fn run(history: std::sync::Weak<RedisHistory>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(h) = history.upgrade() else { return };
        if job.queued.elapsed() > h.ctx.config.deadline {
            add(&h.ctx.stats.expired, 1);
            add(&h.ctx.stats.dropped, 1);
            continue;
        }
        match h.append(job).await {
            Ok(()) => add(&h.ctx.stats.published, 1),
            Err(e) => {
                add(&h.ctx.stats.dropped, 1);
                tracing::warn!(error = %e, "a broadcast could not be appended to its topic's history: dropped");
                h.forget().await;
                tokio::time::sleep(h.ctx.config.reconnect_every.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Splits an entry id `<offset>-0`.
fn offset_of(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    id.split_once('-')?.0.parse().ok()
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Int(n) => Some(n.to_string()),
        v => bytes(v).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned),
    }
}

/// An `XRANGE` answer as (offset, time ms, broadcast).
fn entries(v: &Value, epoch: &str) -> Vec<(u64, u64, Broadcast)> {
    let Value::Array(list) = v else { return Vec::new() };
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let Value::Array(parts) = entry else { continue };
        let [id, Value::Array(fields)] = parts.as_slice() else { continue };
        let Some(offset) = bytes(id).and_then(offset_of) else { continue };
        let (mut t, mut w) = (0u64, None);
        for pair in fields.chunks(2) {
            match (pair.first().and_then(bytes), pair.get(1)) {
                (Some(b"t"), Some(v)) => t = text(v).and_then(|s| s.parse().ok()).unwrap_or(0),
                (Some(b"w"), Some(v)) => w = bytes(v),
                _ => {}
            }
        }
        let Some(Ok(msg)) = w.map(wire::decode) else { continue };
        out.push((offset, t, msg.broadcast.with_position(Some(history::position(epoch, offset)))));
    }
    out
}

impl fawkes_pubsub::history::SharedHistory for RedisHistory {
    fn append(&self, broadcast: Broadcast, except: Option<SubscriberId>, config: &HistoryConfig) -> Result<(), String> {
        let topic = broadcast.topic.clone();
        let msg = RemoteMessage { target: Target::Except(self.ctx.config.node_name.clone()), broadcast };
        let wire = wire::encode(&msg).map_err(|e| e.to_string())?;
        let header =
            format!("{}\n{}", self.ctx.config.node_name, except.map_or(String::new(), |id| id.to_raw().to_string()));
        let ttl = (config.max_age * 2).max(Duration::from_secs(600));
        let job = Job { topic, wire, header, max_messages: config.max_messages, ttl, queued: Instant::now() };
        self.jobs.try_send(job).map_err(|_| {
            add(&self.ctx.stats.dropped, 1);
            "the history's queue is full".to_owned()
        })
    }

    fn since<'a>(
        &'a self,
        topic: &'a str,
        since: &'a Json,
        config: &'a HistoryConfig,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Replay, String>> + Send + 'a>> {
        Box::pin(async move {
            let asked = since.as_str().and_then(history::parse_position).map(|(e, o)| (e.to_owned(), o));
            let after = match &asked {
                Some((_, o)) => *o,
                None => 0,
            };
            let read = self.read(topic, after).await?;
            let Value::Array(parts) = read else { return Err("an unexpected answer from Redis".into()) };
            let [epoch, last, first, later] = parts.as_slice() else {
                return Err("an unexpected answer from Redis".into());
            };
            let Some(epoch) = text(epoch) else {
                // nothing kept: the history expired, or never was
                return Ok(Replay::gap("epoch", since, Vec::new()));
            };
            let last: u64 = text(last).and_then(|s| s.parse().ok()).unwrap_or(0);
            let all = || async {
                let read = self.read(topic, 0).await?;
                let Value::Array(parts) = read else { return Err("an unexpected answer from Redis".to_owned()) };
                Ok::<_, String>(parts.get(3).map(|v| entries(v, &epoch)).unwrap_or_default())
            };
            let fresh = |items: Vec<(u64, u64, Broadcast)>| {
                let oldest = now_ms().saturating_sub(u64::try_from(config.max_age.as_millis()).unwrap_or(u64::MAX));
                let kept = items.len();
                let items: Vec<Broadcast> =
                    items.into_iter().filter(|(_, t, _)| *t >= oldest).map(|(_, _, b)| b).collect();
                (kept != items.len(), items)
            };
            let Some((asked_epoch, offset)) = asked else {
                let (_, items) = fresh(all().await?);
                return Ok(Replay::gap("invalid", since, items));
            };
            if asked_epoch != epoch {
                let (_, items) = fresh(all().await?);
                return Ok(Replay::gap("epoch", since, items));
            }
            if offset > last {
                let (_, items) = fresh(all().await?);
                return Ok(Replay::gap("invalid", since, items));
            }
            let first_offset = entries(first, &epoch).first().map_or(last + 1, |(o, _, _)| *o);
            let (aged, items) = fresh(entries(later, &epoch));
            if first_offset > offset + 1 || aged {
                return Ok(Replay::gap("expired", since, items));
            }
            Ok(Replay { gap: None, items })
        })
    }
}

/// Delivers a message of the history channel to the local subscribers.
pub(crate) fn deliver(pubsub: &PubSub, stats: &RedisStats, data: &[u8]) {
    let parsed = (|| {
        let rest = data.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(4, |b| *b == b'\n');
        let position = std::str::from_utf8(parts.next()?).ok()?;
        history::parse_position(position)?;
        let node = std::str::from_utf8(parts.next()?).ok()?;
        let except = std::str::from_utf8(parts.next()?).ok()?;
        let msg = wire::decode(parts.next()?).ok()?;
        let except = if node == pubsub.node_name() { except.parse().ok().map(SubscriberId::from_raw) } else { None };
        Some((msg.broadcast.with_position(Some(history::position_ref(position))), except))
    })();
    match parsed {
        Some((broadcast, except)) => {
            add(&stats.received, 1);
            match except {
                Some(id) => pubsub.local_broadcast_from(id, broadcast),
                None => pubsub.local_broadcast(broadcast),
            };
        }
        None => {
            add(&stats.undecodable, 1);
            tracing::warn!("dropping a message of the history channel that is not one");
        }
    }
}
