//! The local registry: fan-out, exclusion, encode-once frames, remote envelopes.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fawkes_pubsub::{
    Adapter, Broadcast, Delivery, FrameCache, Payload, PubSub, PubSubError, RemoteMessage, Subscriber, Target, Vsn,
};
use serde_json::json;

fn bc(topic: &str, event: &str) -> Broadcast {
    Broadcast::new(topic, event, Payload::from(json!({"n": 1})))
}

fn recorder(ps: &PubSub, topic: &str) -> (fawkes_pubsub::Subscription, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (ps.subscribe_fn(topic, move |b| s.lock().unwrap().push(b.event.clone())), seen)
}

#[test]
fn broadcast_reaches_every_subscriber_of_the_topic_only() {
    let ps = PubSub::local("n1");
    let (_a, a) = recorder(&ps, "t:1");
    let (_b, b) = recorder(&ps, "t:1");
    let (_c, c) = recorder(&ps, "t:2");
    let d = ps.broadcast(bc("t:1", "e")).unwrap();
    assert_eq!(d.delivered, 2);
    assert_eq!(*a.lock().unwrap(), ["e"]);
    assert_eq!(*b.lock().unwrap(), ["e"]);
    assert!(c.lock().unwrap().is_empty());
}

#[test]
fn broadcast_from_skips_the_sender_and_drop_unsubscribes() {
    let ps = PubSub::local("n1");
    let (sa, a) = recorder(&ps, "t");
    let (sb, b) = recorder(&ps, "t");
    ps.broadcast_from(sa.id(), bc("t", "x")).unwrap();
    assert!(a.lock().unwrap().is_empty());
    assert_eq!(*b.lock().unwrap(), ["x"]);
    drop(sb);
    assert_eq!(ps.subscriber_count("t"), 1);
    ps.broadcast(bc("t", "y")).unwrap();
    assert_eq!(*b.lock().unwrap(), ["x"]);
    assert_eq!(*a.lock().unwrap(), ["y"]);
    drop(sa);
    assert_eq!(ps.subscriber_count("t"), 0);
}

