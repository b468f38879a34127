//! The local subscriber registry: topics sharded over read-write locks, each
//! topic's subscribers in a copy-on-write list so that a dispatch holds no
//! lock while it delivers.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use fawkes_protocol::{Broadcast, EncodeError, Frame, Vsn};
use parking_lot::RwLock;

use crate::{Adapter, Delivery, Dispatched, Inner, Subscriber, RECONNECTED_TOPIC};

const SHARDS: usize = 32;

/// Identifies one subscription, for `broadcast_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

impl SubscriberId {
    /// The id as a number, to carry through a transport that comes back to
    /// this node (a history appended through Redis and delivered on return).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// The id [`SubscriberId::to_raw`] gave: meaningful only on the node
    /// whose PubSub made it.
    pub fn from_raw(raw: u64) -> SubscriberId {
        SubscriberId(raw)
    }
}

#[derive(Clone)]
struct Entry {
    id: SubscriberId,
    sub: Arc<dyn Subscriber>,
}

type Topics = HashMap<Arc<str>, Arc<Vec<Entry>>>;

pub(crate) struct Registry {
    shards: Box<[RwLock<Topics>]>,
    next_id: AtomicU64,
    /// Told when a topic gets its first subscriber or loses its last.
    hooks: Option<Arc<dyn Adapter>>,
}

fn shard_of(topic: &str) -> usize {
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Registry {
    pub(crate) fn new(hooks: Option<Arc<dyn Adapter>>) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            hooks,
        }
    }

    /// The adapter to tell about `topic`'s first and last subscribers.
    fn hooks_for(&self, topic: &str) -> Option<&dyn Adapter> {
        self.hooks.as_deref().filter(|_| topic != RECONNECTED_TOPIC)
    }

    pub(crate) fn subscribe(&self, inner: &Arc<Inner>, topic: &str, sub: Arc<dyn Subscriber>) -> Subscription {
        let id = SubscriberId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let topic: Arc<str> = Arc::from(topic);
        let mut shard = self.shards[shard_of(&topic)].write();
        let list = shard.entry(topic.clone()).or_default();
        let first = list.is_empty();
        Arc::make_mut(list).push(Entry { id, sub });
        if first {
            // under the shard's lock: in order with the topic's last unsubscribe
            if let Some(hooks) = self.hooks_for(&topic) {
                hooks.topic_subscribed(&topic);
            }
        }
        Subscription { owner: Arc::downgrade(inner), topic, id }
    }

    fn unsubscribe(&self, topic: &str, id: SubscriberId) {
        self.unsubscribe_all(topic, &[id]);
    }

    /// Removes `ids` from `topic` under one write lock (one copy of the
    /// list at most, none if no dispatch holds it).
    ///
    /// The removed subscribers are dropped after the lock is released: a
    /// subscriber may own other subscriptions (a callback holding a
    /// connection that holds its own), whose drop unsubscribes in turn,
    /// perhaps on this very shard.
    fn unsubscribe_all(&self, topic: &str, ids: &[SubscriberId]) {
        let mut removed: Vec<Arc<dyn Subscriber>> = Vec::new();
        let mut shard = self.shards[shard_of(topic)].write();
        let Some(entry) = shard.get_mut(topic) else { return };
        let list = Arc::make_mut(entry);
        list.retain(|x| {
            let keep = !ids.contains(&x.id);
            if !keep {
                removed.push(x.sub.clone());
            }
            keep
        });
        if list.is_empty() {
            shard.remove(topic);
            if let Some(hooks) = self.hooks_for(topic) {
                hooks.topic_unsubscribed(topic);
            }
        } else if list.capacity() > 64 && list.len() < list.capacity() / 4 {
            list.shrink_to_fit();
        }
        drop(shard);
        drop(removed);
    }

    pub(crate) fn count(&self, topic: &str) -> usize {
        self.shards[shard_of(topic)].read().get(topic).map_or(0, |l| l.len())
    }

    /// The `limit` topics with the most subscribers, most first (ties by
    /// name), and the number of topics in all.
    pub(crate) fn top(&self, limit: usize) -> (Vec<(String, usize)>, usize) {
        let mut all: Vec<(usize, Arc<str>)> = Vec::new();
        for shard in self.shards.iter() {
            all.extend(shard.read().iter().map(|(t, l)| (l.len(), t.clone())));
        }
        let total = all.len();
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(limit);
        (all.into_iter().map(|(n, t)| (t.to_string(), n)).collect(), total)
    }

    pub(crate) fn dispatch(&self, msg: &Broadcast, from: Option<SubscriberId>) -> Dispatched {
        let Some(list) = self.shards[shard_of(&msg.topic)].read().get(msg.topic.as_str()).cloned() else {
            return Dispatched::default();
        };
        let mut frames = FrameCache::new(msg);
        let mut out = Dispatched::default();
        let mut gone = Vec::new();
        for entry in list.iter() {
            if Some(entry.id) == from {
                continue;
            }
            match entry.sub.deliver(msg, &mut frames) {
                Delivery::Delivered => out.delivered += 1,
                Delivery::Overflow => out.overflowed += 1,
                Delivery::Ignored => out.ignored += 1,
                Delivery::Gone => gone.push(entry.id),
            }
        }
        if !gone.is_empty() {
            // this dispatch's reference first, so the list is not copied
            drop(list);
            self.unsubscribe_all(&msg.topic, &gone);
        }
        out
    }
}

