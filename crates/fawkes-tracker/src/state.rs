//! The observed-remove set with dotted version vectors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::{dominates_or_equal, lowerbound, upperbound};

/// A replica: a node's name and the version of its tracker (a restarted node
/// is a new replica).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// The version of this run of the node's tracker.
    pub vsn: u64,
}

impl ReplicaId {
    /// A replica id.
    pub fn new(name: impl Into<String>, vsn: u64) -> ReplicaId {
        ReplicaId { name: name.into(), vsn }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.vsn)
    }
}

/// A dot: the replica that made a join, and its clock then.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// The replica.
    pub replica: ReplicaId,
    /// Its clock.
    pub clock: u64,
}

/// Replica → highest contiguous clock seen.
pub type Context = BTreeMap<ReplicaId, u64>;
/// Replica → clocks seen beyond the contiguous ones.
pub type Clouds = BTreeMap<ReplicaId, BTreeSet<u64>>;

/// Whether a replica is reachable. Presences of a down replica stay in the
/// state but are hidden from lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaStatus {
    /// Reachable.
    Up,
    /// Not heard from within the down period.
    Down,
}

/// A tracked presence as carried in a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<P, M> {
    /// Who is present (a channel of some socket).
    pub pid: P,
    /// The topic.
    pub topic: String,
    /// The key (typically a user id).
    pub key: String,
    /// The presence's data.
    pub meta: M,
}

/// A presence as reported by queries, joins and leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element<P, M> {
    /// The topic.
    pub topic: String,
    /// Who is present.
    pub pid: P,
    /// The key.
    pub key: String,
    /// The data.
    pub meta: M,
    /// The dot of the join.
    pub tag: Tag,
}

/// Changes to send to other replicas, or an extracted state: both merge the
/// same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta<P, M> {
    /// The replica that made it.
    pub replica: ReplicaId,
    /// The causal context (empty for deltas; the sender's for extracted states).
    pub context: Context,
    /// Dots seen: joins made and removals observed.
    pub clouds: Clouds,
    /// Presences added, by dot.
    pub values: BTreeMap<Tag, Entry<P, M>>,
    /// The sender's clocks when the delta started and ended.
    pub range: (Context, Context),
}

/// Two deltas whose clock ranges do not touch cannot be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotContiguous;

impl fmt::Display for NotContiguous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deltas' clock ranges are not contiguous")
    }
}

impl std::error::Error for NotContiguous {}

fn in_causal(context: &Context, clouds: &Clouds, tag: &Tag) -> bool {
    context.get(&tag.replica).is_some_and(|&c| c >= tag.clock)
        || clouds.get(&tag.replica).is_some_and(|c| c.contains(&tag.clock))
}

fn put_tag(clouds: &mut Clouds, tag: &Tag) {
    clouds.entry(tag.replica.clone()).or_default().insert(tag.clock);
}

fn delete_tag(clouds: &mut Clouds, tag: &Tag) {
    if let Some(c) = clouds.get_mut(&tag.replica) {
        c.remove(&tag.clock);
    }
}

impl<P: Ord + Clone, M: Clone> Delta<P, M> {
    fn empty(replica: ReplicaId, ctx: Context) -> Delta<P, M> {
        Delta {
            replica,
            context: Context::new(),
            clouds: Clouds::new(),
            values: BTreeMap::new(),
            range: (ctx.clone(), ctx),
        }
    }

    /// Its size: presences plus dots.
    pub fn size(&self) -> usize {
        self.values.len() + self.clouds.values().map(BTreeSet::len).sum::<usize>()
    }

    /// True when it records no change.
    pub fn is_empty(&self) -> bool {
        self.clouds.values().all(BTreeSet::is_empty)
    }

    /// What of this delta a replica with `remote_context` can use: only
    /// replicas it knows, and nothing of its own.
    pub fn extract(&self, remote: &ReplicaId, remote_context: &Context) -> Delta<P, M> {
        let known = |r: &ReplicaId| remote_context.contains_key(r);
        Delta {
            replica: self.replica.clone(),
            context: self.context.clone(),
            clouds: self.clouds.iter().filter(|(r, _)| known(r)).map(|(r, c)| (r.clone(), c.clone())).collect(),
            values: self
                .values
                .iter()
                .filter(|(t, _)| t.replica != *remote && known(&t.replica))
                .map(|(t, e)| (t.clone(), e.clone()))
                .collect(),
            range: (
                self.range.0.iter().filter(|(r, _)| known(r)).map(|(r, c)| (r.clone(), *c)).collect(),
                self.range.1.iter().filter(|(r, _)| known(r)).map(|(r, c)| (r.clone(), *c)).collect(),
            ),
        }
    }