struct FrameGrabber(Vsn, Mutex<Vec<bytes::Bytes>>);
impl Subscriber for FrameGrabber {
    fn deliver(&self, _: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery {
        self.1.lock().unwrap().push(frames.frame(self.0).unwrap().data.clone());
        Delivery::Delivered
    }
}

#[test]
fn a_broadcast_is_encoded_once_per_serializer_and_shared() {
    let ps = PubSub::local("n1");
    let subs: Vec<_> = (0..6)
        .map(|i| Arc::new(FrameGrabber(if i % 2 == 0 { Vsn::V2 } else { Vsn::V1 }, Mutex::new(vec![]))))
        .collect();
    let _guards: Vec<_> = subs.iter().map(|s| ps.subscribe("t", s.clone())).collect();
    ps.broadcast(bc("t", "e")).unwrap();
    let frames: Vec<bytes::Bytes> = subs.iter().map(|s| s.1.lock().unwrap()[0].clone()).collect();
    for (i, f) in frames.iter().enumerate() {
        // same allocation, not just equal bytes
        assert_eq!(f.as_ptr(), frames[i % 2].as_ptr());
    }
    assert_eq!(&frames[0][..], br#"[null,null,"t","e",{"n":1}]"#);
    assert_eq!(&frames[1][..], br#"{"event":"e","payload":{"n":1},"ref":null,"topic":"t"}"#);
}

struct Dead(AtomicUsize);
impl Subscriber for Dead {
    fn deliver(&self, _: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
        self.0.fetch_add(1, Ordering::SeqCst);
        Delivery::Gone
    }
}

#[test]
fn gone_subscribers_are_removed() {
    let ps = PubSub::local("n1");
    let dead = Arc::new(Dead(AtomicUsize::new(0)));
    let _s = ps.subscribe("t", dead.clone());
    ps.broadcast(bc("t", "e")).unwrap();
    ps.broadcast(bc("t", "e")).unwrap();
    assert_eq!(dead.0.load(Ordering::SeqCst), 1);
    assert_eq!(ps.subscriber_count("t"), 0);
}

#[derive(Default)]
struct Loopback(Mutex<Vec<RemoteMessage>>);
impl Adapter for Loopback {
    fn publish(&self, msg: RemoteMessage) -> Result<(), PubSubError> {
        self.0.lock().unwrap().push(msg);
        Ok(())
    }
}

#[test]
fn remote_delivery_goes_through_the_adapter_and_respects_targets() {
    let wire = Arc::new(Loopback::default());
    let n1 = PubSub::with_adapter("n1", wire.clone());
    let n2 = PubSub::local("n2");
    let (_s1, seen1) = recorder(&n1, "t");
    let (_s2, seen2) = recorder(&n2, "t");
    n1.broadcast(bc("t", "all")).unwrap();
    n1.direct_broadcast("n2", bc("t", "direct")).unwrap();
    n1.local_broadcast(bc("t", "local"));
    let sent: Vec<RemoteMessage> = wire.0.lock().unwrap().drain(..).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].target, Target::Except("n1".into()));
    for m in sent {
        let decoded = RemoteMessage::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        n2.deliver_remote(decoded.clone());
        n1.deliver_remote(decoded);
    }
    assert_eq!(*seen1.lock().unwrap(), ["all", "local"]);
    assert_eq!(*seen2.lock().unwrap(), ["all", "direct"]);
}

#[test]
fn remote_envelopes_carry_binary_and_refuse_garbage() {
    let m = RemoteMessage {
        target: Target::Only("x".into()),
        broadcast: Broadcast::new("t", "e", Payload::binary(vec![0u8, 255])),
    };
    assert_eq!(RemoteMessage::decode(&m.encode()).unwrap(), m);
    for bad in [
        &b"nope"[..],
        br#"{"v":2,"mode":"only","node":"x","topic":"t","event":"e","json":{}}"#,
        br#"{"v":1,"mode":"all","node":"x","topic":"t","event":"e","json":{}}"#,
        br#"{"v":1,"mode":"only","node":"x","topic":"t","event":"e"}"#,
    ] {
        assert!(RemoteMessage::decode(bad).is_err());
    }
}

#[test]
fn concurrent_subscribe_and_broadcast_lose_nothing() {
    let ps = PubSub::local("n1");
    let count = Arc::new(AtomicUsize::new(0));
    let mut subs = Vec::new();
    for _ in 0..100 {
        let c = count.clone();
        subs.push(ps.subscribe_fn("hot", move |_| {
            c.fetch_add(1, Ordering::Relaxed);
        }));
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            let ps = ps.clone();
            s.spawn(move || {
                for _ in 0..250 {
                    ps.broadcast(bc("hot", "e")).unwrap();
                    let _churn = ps.subscribe_fn("hot", |_| {});
                }
            });
        }
    });
    // 1000 broadcasts to the 100 stable subscribers
    assert_eq!(count.load(Ordering::Relaxed), 100_000);
    assert_eq!(ps.subscriber_count("hot"), 100);
}

