//! The two bounded queues every connection uses:
//!
//! * the [`Outbox`]: everything on its way to the client (frames, and the
//!   control events that must stay in order with them), filled by channel
//!   tasks and PubSub dispatches, drained by the transport;
//! * a channel's [`Mailbox`]: everything on its way to one channel task.
//!
//! Both hold no memory while empty (the queue is taken whole on every drain),
//! and both are bounded: what happens when one is full is decided by the
//! caller and documented there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use fawkes_protocol::Frame;
use parking_lot::Mutex;

/// How a channel ended, as the session must tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// A normal stop: `phx_close`.
    Close,
    /// A crash: `phx_error`.
    Error,
    /// The join was refused or crashed: the reply said so, nothing more.
    Refused,
}

/// One item of a connection's outbox.
#[derive(Debug)]
pub(crate) enum Out {
    /// A frame for the client.
    Frame(Frame),
    /// A frame whose data is already compressed for permessage-deflate (a
    /// broadcast, compressed once for every subscriber that asks).
    Deflated(Frame),
    /// A channel task ended; the session frees the topic (if `instance` still
    /// owns it) and sends `phx_close`/`phx_error`.
    ChannelExit { topic: String, instance: u64, end: End },
    /// A `disconnect` broadcast on the socket's id: close the connection.
    Disconnect,
    /// The endpoint is shutting down: close the connection (1012).
    Shutdown,
}

/// Limits of an outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxLimits {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

/// The bytes queued for clients across every connection of an endpoint,
/// against a budget: when the total is over it, the endpoint closes the
/// connections with the largest queues first (see `Endpoint::outbound`).
#[derive(Debug)]
pub(crate) struct OutboundBudget {
    total: AtomicUsize,
    limit: AtomicUsize,
    /// Wakes the task that enforces the budget.
    pub(crate) over: tokio::sync::Notify,
}

impl OutboundBudget {
    pub(crate) fn new(limit: usize) -> OutboundBudget {
        OutboundBudget { total: AtomicUsize::new(0), limit: AtomicUsize::new(limit), over: tokio::sync::Notify::new() }
    }

    /// Bytes queued for clients now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The budget, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
        self.over.notify_one();
    }

    // Called with the outbox's lock held, so that an outbox's additions and
    // subtractions reach the total in order (it never goes below zero).
    fn add(&self, n: usize) {
        let total = self.total.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.limit() {
            self.over.notify_one();
        }
    }

    fn sub(&self, n: usize) {
        self.total.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for OutboundBudget {
    fn default() -> Self {
        OutboundBudget::new(usize::MAX)
    }
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<Out>,
    frames: usize,
    bytes: usize,
    /// Bytes the transport took from the queue but could not write yet
    /// (the client is slow to read): they count against the same limit.
    unwritten: usize,
    /// A `Disconnect` or `Shutdown` is queued.
    control: bool,
    overflowed: bool,
    closed: bool,
    /// The transport's waker, while it waits for the outbox.
    waker: Option<Waker>,
    /// Channel tasks wait for room (see [`Outbox::room_for_replies`]).
    room_waiters: bool,
}

/// Stores `cx`'s waker in `slot` unless the one there already wakes the
/// same task (the common case: no clone).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Result of a push into a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    Full,
    Closed,
}

/// A connection's outbound queue. One consumer (the transport) waits on it
/// with [`Outbox::poll_ready`]: a waker kept under the queue's lock rather
/// than a `Notify`, so that the wait is a poll, not a future to store.
pub(crate) struct Outbox {
    state: Mutex<OutState>,
    limits: OutboxLimits,
    /// Wakes channel tasks waiting for room when the transport drains.
    room: tokio::sync::Notify,
    /// The endpoint's budget across all connections.
    budget: Arc<OutboundBudget>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("limits", &self.limits).finish()
    }
}

impl Outbox {
    pub(crate) fn new(limits: OutboxLimits, budget: Arc<OutboundBudget>) -> Outbox {
        Outbox { state: Mutex::new(OutState::default()), limits, room: tokio::sync::Notify::new(), budget }
    }