    /// Merges two deltas into one, if their clock ranges touch or overlap.
    ///
    /// # Errors
    ///
    /// [`NotContiguous`] when one ends before the other starts.
    pub fn merge(&self, other: &Delta<P, M>) -> Result<Delta<P, M>, NotContiguous> {
        if !(dominates_or_equal(&self.range.1, &other.range.0) && dominates_or_equal(&other.range.1, &self.range.0)) {
            return Err(NotContiguous);
        }
        let mut clouds = self.clouds.clone();
        for (r, cloud) in &other.clouds {
            clouds.entry(r.clone()).or_default().extend(cloud.iter().copied());
        }
        let mut values: BTreeMap<Tag, Entry<P, M>> = self
            .values
            .iter()
            .filter(|(tag, _)| other.values.contains_key(*tag) || !in_causal(&other.context, &other.clouds, tag))
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        for (tag, e) in &other.values {
            if !self.values.contains_key(tag) && !in_causal(&self.context, &self.clouds, tag) {
                values.insert(tag.clone(), e.clone());
            }
        }
        Ok(Delta {
            replica: self.replica.clone(),
            context: self.context.clone(),
            clouds,
            values,
            range: (lowerbound(&self.range.0, &other.range.0), upperbound(&self.range.1, &other.range.1)),
        })
    }

    fn remove_replica(&mut self, replica: &ReplicaId) {
        self.range.0.remove(replica);
        self.range.1.remove(replica);
        self.clouds.remove(replica);
        self.values.retain(|t, _| t.replica != *replica);
    }
}

/// The presences of one topic: (pid, key) → (meta, tag).
type TopicValues<P, M> = BTreeMap<(P, String), (M, Tag)>;

/// The presences by dot: replica → clock → (topic, pid, key). Lets a merge
/// find the removals a delta carries by looking up its dots, instead of
/// scanning every presence.
type Dots<P> = BTreeMap<ReplicaId, BTreeMap<u64, (String, P, String)>>;

/// The presences that joined and those that left, as a merge reports them.
pub type Changes<P, M> = (Vec<Element<P, M>>, Vec<Element<P, M>>);

/// One replica of the presence set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State<P, M> {
    replica: ReplicaId,
    context: Context,
    clouds: Clouds,
    /// topic → (pid, key) → (meta, tag)
    values: BTreeMap<String, TopicValues<P, M>>,
    pids: BTreeMap<P, BTreeSet<(String, String)>>,
    dots: Dots<P>,
    replicas: BTreeMap<ReplicaId, ReplicaStatus>,
    delta: Delta<P, M>,
}

impl<P: Ord + Clone, M: Clone> State<P, M> {
    /// A new, empty replica.
    pub fn new(replica: ReplicaId) -> State<P, M> {
        let context: Context = [(replica.clone(), 0)].into_iter().collect();
        let delta = Delta::empty(replica.clone(), context.clone());
        State {
            replicas: [(replica.clone(), ReplicaStatus::Up)].into_iter().collect(),
            replica,
            context,
            clouds: Clouds::new(),
            values: BTreeMap::new(),
            pids: BTreeMap::new(),
            dots: Dots::new(),
            delta,
        }
    }

    /// This replica.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    /// The causal context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The clouds.
    pub fn clouds(&self) -> &Clouds {
        &self.clouds
    }

    /// This replica and its context (what a heartbeat advertises).
    pub fn clocks(&self) -> (&ReplicaId, &Context) {
        (&self.replica, &self.context)
    }

    /// The replicas known and their status.
    pub fn replicas(&self) -> &BTreeMap<ReplicaId, ReplicaStatus> {
        &self.replicas
    }

    /// The changes since the last [`State::reset_delta`].
    pub fn delta(&self) -> &Delta<P, M> {
        &self.delta
    }

    /// True when the delta records a change.
    pub fn has_delta(&self) -> bool {
        !self.delta.is_empty()
    }

    /// Starts a new delta from the current clock.
    pub fn reset_delta(&mut self) {
        let ctx: Context = self.context.get(&self.replica).map(|&c| (self.replica.clone(), c)).into_iter().collect();
        self.delta = Delta::empty(self.replica.clone(), ctx);
    }

