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

use fawkes_protocol::Frame;
use parking_lot::Mutex;
use tokio::sync::Notify;

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
    /// A channel task ended; the session frees the topic (if `instance` still
    /// owns it) and sends `phx_close`/`phx_error`.
    ChannelExit { topic: String, instance: u64, end: End },
    /// A `disconnect` broadcast on the socket's id: close the connection.
    Disconnect,
}

/// Limits of an outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxLimits {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<Out>,
    frames: usize,
    bytes: usize,
    overflowed: bool,
    closed: bool,
}

/// Result of a push into a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    Full,
    Closed,
}

/// A connection's outbound queue.
pub(crate) struct Outbox {
    state: Mutex<OutState>,
    notify: Notify,
    limits: OutboxLimits,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("limits", &self.limits).finish()
    }
}

impl Outbox {
    pub(crate) fn new(limits: OutboxLimits) -> Outbox {
        Outbox { state: Mutex::new(OutState::default()), notify: Notify::new(), limits }
    }

    /// Queues a frame. When the queue is over its limits the frame is dropped
    /// and the outbox is marked overflowed: the transport then closes the
    /// connection (a slow consumer), rather than letting memory grow.
    pub(crate) fn push_frame(&self, frame: Frame) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        if s.overflowed {
            return Pushed::Full;
        }
        let len = frame.data.len();
        if s.frames >= self.limits.frames || s.bytes + len > self.limits.bytes.max(len) {
            s.overflowed = true;
            drop(s);
            self.notify.notify_one();
            return Pushed::Full;
        }
        s.frames += 1;
        s.bytes += len;
        let was_empty = s.queue.is_empty();
        s.queue.push_back(Out::Frame(frame));
        drop(s);
        if was_empty {
            self.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Marks the connection as a slow consumer without queueing anything.
    pub(crate) fn mark_overflow(&self) {
        self.state.lock().overflowed = true;
        self.notify.notify_one();
    }

    /// Queues a control event; these are few (one per channel at most) and
    /// always accepted while the connection lives.
    pub(crate) fn push_control(&self, out: Out) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        let was_empty = s.queue.is_empty();
        s.queue.push_back(out);
        drop(s);
        if was_empty {
            self.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Takes everything queued. Returns the items and whether the outbox
    /// overflowed.
    pub(crate) fn drain(&self) -> (VecDeque<Out>, bool) {
        let mut s = self.state.lock();
        s.frames = 0;
        s.bytes = 0;
        (std::mem::take(&mut s.queue), s.overflowed)
    }

    /// Waits until something is queued (or the outbox overflowed).
    pub(crate) async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Refuses every later push; producers see the connection as gone.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.queue.clear();
    }
}

struct BoxState<T> {
    queue: VecDeque<T>,
    closed: bool,
    full_waiters: bool,
}

/// A channel task's inbox: bounded, one consumer.
pub(crate) struct Mailbox<T> {
    state: Mutex<BoxState<T>>,
    /// `closed`, readable without the lock: PubSub checks it for every
    /// delivery to the channel.
    closed_flag: std::sync::atomic::AtomicBool,
    notify: Notify,
    space: Notify,
    limit: usize,
}

impl<T> Mailbox<T> {
    pub(crate) fn new(limit: usize) -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(BoxState { queue: VecDeque::new(), closed: false, full_waiters: false }),
            closed_flag: std::sync::atomic::AtomicBool::new(false),
            notify: Notify::new(),
            space: Notify::new(),
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
            s.full_waiters = true;
            return Err((item, Pushed::Full));
        }
        let was_empty = s.queue.is_empty();
        s.queue.push_back(item);
        drop(s);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed_flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queues `item` whatever the limit (for the few control messages that
    /// must not be lost).
    pub(crate) fn force_push(&self, item: T) -> Pushed {
        let mut s = self.state.lock();
        if s.closed {
            return Pushed::Closed;
        }
        s.queue.push_back(item);
        drop(s);
        self.notify.notify_one();
        Pushed::Queued
    }

    /// Waits until a push that found the mailbox full may succeed.
    pub(crate) async fn space(&self) {
        self.space.notified().await;
    }

    /// The next item; `None` once closed and empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        loop {
            {
                let mut s = self.state.lock();
                if let Some(item) = s.queue.pop_front() {
                    if s.full_waiters && s.queue.len() < self.limit {
                        s.full_waiters = false;
                        self.space.notify_one();
                    }
                    if s.queue.is_empty() && s.queue.capacity() > 16 {
                        s.queue = VecDeque::new();
                    }
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Items still queued, without waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.state.lock().queue.pop_front()
    }

    /// Refuses later pushes; queued items can still be received.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.closed_flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
        self.space.notify_one();
    }
}
