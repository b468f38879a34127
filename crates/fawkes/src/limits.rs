//! Token buckets and connection slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::RateLimit;

/// A token bucket, full at first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket { tokens: limit.burst, last: now }
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self, limit: &RateLimit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if limit.per_second > 0.0 {
            Err(Duration::from_secs_f64(((1.0 - self.tokens) / limit.per_second).max(0.001)))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

/// Takes from an optional limit's bucket, creating it on first use.
pub(crate) fn take(limit: &Option<RateLimit>, bucket: &mut Option<Bucket>, now: Instant) -> Result<(), Duration> {
    match limit {
        None => Ok(()),
        Some(l) => bucket.get_or_insert_with(|| Bucket::new(l, now)).take(l, now),
    }
}

/// A token bucket shared by every connection of one socket id.
pub(crate) type SharedBucket = Arc<Mutex<Option<Bucket>>>;

/// A connection's fan-out bucket: the socket id's shared one, or the
/// connection's own, allocated on first use (most connections never
/// broadcast from `handle_in`).
#[derive(Debug, Default)]
pub(crate) struct FanoutBucket(std::sync::OnceLock<SharedBucket>);

impl FanoutBucket {
    /// Locks the bucket (creating the connection's own on first use).
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Option<Bucket>> {
        self.0.get_or_init(SharedBucket::default).lock()
    }
}

/// Connection counts of one socket handler: in all, and per socket id, with
/// the fan-out bucket each socket id's connections share.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    total: AtomicUsize,
    by_id: Mutex<HashMap<String, (usize, SharedBucket)>>,
}

/// A connection's place in [`Slots`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: Option<String>,
    /// The bucket of client events that fan out to others: shared by every
    /// connection of the socket id on this node (a connection's own when it
    /// has no id, created on first use).
    pub(crate) fanout: FanoutBucket,
}

impl Slots {
    /// A slot, unless a limit is reached.
    pub(crate) fn acquire(self: &Arc<Self>, id: Option<&str>, max_total: usize, max_per_id: usize) -> Option<Slot> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let fanout = FanoutBucket::default();
        if let Some(id) = id {
            let mut by_id = self.by_id.lock();
            let (n, bucket) = by_id.entry(id.to_owned()).or_default();
            if *n >= max_per_id {
                drop(by_id);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
            let _ = fanout.0.set(bucket.clone());
        }
        Some(Slot { slots: self.clone(), id: id.map(str::to_owned), fanout })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(id) = &self.id {
            let mut by_id = self.slots.by_id.lock();
            if let Some((n, _)) = by_id.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    by_id.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_bursts_then_the_rate() {
        let limit = RateLimit::new(10.0, 3.0);
        let t0 = Instant::now();
        let mut b = Bucket::new(&limit, t0);
        assert!(b.take(&limit, t0).is_ok() && b.take(&limit, t0).is_ok() && b.take(&limit, t0).is_ok());
        let wait = b.take(&limit, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(b.take(&limit, t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn connections_of_one_id_share_their_fanout_bucket() {
        let slots = Arc::new(Slots::default());
        let limit = RateLimit::new(1.0, 2.0);
        let now = Instant::now();
        let a = slots.acquire(Some("u"), 10, 10).unwrap();
        let b = slots.acquire(Some("u"), 10, 10).unwrap();
        let other = slots.acquire(Some("v"), 10, 10).unwrap();
        assert!(take(&Some(limit), &mut a.fanout.lock(), now).is_ok());
        assert!(take(&Some(limit), &mut b.fanout.lock(), now).is_ok());
        assert!(take(&Some(limit), &mut a.fanout.lock(), now).is_err(), "the id's burst is spent");
        assert!(take(&Some(limit), &mut other.fanout.lock(), now).is_ok(), "another id has its own");
        let anonymous = slots.acquire(None, 10, 10).unwrap();
        assert!(take(&Some(limit), &mut anonymous.fanout.lock(), now).is_ok());
    }

    #[test]
    fn slots_count_in_all_and_per_id() {
        let slots = Arc::new(Slots::default());
        let a = slots.acquire(Some("u"), 3, 2).unwrap();
        let _b = slots.acquire(Some("u"), 3, 2).unwrap();
        assert!(slots.acquire(Some("u"), 3, 2).is_none());
        let _c = slots.acquire(None, 3, 2).unwrap();
        assert!(slots.acquire(None, 3, 2).is_none());
        drop(a);
        assert!(slots.acquire(Some("u"), 3, 2).is_some());
    }
}