    fn clock(&self) -> u64 {
        self.context.get(&self.replica).copied().unwrap_or(0)
    }

    fn put_context(&mut self, ctx: Context) {
        let mine = ctx.get(&self.replica).copied().unwrap_or(0);
        self.context = ctx;
        self.delta.range.1.insert(self.replica.clone(), mine);
    }

    fn bump_clock(&mut self) -> Tag {
        let tag = Tag { replica: self.replica.clone(), clock: self.clock() + 1 };
        let mut ctx = std::mem::take(&mut self.context);
        ctx.insert(self.replica.clone(), tag.clock);
        put_tag(&mut self.clouds, &tag);
        put_tag(&mut self.delta.clouds, &tag);
        self.put_context(ctx);
        tag
    }

    fn insert_value(&mut self, pid: P, topic: String, key: String, meta: M, tag: Tag) {
        self.pids.entry(pid.clone()).or_default().insert((topic.clone(), key.clone()));
        self.dots.entry(tag.replica.clone()).or_default().insert(tag.clock, (topic.clone(), pid.clone(), key.clone()));
        let replaced = self.values.entry(topic).or_default().insert((pid, key), (meta, tag));
        if let Some((_, old)) = replaced {
            self.remove_dot(&old);
        }
    }

    fn remove_dot(&mut self, tag: &Tag) {
        if let Some(by_clock) = self.dots.get_mut(&tag.replica) {
            by_clock.remove(&tag.clock);
            if by_clock.is_empty() {
                self.dots.remove(&tag.replica);
            }
        }
    }

    fn remove_value(&mut self, pid: &P, topic: &str, key: &str) -> Option<(M, Tag)> {
        let by_topic = self.values.get_mut(topic)?;
        let removed = by_topic.remove(&(pid.clone(), key.to_owned()))?;
        if by_topic.is_empty() {
            self.values.remove(topic);
        }
        self.remove_dot(&removed.1);
        if let Some(set) = self.pids.get_mut(pid) {
            set.remove(&(topic.to_owned(), key.to_owned()));
            if set.is_empty() {
                self.pids.remove(pid);
            }
        }
        Some(removed)
    }

    fn remove_delta_tag(&mut self, tag: &Tag) {
        put_tag(&mut self.delta.clouds, tag);
        self.delta.values.remove(tag);
    }

    /// Adds a presence; `None` (and no change) when `(pid, topic, key)` is
    /// already tracked.
    pub fn join(&mut self, pid: P, topic: &str, key: &str, meta: M) -> Option<Tag> {
        if self.get_by_pid(&pid, topic, key).is_some() {
            return None;
        }
        let tag = self.bump_clock();
        self.delta.values.insert(
            tag.clone(),
            Entry { pid: pid.clone(), topic: topic.to_owned(), key: key.to_owned(), meta: meta.clone() },
        );
        self.insert_value(pid, topic.to_owned(), key.to_owned(), meta, tag.clone());
        Some(tag)
    }

    /// Removes a presence; returns it, or `None` if it was not tracked.
    pub fn leave(&mut self, pid: &P, topic: &str, key: &str) -> Option<Element<P, M>> {
        let (meta, tag) = self.remove_value(pid, topic, key)?;
        delete_tag(&mut self.clouds, &tag);
        self.remove_delta_tag(&tag);
        self.bump_clock();
        Some(Element { topic: topic.to_owned(), pid: pid.clone(), key: key.to_owned(), meta, tag })
    }

