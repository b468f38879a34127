//! What a production Redis brings, on real processes started and stopped
//! by each test: TLS with a private CA and client certificates, Sentinel
//! and a failover, sharded fan-out on a Redis Cluster and a failover, and a
//! stalled server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fawkes_pubsub::{Broadcast, Payload, PubSub, Subscription, RECONNECTED_TOPIC};
use fawkes_redis::test_server::{RedisCluster, RedisServer, SentinelSetup, TlsServerFiles};
use fawkes_redis::{connect_cluster, Cluster, RedisConfig, RedisError};
use serde_json::json;

type Seen = Arc<Mutex<Vec<Broadcast>>>;

fn record(ps: &PubSub, topic: &str) -> (Subscription, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (ps.subscribe_fn(topic, move |b| s.lock().unwrap().push(b.clone())), seen)
}

fn bc(topic: &str, event: &str, n: u64) -> Broadcast {
    Broadcast::new(topic, event, Payload::from(json!({"n": n})))
}

/// Timings short enough for a test.
fn fast(url: String, name: &str) -> RedisConfig {
    let mut c = RedisConfig::new(url, name);
    c.deadline = Duration::from_millis(500);
    c.keepalive = Duration::from_millis(200);
    c.reconnect_every = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c
}

async fn wait_for(seen: &Seen, n: usize, within: Duration) -> usize {
    let start = Instant::now();
    while seen.lock().unwrap().len() < n && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().len()
}

/// Broadcasts from `from` until one reaches `seen` (within `within`).
async fn until_one_crosses(from: &PubSub, topic: &str, seen: &Seen, within: Duration) -> bool {
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < within {
        let _ = from.broadcast(bc(topic, "after", i));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if seen.lock().unwrap().iter().any(|m| m.event == "after") {
            return true;
        }
    }
    false
}

/// A directory of the test's own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = std::env::temp_dir().join(format!("fawkes-redis-test-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn write(&self, name: &str, data: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in
/// PEM files: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Dir) -> [PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "fawkes test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["fawkes-node".into()]);
    [
        dir.write("ca.pem", &ca_cert.pem()),
        dir.write("server.pem", &server_cert),
        dir.write("server.key", &server_key),
        dir.write("client.pem", &client_cert),
        dir.write("client.key", &client_key),
    ]
}

