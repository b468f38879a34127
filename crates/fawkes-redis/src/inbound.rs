//! What a node does with each message from the channel: a channel
//! broadcast or a term for this node goes to its subscribers; its own
//! messages and those for other nodes are passed over, as Phoenix passes
//! them over; what this node takes no action on is counted as ignored, and
//! only bytes that are no PubSub message at all are warned about.

use fawkes_pubsub::{PubSub, Target, TERM_EVENT};
use std::sync::atomic::Ordering;

use crate::{wire, RedisStats};

/// Delivers one message from the channel to `pubsub`'s subscribers.
pub(crate) fn deliver(pubsub: &PubSub, data: &[u8], stats: &RedisStats) {
    match wire::decode(data) {
        Ok(msg) => {
            stats.received.fetch_add(1, Ordering::Relaxed);
            let for_me = match &msg.target {
                Target::Except(n) => n != pubsub.node_name(),
                Target::Only(n) => n == pubsub.node_name(),
            };
            if !for_me {
                return;
            }
            let term = msg.broadcast.event == TERM_EVENT;
            let topic = msg.broadcast.topic.clone();
            let sent = pubsub.deliver_remote(msg);
            // a channel broadcast no one here is subscribed to is normal;
            // a term no subscriber takes is a message this node ignores
            if term && sent.delivered + sent.overflowed == 0 {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(topic, "ignoring a Phoenix.PubSub message that nothing here takes");
            }
        }
        Err(e) if e.is_ignorable() => {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "ignoring a message on the redis channel");
        }
        Err(e) => {
            stats.undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "dropping a message from the redis channel");
        }
    }
}