    /// Bytes queued for the client and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        let s = self.state.lock();
        s.bytes + s.unwritten
    }

    /// True once the outbox overflowed (the connection is being closed).
    pub(crate) fn is_overflowed(&self) -> bool {
        self.state.lock().overflowed
    }

    /// The transport holds `n` bytes it took from the queue but could not
    /// write yet; they count against the outbox's byte limit.
    pub(crate) fn set_unwritten(&self, n: usize) {
        let mut s = self.state.lock();
        let old = std::mem::replace(&mut s.unwritten, n);
        if n > old {
            self.budget.add(n - old);
        } else {
            self.budget.sub(old - n);
        }
    }

    /// Ready when the outbox overflowed or a `Disconnect`/`Shutdown` is
    /// queued: what a transport stuck in a write to a slow client watches.
    pub(crate) fn poll_must_close(&self, cx: &Context<'_>) -> Poll<()> {
        let mut s = self.state.lock();
        if s.overflowed || s.control || s.closed {
            return Poll::Ready(());
        }
        register(&mut s.waker, cx);
        Poll::Pending
    }

    /// Queues a frame. When the queue is over its limits the frame is dropped
    /// and the outbox is marked overflowed: the transport then closes the
    /// connection (a slow consumer), rather than letting memory grow.
    pub(crate) fn push_frame(&self, frame: Frame) -> Pushed {
        self.push(frame, false)
    }

    /// Queues a frame already compressed for permessage-deflate.
    pub(crate) fn push_deflated(&self, frame: Frame) -> Pushed {
        self.push(frame, true)
    }

    fn push(&self, frame: Frame, deflated: bool) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        if s.overflowed {
            return Pushed::Full;
        }
        let len = frame.data.len();
        if s.frames >= self.limits.frames || s.bytes + s.unwritten + len > self.limits.bytes.max(len) {
            s.overflowed = true;
            let waker = s.waker.take();
            drop(s);
            wake(waker);
            return Pushed::Full;
        }
        s.frames += 1;
        s.bytes += len;
        s.queue.push_back(if deflated { Out::Deflated(frame) } else { Out::Frame(frame) });
        self.budget.add(len);
        let waker = s.waker.take();
        drop(s);
        wake(waker);
        Pushed::Queued
    }

    /// Marks the connection as a slow consumer without queueing anything.
    pub(crate) fn mark_overflow(&self) {
        let mut s = self.state.lock();
        s.overflowed = true;
        let waker = s.waker.take();
        drop(s);
        wake(waker);
    }

    /// Queues a control event; these are few (one per channel at most) and
    /// always accepted while the connection lives.
    pub(crate) fn push_control(&self, out: Out) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        s.control |= matches!(out, Out::Disconnect | Out::Shutdown);
        s.queue.push_back(out);
        let waker = s.waker.take();
        drop(s);
        wake(waker);
        Pushed::Queued
    }

    /// Takes everything queued. Returns the items and whether the outbox
    /// overflowed.
    pub(crate) fn drain(&self) -> (VecDeque<Out>, bool) {
        let mut s = self.state.lock();
        s.frames = 0;
        let bytes = std::mem::take(&mut s.bytes);
        self.budget.sub(bytes);
        s.control = false;
        let waiters = std::mem::take(&mut s.room_waiters);
        let taken = (std::mem::take(&mut s.queue), s.overflowed);
        drop(s);
        if waiters {
            self.room.notify_waiters();
        }
        taken
    }

    /// Waits while the outbox holds more than three quarters of its frames
    /// or half of its bytes. A channel
    /// calls it before handling a client's message, so that a client that
    /// pipelines many requests gets its replies at the pace it reads them
    /// (the channel slows down, its mailbox fills, the connection stops
    /// reading the client) instead of overflowing its own outbox. A client
    /// that stops reading is still caught by the write timeout.
    pub(crate) async fn room_for_replies(&self) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock();
                let frames_room = s.frames < self.limits.frames - self.limits.frames / 4;
                let bytes_room = s.bytes + s.unwritten < self.limits.bytes / 2;
                if s.closed || s.overflowed || (frames_room && bytes_room) {
                    return;
                }
                s.room_waiters = true;
            }
            notified.await;
        }
    }

    /// Ready when something is queued (or the outbox overflowed);
    /// otherwise the task is woken when that happens.
    pub(crate) fn poll_ready(&self, cx: &Context<'_>) -> Poll<()> {
        let mut s = self.state.lock();
        if !s.queue.is_empty() || s.overflowed {
            return Poll::Ready(());
        }
        register(&mut s.waker, cx);
        Poll::Pending
    }

    /// Waits until something is queued (or the outbox overflowed).
    #[cfg(test)]
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// Refuses every later push; producers see the connection as gone.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.queue.clear();
        s.frames = 0;
        let bytes = std::mem::take(&mut s.bytes) + std::mem::take(&mut s.unwritten);
        self.budget.sub(bytes);
        let waker = s.waker.take();
        drop(s);
        wake(waker);
        self.room.notify_waiters();
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