#[tokio::test]
async fn tls_with_a_private_ca_and_client_certificates() {
    let dir = Dir::new("tls");
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(&dir);
    let server = RedisServer::start_tls(TlsServerFiles {
        cert: server_cert,
        key: server_key,
        ca: ca.clone(),
        require_client_cert: true,
    });
    assert!(server.url().starts_with("rediss://"));
    let config = |name: &str| {
        let mut c = fast(server.url(), name);
        c.ca_file = Some(ca.clone());
        c.cert_file = Some(client_cert.clone());
        c.key_file = Some(client_key.clone());
        c
    };
    let a = connect_cluster(config("a")).await.unwrap();
    let b = connect_cluster(config("b")).await.unwrap();
    let (_sb, seen_b) = record(&b.pubsub, "room:1");
    a.pubsub.broadcast(bc("room:1", "over_tls", 1)).unwrap();
    assert_eq!(wait_for(&seen_b, 1, Duration::from_secs(5)).await, 1);
    assert_eq!(seen_b.lock().unwrap()[0].event, "over_tls");

    // without a client certificate the server refuses the handshake
    let mut no_cert = config("c");
    (no_cert.cert_file, no_cert.key_file) = (None, None);
    let e = connect_cluster(no_cert).await.unwrap_err();
    assert!(matches!(e, RedisError::Io { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot connect to Redis at rediss://127.0.0.1:{}: ", server.port())));
    // without the CA, the server's certificate is not trusted
    let mut no_ca = config("d");
    no_ca.ca_file = None;
    let e = connect_cluster(no_ca).await.unwrap_err();
    assert!(matches!(e, RedisError::Io { .. }), "{e}");
    // files that cannot be used are named
    let mut missing = config("e");
    missing.ca_file = Some(dir.0.join("nope.pem"));
    let e = connect_cluster(missing).await.unwrap_err();
    assert!(e.to_string().starts_with("cannot read the CA file ") && e.to_string().contains("nope.pem"), "{e}");
    let mut not_pem = config("f");
    not_pem.ca_file = Some(dir.write("garbage.pem", "not a certificate"));
    let e = connect_cluster(not_pem).await.unwrap_err();
    assert!(e.to_string().contains("holds no PEM CERTIFICATE"), "{e}");
    let mut half = config("g");
    half.key_file = None;
    assert!(matches!(connect_cluster(half).await.unwrap_err(), RedisError::TlsFiles(_)));
    let mut plain = config("h");
    plain.url = format!("redis://127.0.0.1:{}", server.port());
    let e = connect_cluster(plain).await.unwrap_err();
    assert_eq!(e.to_string(), "TLS files need a rediss:// URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_the_master_and_a_failover_is_followed() {
    let setup = tokio::task::block_in_place(|| SentinelSetup::start(1));
    let a = connect_cluster(fast(setup.url(), "a")).await.unwrap();
    let b = connect_cluster(fast(setup.url(), "b")).await.unwrap();
    let (_sb, seen_b) = record(&b.pubsub, "room:1");
    let (_rb, reconnected_b) = record(&b.pubsub, RECONNECTED_TOPIC);
    a.pubsub.broadcast(bc("room:1", "before", 0)).unwrap();
    assert_eq!(wait_for(&seen_b, 1, Duration::from_secs(5)).await, 1);
    let subscribers = |s: &RedisServer| s.cli(&["PUBSUB", "NUMSUB", "phx:Fawkes.PubSub.Adapter"]);
    assert!(subscribers(&setup.master).ends_with("\n2\n"), "{}", subscribers(&setup.master));

    tokio::task::block_in_place(|| setup.failover());
    assert_eq!(setup.master_port(), Some(setup.replica.port()));
    // both nodes move to the new master (the old one, demoted, keeps its
    // clients: they notice its role)
    let start = Instant::now();
    while !subscribers(&setup.replica).ends_with("\n2\n") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        subscribers(&setup.replica).ends_with("\n2\n"),
        "{} old: {} reconnects {} {} role {}",
        subscribers(&setup.replica),
        subscribers(&setup.master),
        a.stats.reconnects(),
        b.stats.reconnects(),
        setup.master.cli(&["ROLE"])
    );
    assert!(subscribers(&setup.master).ends_with("\n0\n"), "{}", subscribers(&setup.master));
    seen_b.lock().unwrap().clear();
    assert!(
        until_one_crosses(&a.pubsub, "room:1", &seen_b, Duration::from_secs(20)).await,
        "no broadcast crossed after the failover"
    );
    assert!(a.stats.reconnects() >= 1 && b.stats.reconnects() >= 1);
    assert!(!reconnected_b.lock().unwrap().is_empty(), "b was not told it reconnected");
}

/// The channels a cluster's masters carry for sharded subscribers, by
/// node index: `PUBSUB SHARDCHANNELS` of each master.
fn shard_channels(cluster: &RedisCluster) -> Vec<(usize, Vec<String>)> {
    (0..cluster.nodes.len())
        .filter(|i| cluster.nodes[*i].pid().is_some())
        .map(|i| {
            (
                i,
                cluster.nodes[i]
                    .cli(&["PUBSUB", "SHARDCHANNELS"])
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_fan_out_on_a_cluster_survives_a_master_failover() {
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 1));
    let node = |name: &str| {
        let mut c = fast(cluster.url(), name);
        c.shards = 16;
        connect_cluster(c)
    };
    let (a, b, c) = (node("a").await.unwrap(), node("b").await.unwrap(), node("c").await.unwrap());
    let (_sa, seen_a) = record(&a.pubsub, "room:1");
    let (_ra, reconnected_a) = record(&a.pubsub, RECONNECTED_TOPIC);
    // a's own channel and room:1's shard
    let start = Instant::now();
    while a.stats.channels() < 2 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.stats.channels(), 2);
    assert_eq!(c.stats.channels(), 1, "c has no topics: its own channel only");

    b.pubsub.broadcast(bc("room:1", "sharded", 1)).unwrap();
    b.pubsub.direct_broadcast("a", bc("room:1", "direct", 2)).unwrap();
    assert_eq!(wait_for(&seen_a, 2, Duration::from_secs(5)).await, 2);
    let events: Vec<String> = seen_a.lock().unwrap().iter().map(|m| m.event.clone()).collect();
    assert!(events.contains(&"sharded".to_owned()) && events.contains(&"direct".to_owned()), "{events:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // c carries none of it, and only the master of room:1's shard carries the shard
    assert_eq!(c.stats.received(), 0);
    let shard_of_room = |channels: &[(usize, Vec<String>)]| {
        channels
            .iter()
            .find(|(_, chans)| chans.iter().any(|ch| !ch.contains(":node:")))
            .map(|(i, chans)| (*i, chans.iter().find(|ch| !ch.contains(":node:")).unwrap().clone()))
    };
    let channels = shard_channels(&cluster);
    let (owner, shard) = shard_of_room(&channels).expect("a master carries room:1's shard");
    assert!(shard.starts_with("phx:Fawkes.PubSub.Adapter:"), "{shard}");
    assert_eq!(channels.iter().filter(|(_, chans)| chans.contains(&shard)).count(), 1);

    // the master of that shard dies; its replica takes over
    cluster.nodes[owner].stop();
    tokio::task::block_in_place(|| cluster.wait_ok(Duration::from_secs(20)));
    assert!(
        until_one_crosses(&b.pubsub, "room:1", &seen_a, Duration::from_secs(20)).await,
        "no broadcast crossed after the failover"
    );
    let channels = shard_channels(&cluster);
    let (new_owner, again) = shard_of_room(&channels).expect("the new master carries room:1's shard");
    assert_eq!(again, shard);
    assert_ne!(new_owner, owner);
    assert!(!reconnected_a.lock().unwrap().is_empty(), "a was not told it reconnected");
    assert_eq!(c.stats.received(), 0);
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The drill: Redis frozen (`SIGSTOP`) for a few seconds while a node
/// publishes steadily and floods it, then thawed. Nothing published during
/// the stall arrives late, what was not published is counted, the queue
/// stays within its bytes, and messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_delivers_nothing_late_and_drops_what_it_cannot_take() {
    // short enough for a test; the drill reads STALL_SECONDS for longer runs
    let stall = Duration::from_secs(std::env::var("STALL_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3));
    let server = RedisServer::start();
    let config = |name: &str| {
        let mut c = fast(server.url(), name);
        c.deadline = Duration::from_millis(300);
        c.keepalive = Duration::from_millis(100);
        c.reconnect_every = Duration::from_millis(100);
        c.connect_timeout = Duration::from_millis(500);
        c.queue_bytes = 256 << 10;
        c
    };
    let a: Cluster = connect_cluster(config("a")).await.unwrap();
    let b: Cluster = connect_cluster(config("b")).await.unwrap();
    let base = Instant::now();
    // (number, sent at, received at) in ms since base
    let arrivals: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    let got = arrivals.clone();
    let _sub = b.pubsub.subscribe_fn("room:drill", move |m| {
        let v = m.payload.to_value().unwrap();
        let now = base.elapsed().as_millis() as u64;
        got.lock().unwrap().push((v["n"].as_u64().unwrap(), v["t"].as_u64().unwrap(), now));
    });
    let (_ra, reconnected_a) = record(&a.pubsub, RECONNECTED_TOPIC);
    let (_rb, reconnected_b) = record(&b.pubsub, RECONNECTED_TOPIC);

    // a steady 100 messages a second through all of it
    let publisher = a.pubsub.clone();
    let total = Duration::from_millis(1000) + stall + Duration::from_millis(2500);
    let steady = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut n = 0;
        while base.elapsed() < total {
            let t = base.elapsed().as_millis() as u64;
            let _ = publisher.broadcast(Broadcast::new("room:drill", "tick", Payload::from(json!({"n": n, "t": t}))));
            sent.push((n, t));
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.pause();
    let paused_at = base.elapsed().as_millis() as u64;
    // a flood meanwhile: 2 000 messages of 64 KiB (125 MiB) against a
    // queue of 256 KiB
    let rss_before = rss_kib();
    let mut refused = 0;
    let mut most_queued = 0;
    for i in 0..2000u32 {
        let big = Broadcast::new("room:flood", "big", Payload::binary(vec![(i % 251) as u8; 64 << 10]));
        if a.pubsub.broadcast(big).is_err() {
            refused += 1;
        }
        most_queued = most_queued.max(a.stats.queued_bytes());
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let rss_growth_kib = rss_kib().saturating_sub(rss_before);
    tokio::time::sleep(stall.saturating_sub(Duration::from_millis(base.elapsed().as_millis() as u64 - paused_at)))
        .await;
    server.resume();
    let resumed_at = base.elapsed().as_millis() as u64;
    let sent = steady.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let arrivals = arrivals.lock().unwrap().clone();
    let late: Vec<_> = arrivals.iter().filter(|(_, t, at)| at - t > 1000).collect();
    assert!(late.is_empty(), "delivered more than a second late: {late:?}");
    // nothing sent well inside the stall arrived
    let inside = |t: u64| t > paused_at + 400 && t + 400 < resumed_at;
    assert!(!arrivals.iter().any(|(_, t, _)| inside(*t)), "a message published during the stall arrived");
    let lost_inside = sent.iter().filter(|(_, t)| inside(*t)).count() as u64;
    assert!(lost_inside > 0);
    // and what was not published is counted
    assert!(a.stats.dropped() >= lost_inside + refused, "{} < {lost_inside} + {refused}", a.stats.dropped());
    assert!(a.stats.expired() > 0);
    // the queue stayed within its bytes, and so did memory
    assert!(refused > 1900, "only {refused} of 2000 refused");
    assert!(most_queued <= 256 << 10, "{most_queued} bytes queued");
    assert!(rss_growth_kib < 40 << 10, "RSS grew by {rss_growth_kib} KiB");
    // messages flow again, on time
    let after: Vec<_> = arrivals.iter().filter(|(_, t, _)| *t > resumed_at + 1500).collect();
    assert!(!after.is_empty(), "nothing arrived after the stall");
    let sent_after = sent.iter().filter(|(_, t)| *t > resumed_at + 1500).count();
    assert!(after.len() + 2 >= sent_after, "{} of {sent_after} arrived after the stall", after.len());
    assert!(a.stats.reconnects() >= 1 && b.stats.reconnects() >= 1);
    assert!(!reconnected_a.lock().unwrap().is_empty() && !reconnected_b.lock().unwrap().is_empty());
    let metrics = a.pubsub.prometheus();
    assert!(metrics.contains(&format!("fawkes_redis_dropped_total {}\n", a.stats.dropped())), "{metrics}");
    assert!(metrics.contains("# TYPE fawkes_redis_queue_bytes gauge\n"), "{metrics}");
}