    /// Removes every presence of `pid`; returns them.
    pub fn leave_pid(&mut self, pid: &P) -> Vec<Element<P, M>> {
        let tracked: Vec<(String, String)> =
            self.pids.get(pid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        tracked.iter().filter_map(|(topic, key)| self.leave(pid, topic, key)).collect()
    }

    /// Replaces a presence's meta: a leave and a join in one step. Returns
    /// the old presence and the new tag, or `None` if it was not tracked.
    pub fn leave_join(&mut self, pid: &P, topic: &str, key: &str, meta: M) -> Option<(Element<P, M>, Tag)> {
        let (old_meta, old_tag) = self.remove_value(pid, topic, key)?;
        delete_tag(&mut self.clouds, &old_tag);
        self.remove_delta_tag(&old_tag);
        self.bump_clock();
        let tag = self.bump_clock();
        self.delta.values.insert(
            tag.clone(),
            Entry { pid: pid.clone(), topic: topic.to_owned(), key: key.to_owned(), meta: meta.clone() },
        );
        self.insert_value(pid.clone(), topic.to_owned(), key.to_owned(), meta, tag.clone());
        Some((
            Element { topic: topic.to_owned(), pid: pid.clone(), key: key.to_owned(), meta: old_meta, tag: old_tag },
            tag,
        ))
    }

    fn is_up(&self, r: &ReplicaId) -> bool {
        self.replicas.get(r) != Some(&ReplicaStatus::Down)
    }

    fn element(topic: &str, pid: &P, key: &str, meta: &M, tag: &Tag) -> Element<P, M> {
        Element { topic: topic.to_owned(), pid: pid.clone(), key: key.to_owned(), meta: meta.clone(), tag: tag.clone() }
    }

    /// How many topics have a presence of an up replica, and how many such
    /// presences there are, without copying them.
    pub fn counts(&self) -> (usize, usize) {
        let mut topics = 0;
        let mut presences = 0;
        for m in self.values.values() {
            let n = m.values().filter(|(_, tag)| self.is_up(&tag.replica)).count();
            if n > 0 {
                topics += 1;
                presences += n;
            }
        }
        (topics, presences)
    }

    /// Every presence of an up replica, ordered by topic, pid and key.
    pub fn online_list(&self) -> Vec<Element<P, M>> {
        self.values
            .iter()
            .flat_map(|(topic, m)| m.iter().map(move |((pid, key), (meta, tag))| (topic, pid, key, meta, tag)))
            .filter(|(.., tag)| self.is_up(&tag.replica))
            .map(|(topic, pid, key, meta, tag)| Self::element(topic, pid, key, meta, tag))
            .collect()
    }

    /// The presences of a topic (up replicas only), ordered by pid and key.
    pub fn get_by_topic(&self, topic: &str) -> Vec<Element<P, M>> {
        self.values
            .get(topic)
            .map(|m| {
                m.iter()
                    .filter(|(_, (_, tag))| self.is_up(&tag.replica))
                    .map(|((pid, key), (meta, tag))| Self::element(topic, pid, key, meta, tag))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `(pid, meta)` of every presence under `key` in `topic` (up
    /// replicas only), ordered by pid.
    pub fn get_by_key(&self, topic: &str, key: &str) -> Vec<(P, M)> {
        self.values
            .get(topic)
            .map(|m| {
                m.iter()
                    .filter(|((_, k), (_, tag))| k == key && self.is_up(&tag.replica))
                    .map(|((pid, _), (meta, _))| (pid.clone(), meta.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One presence.
    pub fn get_by_pid(&self, pid: &P, topic: &str, key: &str) -> Option<Element<P, M>> {
        let (meta, tag) = self.values.get(topic)?.get(&(pid.clone(), key.to_owned()))?;
        Some(Self::element(topic, pid, key, meta, tag))
    }

    /// Every presence of `pid`.
    pub fn get_by_pid_all(&self, pid: &P) -> Vec<Element<P, M>> {
        self.pids
            .get(pid)
            .map(|set| set.iter().filter_map(|(topic, key)| self.get_by_pid(pid, topic, key)).collect())
            .unwrap_or_default()
    }

    /// True when the presence with this dot is held (whatever its
    /// replica's status).
    pub fn has_dot(&self, tag: &Tag) -> bool {
        self.dots.get(&tag.replica).is_some_and(|by_clock| by_clock.contains_key(&tag.clock))
    }

    /// Every `(topic, key)` tracked for `pid`, for tests and introspection.
    pub fn pid_index(&self) -> Vec<(P, String, String)> {
        self.pids
            .iter()
            .flat_map(|(pid, set)| set.iter().map(move |(t, k)| (pid.clone(), t.clone(), k.clone())))
            .collect()
    }

    /// Everything a replica with `remote_context` can use of this state:
    /// replicas it knows, nothing of its own.
    pub fn extract(&self, remote: &ReplicaId, remote_context: &Context) -> Delta<P, M> {
        let known = |r: &ReplicaId| remote_context.contains_key(r);
        let mut values = BTreeMap::new();
        for (topic, m) in &self.values {
            for ((pid, key), (meta, tag)) in m {
                if tag.replica != *remote && known(&tag.replica) {
                    values.insert(
                        tag.clone(),
                        Entry { pid: pid.clone(), topic: topic.clone(), key: key.clone(), meta: meta.clone() },
                    );
                }
            }
        }
        Delta {
            replica: self.replica.clone(),
            context: self.context.iter().filter(|(r, _)| known(r)).map(|(r, c)| (r.clone(), *c)).collect(),
            clouds: self.clouds.iter().filter(|(r, _)| known(r)).map(|(r, c)| (r.clone(), c.clone())).collect(),
            values,
            range: (Context::new(), Context::new()),
        }
    }

    /// Merges a delta or an extracted state; returns the presences that
    /// joined and left here as a result. Merging the same thing twice
    /// changes nothing the second time.
    pub fn merge(&mut self, remote: &Delta<P, M>) -> Changes<P, M> {
        // joins: values of replicas we know, with dots we have not seen
        let joins: Vec<(Tag, Entry<P, M>)> = remote
            .values
            .iter()
            .filter(|(tag, _)| self.context.contains_key(&tag.replica) && !in_causal(&self.context, &self.clouds, tag))
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        // clouds: the union, over replicas we know
        let mut clouds = std::mem::take(&mut self.clouds);
        for (r, cloud) in &remote.clouds {
            if self.context.contains_key(r) {
                clouds.entry(r.clone()).or_default().extend(cloud.iter().copied());
            }
        }
        // observed removes: values of other replicas whose dot the remote
        // has seen but no longer holds. Found through the dot index: the
        // remote's context covers clocks up to a bound (a range of the
        // index), its clouds name single dots (lookups), so a delta costs
        // what it carries rather than a scan of every presence.
        let mut removed = Vec::new();
        for (r, by_clock) in &self.dots {
            if *r == self.replica {
                continue;
            }
            let upto = remote.context.get(r).copied().unwrap_or(0);
            let mut probe = Tag { replica: r.clone(), clock: 0 };
            let covered = by_clock.range(..=upto);
            let clouded = remote
                .clouds
                .get(r)
                .into_iter()
                .flat_map(|cloud| cloud.range(upto + 1..))
                .filter_map(|clock| by_clock.get_key_value(clock));
            for (&clock, (topic, pid, key)) in covered.chain(clouded) {
                probe.clock = clock;
                if remote.values.contains_key(&probe) {
                    continue;
                }
                if let Some((meta, tag)) = self.values.get(topic).and_then(|m| m.get(&(pid.clone(), key.clone()))) {
                    removed.push(Self::element(topic, pid, key, meta, tag));
                }
            }
        }
        removed.sort_by(|a, b| (&a.topic, &a.pid, &a.key).cmp(&(&b.topic, &b.pid, &b.key)));
        // The removed dots stay in the clouds (Phoenix drops them): a dot
        // seen stays seen, so a join delivered again later, out of order,
        // is not taken for a new one. Compaction folds them away.
        for el in &removed {
            self.remove_value(&el.pid, &el.topic, &el.key);
            self.remove_delta_tag(&el.tag);
        }
        let mut joined = Vec::with_capacity(joins.len());
        for (tag, e) in joins {
            // One (topic, pid, key) holds one presence. When deltas arrive
            // out of order, an older join of the same presence can come after
            // a newer one: the newer (higher clock of the same replica) wins,
            // and a replaced presence is reported as a leave.
            if let Some(old) = self.get_by_pid(&e.pid, &e.topic, &e.key) {
                if old.tag.replica == tag.replica && old.tag.clock > tag.clock {
                    continue;
                }
                self.remove_value(&old.pid, &old.topic, &old.key);
                removed.push(old);
            }
            joined.push(Element {
                topic: e.topic.clone(),
                pid: e.pid.clone(),
                key: e.key.clone(),
                meta: e.meta.clone(),
                tag: tag.clone(),
            });
            self.insert_value(e.pid, e.topic, e.key, e.meta, tag);
        }
        // This replica's own clock is its own: a remote's idea of it is
        // never taken (a bad message could otherwise push it to the end of
        // the clock's range).
        let known_remote: Context = remote
            .context
            .iter()
            .filter(|(r, _)| self.context.contains_key(*r) && **r != self.replica)
            .map(|(r, c)| (r.clone(), *c))
            .collect();
        let ctx = upperbound(&self.context, &known_remote);
        self.clouds = clouds;
        self.put_context(ctx);
        self.compact();
        (joined, removed)
    }

    /// Marks a replica up; returns its presences, which are visible again.
    pub fn replica_up(&mut self, replica: &ReplicaId) -> Vec<Element<P, M>> {
        self.context.entry(replica.clone()).or_insert(0);
        self.replicas.insert(replica.clone(), ReplicaStatus::Up);
        self.replica_users(replica)
    }

    /// Marks a replica down; returns its presences, which are hidden now.
    pub fn replica_down(&mut self, replica: &ReplicaId) -> Vec<Element<P, M>> {
        self.replicas.insert(replica.clone(), ReplicaStatus::Down);
        self.replica_users(replica)
    }

    fn replica_users(&self, replica: &ReplicaId) -> Vec<Element<P, M>> {
        let mut users: Vec<Element<P, M>> = self
            .dots
            .get(replica)
            .into_iter()
            .flat_map(|by_clock| by_clock.values())
            .filter_map(|(topic, pid, key)| self.get_by_pid(pid, topic, key))
            .collect();
        users.sort_by(|a, b| (&a.topic, &a.pid, &a.key).cmp(&(&b.topic, &b.pid, &b.key)));
        users
    }

    /// Forgets a replica that is gone for good: its presences, context and
    /// dots.
    pub fn remove_down_replicas(&mut self, replica: &ReplicaId) {
        self.context.remove(replica);
        for el in self.replica_users(replica) {
            self.remove_value(&el.pid, &el.topic, &el.key);
        }
        self.clouds.remove(replica);
        self.replicas.remove(replica);
        self.delta.remove_replica(replica);
    }

    /// Folds contiguous dots of the clouds into the context.
    pub fn compact(&mut self) {
        let mut ctx = std::mem::take(&mut self.context);
        let clouds = std::mem::take(&mut self.clouds);
        let mut kept = Clouds::new();
        for (r, cloud) in clouds {
            let mut left = BTreeSet::new();
            for clock in cloud {
                match ctx.get(&r).copied() {
                    Some(c) if c + 1 == clock => {
                        ctx.insert(r.clone(), clock);
                    }
                    Some(c) if c >= clock => {}
                    None if clock == 1 => {
                        ctx.insert(r.clone(), clock);
                    }
                    _ => {
                        left.insert(clock);
                    }
                }
            }
            if !left.is_empty() {
                kept.insert(r, left);
            }
        }
        self.clouds = kept;
        self.put_context(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dot index holds exactly the presences' dots.
    fn index_matches<P: Ord + Clone + fmt::Debug, M: Clone>(s: &State<P, M>) {
        let mut rebuilt = Dots::new();
        for (topic, m) in &s.values {
            for ((pid, key), (_, tag)) in m {
                rebuilt
                    .entry(tag.replica.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(tag.clock, (topic.clone(), pid.clone(), key.clone()));
            }
        }
        assert_eq!(s.dots, rebuilt);
    }

    #[test]
    fn the_dot_index_follows_joins_leaves_updates_merges_and_permdowns() {
        let (ra, rb) = (ReplicaId::new("a", 1), ReplicaId::new("b", 1));
        let mut a: State<u32, u32> = State::new(ra.clone());
        let mut b: State<u32, u32> = State::new(rb.clone());
        a.replica_up(&rb);
        b.replica_up(&ra);
        for i in 0..20 {
            a.join(i, "t", &format!("k{}", i % 7), i);
            b.join(100 + i, "t", "k", i);
        }
        a.leave(&3, "t", "k3");
        a.leave_join(&4, "t", "k4", 44);
        a.leave_pid(&5);
        b.leave(&101, "t", "k");
        index_matches(&a);
        let (da, db) = (a.delta().clone(), b.delta().clone());
        a.merge(&db);
        b.merge(&da);
        index_matches(&a);
        index_matches(&b);
        a.reset_delta();
        b.reset_delta();
        b.leave(&102, "t", "k");
        b.leave_join(&103, "t", "k", 7);
        let (joined, left) = a.merge(&b.delta().clone());
        assert_eq!(left.iter().map(|e| e.pid).collect::<Vec<_>>(), vec![102, 103]);
        assert_eq!(joined.iter().map(|e| (e.pid, e.meta)).collect::<Vec<_>>(), vec![(103, 7)]);
        index_matches(&a);
        let full = b.extract(&ra, a.context());
        a.merge(&full);
        index_matches(&a);
        let held = Tag { replica: rb.clone(), clock: b.context()[&rb] };
        assert_eq!(a.has_dot(&held), a.get_by_pid_all(&103).iter().any(|e| e.tag == held));
        assert!(a.has_dot(&held));
        a.remove_down_replicas(&rb);
        index_matches(&a);
        assert!(!a.dots.contains_key(&rb));
        assert!(!a.has_dot(&held));
    }
}