/// A live subscription; dropping it unsubscribes.
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    owner: Weak<Inner>,
    topic: Arc<str>,
    id: SubscriberId,
}

impl Subscription {
    /// The id to pass to `broadcast_from` to skip this subscription.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// The subscribed topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("topic", &self.topic).field("id", &self.id).finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.upgrade() {
            inner.registry.unsubscribe(&self.topic, self.id);
        }
    }
}

/// A broadcast's frames, encoded at most once per serializer during one
/// dispatch and shared by every subscriber that asks.
pub struct FrameCache<'a> {
    msg: &'a Broadcast,
    frames: [Option<Result<Frame, EncodeError>>; 2],
    derived: [Option<(&'static str, Frame)>; 2],
}

impl<'a> FrameCache<'a> {
    /// A cache for `msg`.
    pub fn new(msg: &'a Broadcast) -> FrameCache<'a> {
        FrameCache { msg, frames: [None, None], derived: [None, None] }
    }

    /// The broadcast encoded with `vsn`; `None` when it cannot be (for
    /// example a V2 payload that is not an object).
    pub fn frame(&mut self, vsn: Vsn) -> Option<&Frame> {
        let slot = &mut self.frames[match vsn {
            Vsn::V1 => 0,
            Vsn::V2 => 1,
        }];
        let msg = self.msg;
        slot.get_or_insert_with(|| vsn.encode_broadcast(msg)).as_ref().ok()
    }

    /// The broadcast encoded with `vsn`, then transformed by `derive` (for
    /// example compressed for a transport), once per dispatch and `kind`:
    /// the bytes are shared by every subscriber that asks for the same
    /// `kind`. One transformation per serializer is cached; a subscriber
    /// asking for another `kind` gets its own, correct, uncached one.
    pub fn derived(&mut self, vsn: Vsn, kind: &'static str, derive: impl FnOnce(&Frame) -> Bytes) -> Option<Frame> {
        let i = match vsn {
            Vsn::V1 => 0,
            Vsn::V2 => 1,
        };
        if let Some((k, frame)) = &self.derived[i] {
            if *k == kind {
                return Some(frame.clone());
            }
        }
        let frame = self.frame(vsn)?;
        let derived = Frame { opcode: frame.opcode, data: derive(frame) };
        self.derived[i] = Some((kind, derived.clone()));
        Some(derived)
    }
}

impl fmt::Debug for FrameCache<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCache").field("topic", &self.msg.topic).finish()
    }
}