/// A subscriber that asks for a transformed frame (as a compressing
/// transport does) and records it.
struct Deriver(Arc<AtomicUsize>, Mutex<Vec<bytes::Bytes>>, &'static str);
impl Subscriber for Deriver {
    fn deliver(&self, _: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery {
        let calls = self.0.clone();
        let f = frames.derived(Vsn::V2, self.2, |f| {
            calls.fetch_add(1, Ordering::SeqCst);
            match self.2 {
                "upper" => bytes::Bytes::from(f.data.to_ascii_uppercase()),
                _ => bytes::Bytes::from(f.data.len().to_string()),
            }
        });
        self.1.lock().unwrap().push(f.unwrap().data.clone());
        Delivery::Delivered
    }
}

#[test]
fn a_derived_frame_is_made_once_per_dispatch_and_shared() {
    let ps = PubSub::local("n1");
    let calls = Arc::new(AtomicUsize::new(0));
    let subs: Vec<_> = (0..5).map(|_| Arc::new(Deriver(calls.clone(), Mutex::new(vec![]), "upper"))).collect();
    let _guards: Vec<_> = subs.iter().map(|s| ps.subscribe("t", s.clone())).collect();
    let other_calls = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(Deriver(other_calls.clone(), Mutex::new(vec![]), "len"));
    let _other = ps.subscribe("t", other.clone());
    ps.broadcast(bc("t", "e")).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let first = subs[0].1.lock().unwrap()[0].clone();
    assert_eq!(&first[..], br#"[NULL,NULL,"T","E",{"N":1}]"#);
    for s in &subs {
        assert_eq!(s.1.lock().unwrap()[0].as_ptr(), first.as_ptr());
    }
    // another kind of derivation in the same dispatch gets its own bytes
    assert_eq!(other_calls.load(Ordering::SeqCst), 1);
    assert_eq!(&other.1.lock().unwrap()[0][..], b"27");
    ps.broadcast(bc("t", "e")).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one derivation per dispatch");
}

/// An adapter that records the hooks it is called with.
#[derive(Default)]
struct Hooks(Mutex<Vec<String>>);

impl Adapter for Hooks {
    fn publish(&self, _: RemoteMessage) -> Result<(), PubSubError> {
        Ok(())
    }
    fn topic_subscribed(&self, topic: &str) {
        self.0.lock().unwrap().push(format!("+{topic}"));
    }
    fn topic_unsubscribed(&self, topic: &str) {
        self.0.lock().unwrap().push(format!("-{topic}"));
    }
    fn metrics(&self) -> Vec<fawkes_pubsub::AdapterMetric> {
        vec![fawkes_pubsub::AdapterMetric { name: "x_total", gauge: false, help: "Xs.", value: 7 }]
    }
}

#[test]
fn the_adapter_hears_of_a_topics_first_and_last_subscriber_only() {
    let hooks = Arc::new(Hooks::default());
    let ps = PubSub::with_adapter("n1", hooks.clone());
    let a = ps.subscribe_fn("t:1", |_| {});
    let b = ps.subscribe_fn("t:1", |_| {});
    let c = ps.subscribe_fn("t:2", |_| {});
    drop(a);
    assert_eq!(*hooks.0.lock().unwrap(), ["+t:1", "+t:2"]);
    drop(b);
    drop(c);
    let again = ps.subscribe_fn("t:1", |_| {});
    assert_eq!(*hooks.0.lock().unwrap(), ["+t:1", "+t:2", "-t:1", "-t:2", "+t:1"]);
    // a subscriber found gone during a dispatch counts too
    struct Gone;
    impl Subscriber for Gone {
        fn deliver(&self, _: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
            Delivery::Gone
        }
    }
    let gone = ps.subscribe("t:3", Arc::new(Gone));
    ps.local_broadcast(bc("t:3", "e"));
    assert_eq!(hooks.0.lock().unwrap().last().unwrap(), "-t:3");
    drop(gone);
    drop(again);
    // the local notification topic is never the adapter's business
    let (_r, seen) = recorder(&ps, fawkes_pubsub::RECONNECTED_TOPIC);
    assert_eq!(ps.notify_reconnected().delivered, 1);
    assert_eq!(*seen.lock().unwrap(), ["reconnected"]);
    assert!(!hooks.0.lock().unwrap().iter().any(|h| h.contains("reconnected")));
    assert_eq!(ps.prometheus(), "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 7\n");
    assert_eq!(PubSub::local("n").prometheus(), "");
}

/// A subscriber that owns another subscription (a callback holding a
/// connection that holds its own): dropping the first drops the second, on
/// the same shard (the same topic), without deadlocking on the registry.
#[test]
fn a_subscriber_owning_a_subscription_can_be_dropped() {
    let ps = PubSub::local("n1");
    let (inner, seen) = recorder(&ps, "t:owned");
    let outer = ps.subscribe_fn("t:owned", move |_| {
        let _keep = &inner;
    });
    ps.broadcast(bc("t:owned", "before")).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["before"]);
    let (done, wait) = std::sync::mpsc::channel();
    let ps2 = ps.clone();
    std::thread::spawn(move || {
        drop(outer);
        let _ = done.send(ps2.broadcast(bc("t:owned", "after")).unwrap().delivered);
    });
    let delivered = wait.recv_timeout(std::time::Duration::from_secs(5)).expect("dropping did not deadlock");
    assert_eq!(delivered, 0, "both subscriptions are gone");
    assert_eq!(*seen.lock().unwrap(), ["before"]);
}