struct BoxState<T> {
    queue: VecDeque<T>,
    closed: bool,
    /// The channel task's waker, while it waits for an item.
    receiver: Option<Waker>,
    /// The waker of a producer waiting for room (the connection, with a
    /// client message the full mailbox refused).
    space: Option<Waker>,
}

/// A channel task's inbox: bounded, one consumer, waited on by polls (a
/// waker under the lock) so that waiting needs no stored future.
pub(crate) struct Mailbox<T> {
    state: Mutex<BoxState<T>>,
    /// `closed`, readable without the lock: PubSub checks it for every
    /// delivery to the channel.
    closed_flag: AtomicBool,
    /// Set when the channel is replaced by a duplicate join: it handles
    /// nothing more and ends.
    killed: AtomicBool,
    limit: usize,
}

impl<T> Mailbox<T> {
    pub(crate) fn new(limit: usize) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(BoxState { queue: VecDeque::new(), closed: false, receiver: None, space: None }),
            closed_flag: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            limit,
        }
    }

    /// Queues `item` unless the mailbox is full or closed; gives it back then.
    pub(crate) fn try_push(&self, item: T) -> Result<(), (T, Pushed)> {
        let mut s = self.state.lock();
        if s.closed {
            return Err((item, Pushed::Closed));
        }
        if s.queue.len() >= self.limit {
            return Err((item, Pushed::Full));
        }
        s.queue.push_back(item);
        let waker = s.receiver.take();
        drop(s);
        wake(waker);
        Ok(())
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed_flag.load(Ordering::Acquire)
    }

    /// Queues `item` whatever the limit (for the few control messages that
    /// must not be lost).
    pub(crate) fn force_push(&self, item: T) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        s.queue.push_back(item);
        let waker = s.receiver.take();
        drop(s);
        wake(waker);
        Pushed::Queued
    }

    /// Ready when a push that found the mailbox full may succeed (there is
    /// room, or the mailbox closed).
    pub(crate) fn poll_space(&self, cx: &Context<'_>) -> Poll<()> {
        let mut s = self.state.lock();
        if s.closed || s.queue.len() < self.limit {
            return Poll::Ready(());
        }
        register(&mut s.space, cx);
        Poll::Pending
    }

    /// The next item: `Ready(None)` once closed and empty.
    pub(crate) fn poll_recv(&self, cx: &Context<'_>) -> Poll<Option<T>> {
        let mut s = self.state.lock();
        if let Some(item) = s.queue.pop_front() {
            let waker = if s.queue.len() < self.limit { s.space.take() } else { None };
            if s.queue.is_empty() && s.queue.capacity() > 16 {
                s.queue = VecDeque::new();
            }
            drop(s);
            wake(waker);
            return Poll::Ready(Some(item));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        register(&mut s.receiver, cx);
        Poll::Pending
    }

    /// The next item; `None` once closed and empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Items still queued, without waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.state.lock().queue.pop_front()
    }

    /// Closes the mailbox and marks it killed: the channel task stops at
    /// the next message instead of handling what is queued.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.close();
    }

    /// True once [`Mailbox::kill`] was called.
    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Refuses later pushes; queued items can still be received.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        self.closed_flag.store(true, Ordering::Release);
        let wakers = (s.receiver.take(), s.space.take());
        drop(s);
        wake(wakers.0);
        wake(wakers.1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::text(vec![b'x'; n])
    }

    async fn soon<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(5), f).await.expect("woken")
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_transport() {
        let outbox = Arc::new(Outbox::new(OutboxLimits { frames: 10, bytes: 1000 }, Default::default()));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(outbox.push_frame(frame(3)), Pushed::Queued);
        soon(waiter).await.unwrap();
        let (items, overflowed) = outbox.drain();
        assert_eq!(items.len(), 1);
        assert!(!overflowed);
    }

    #[tokio::test]
    async fn an_overflow_drops_the_frame_and_wakes_the_transport() {
        let outbox = Arc::new(Outbox::new(OutboxLimits { frames: 2, bytes: 1000 }, Default::default()));
        assert_eq!(outbox.push_frame(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push_frame(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push_frame(frame(1)), Pushed::Full);
        assert_eq!(outbox.push_frame(frame(1)), Pushed::Full, "stays full until the transport closes");
        soon(outbox.ready()).await;
        let (items, overflowed) = outbox.drain();
        assert_eq!(items.len(), 2);
        assert!(overflowed);
        outbox.close();
        assert_eq!(outbox.push_frame(frame(1)), Pushed::Closed);
    }

    #[tokio::test]
    async fn replies_wait_for_room_until_the_transport_drains_or_closes() {
        let outbox = Arc::new(Outbox::new(OutboxLimits { frames: 8, bytes: 1000 }, Default::default()));
        for _ in 0..5 {
            outbox.push_frame(frame(1));
        }
        soon(outbox.room_for_replies()).await; // 5 of 8: room
        outbox.push_frame(frame(1));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.room_for_replies().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "6 of 8 is three quarters: wait");
        let _ = outbox.drain();
        soon(waiter).await.unwrap();
        for _ in 0..7 {
            outbox.push_frame(frame(1));
        }
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.room_for_replies().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        outbox.close();
        soon(waiter).await.unwrap();
    }

    #[tokio::test]
    async fn a_full_mailbox_reports_space_once_an_item_is_taken() {
        let mailbox = Arc::new(Mailbox::new(2));
        mailbox.try_push(1).unwrap();
        mailbox.try_push(2).unwrap();
        assert!(matches!(mailbox.try_push(3), Err((3, Pushed::Full))));
        let space = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { std::future::poll_fn(|cx| mailbox.poll_space(cx)).await }
        });
        tokio::task::yield_now().await;
        assert!(!space.is_finished());
        assert_eq!(mailbox.recv().await, Some(1));
        soon(space).await.unwrap();
        mailbox.try_push(3).unwrap();
        assert_eq!(mailbox.force_push(4), Pushed::Queued, "control messages pass the limit");
        assert_eq!((mailbox.recv().await, mailbox.recv().await, mailbox.recv().await), (Some(2), Some(3), Some(4)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_and_by_close() {
        let mailbox = Arc::new(Mailbox::new(4));
        let receiver = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { (mailbox.recv().await, mailbox.recv().await) }
        });
        tokio::task::yield_now().await;
        mailbox.try_push("a").unwrap();
        tokio::task::yield_now().await;
        mailbox.close();
        assert!(mailbox.is_closed());
        assert_eq!(soon(receiver).await.unwrap(), (Some("a"), None));
        assert!(matches!(mailbox.try_push("b"), Err(("b", Pushed::Closed))));
    }
}
