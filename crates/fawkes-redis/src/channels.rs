//! Which Redis channel a message goes to, and which channels a node
//! subscribes to: the one channel, or in sharded mode a channel per shard
//! of topics plus one per node.

use std::collections::BTreeSet;
use std::sync::Arc;

use fawkes_pubsub::{RemoteMessage, Target};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::RedisConfig;

pub(crate) struct Channels {
    /// The single channel; in sharded mode the prefix of every channel.
    base: Arc<str>,
    /// In sharded mode, the channel of each shard.
    shards: Vec<Arc<str>>,
    /// This node's channel in sharded mode (direct broadcasts).
    own: Arc<str>,
    /// Local topics per shard.
    topics: Mutex<Vec<u32>>,
    /// Bumped when a shard gains its first topic or loses its last.
    changed: watch::Sender<()>,
}

/// FNV-1a, 64 bits: the same on every node and every version.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Channels {
    pub(crate) fn new(config: &RedisConfig) -> Channels {
        let base: Arc<str> = Arc::from(config.channel.as_str());
        let shards = (0..config.shards).map(|k| Arc::from(format!("{base}:{k}"))).collect::<Vec<_>>();
        let own = Arc::from(Channels::node_channel(&base, &config.node_name));
        Channels { topics: Mutex::new(vec![0; shards.len()]), base, shards, own, changed: watch::channel(()).0 }
    }

    fn node_channel(base: &str, node: &str) -> String {
        format!("{base}:node:{node}")
    }

    fn sharded(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The shard of `topic`.
    pub(crate) fn shard_of(&self, topic: &str) -> Option<usize> {
        let n = u64::try_from(self.shards.len()).ok().filter(|n| *n > 0)?;
        usize::try_from(fnv1a(topic.as_bytes()) % n).ok()
    }

    /// Where `msg` is published.
    pub(crate) fn publish_channel(&self, msg: &RemoteMessage) -> Arc<str> {
        match (&msg.target, self.shard_of(&msg.broadcast.topic)) {
            (_, None) => self.base.clone(),
            (Target::Only(node), Some(_)) => Arc::from(Channels::node_channel(&self.base, node)),
            (Target::Except(_), Some(k)) => self.shards[k].clone(),
        }
    }

    /// The channels this node must be subscribed to now.
    pub(crate) fn wanted(&self) -> BTreeSet<Arc<str>> {
        if !self.sharded() {
            // and the history channel (see the history module)
            return BTreeSet::from([self.base.clone(), Arc::from(crate::history::channel_of(&self.base))]);
        }
        let topics = self.topics.lock();
        let mut wanted: BTreeSet<Arc<str>> =
            topics.iter().zip(&self.shards).filter(|(n, _)| **n > 0).map(|(_, c)| c.clone()).collect();
        wanted.insert(self.own.clone());
        wanted
    }

    /// Tells when [`Channels::wanted`] may have changed.
    pub(crate) fn watch(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    pub(crate) fn topic_added(&self, topic: &str) {
        let Some(k) = self.shard_of(topic) else { return };
        let mut topics = self.topics.lock();
        topics[k] += 1;
        if topics[k] == 1 {
            self.changed.send_replace(());
        }
    }

    pub(crate) fn topic_removed(&self, topic: &str) {
        let Some(k) = self.shard_of(topic) else { return };
        let mut topics = self.topics.lock();
        topics[k] = topics[k].saturating_sub(1);
        if topics[k] == 0 {
            self.changed.send_replace(());
        }
    }
}

#[cfg(test)]
mod tests {
    use fawkes_pubsub::{Broadcast, Payload};

    use super::*;

    fn msg(target: Target, topic: &str) -> RemoteMessage {
        RemoteMessage { target, broadcast: Broadcast::new(topic, "e", Payload::empty()) }
    }

    #[test]
    fn one_channel_by_default() {
        let c = Channels::new(&RedisConfig::new("redis://h", "a"));
        assert_eq!(&*c.publish_channel(&msg(Target::Except("a".into()), "room:1")), "phx:Fawkes.PubSub.Adapter");
        assert_eq!(&*c.publish_channel(&msg(Target::Only("b".into()), "room:1")), "phx:Fawkes.PubSub.Adapter");
        c.topic_added("room:1");
        let wanted: Vec<String> = c.wanted().into_iter().map(|c| c.to_string()).collect();
        // the channel, and the channel of topic histories
        assert_eq!(wanted, ["phx:Fawkes.PubSub.Adapter", "phx:Fawkes.PubSub.Adapter:history"]);
    }

    #[test]
    fn sharded_topics_follow_local_subscribers() {
        let mut config = RedisConfig::new("redis://h", "a");
        config.shards = 16;
        let c = Channels::new(&config);
        assert_eq!(
            c.wanted().into_iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["phx:Fawkes.PubSub.Adapter:node:a"]
        );
        let k = c.shard_of("room:1").unwrap();
        // the same hash on every node: FNV-1a of the topic
        assert_eq!(k, usize::try_from(fnv1a(b"room:1") % 16).unwrap());
        let shard = format!("phx:Fawkes.PubSub.Adapter:{k}");
        assert_eq!(&*c.publish_channel(&msg(Target::Except("a".into()), "room:1")), shard);
        assert_eq!(&*c.publish_channel(&msg(Target::Only("b".into()), "room:1")), "phx:Fawkes.PubSub.Adapter:node:b");
        let mut seen = c.watch();
        seen.mark_unchanged();
        c.topic_added("room:1");
        assert!(seen.has_changed().unwrap());
        assert!(c.wanted().iter().any(|w| **w == *shard));
        seen.mark_unchanged();
        // another topic of the same shard changes nothing
        let twin = (0..).map(|i| format!("room:{i}")).find(|t| t != "room:1" && c.shard_of(t) == Some(k)).unwrap();
        c.topic_added(&twin);
        c.topic_removed("room:1");
        assert!(!seen.has_changed().unwrap());
        c.topic_removed(&twin);
        assert!(seen.has_changed().unwrap());
        assert_eq!(c.wanted().len(), 1);
        // topics spread over the shards
        let used: BTreeSet<usize> = (0..200).filter_map(|i| c.shard_of(&format!("room:{i}"))).collect();
        assert_eq!(used.len(), 16);
    }
}
