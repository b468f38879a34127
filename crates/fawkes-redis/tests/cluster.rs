//! Nodes sharing a real Redis server (started and stopped by each test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fawkes_pubsub::{Broadcast, Payload, PubSub, Subscription};
use fawkes_redis::test_server::RedisServer;
use fawkes_redis::{connect, connect_cluster, RedisConfig, RedisError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Seen = Arc<Mutex<Vec<Broadcast>>>;

fn record(ps: &PubSub, topic: &str) -> (Subscription, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (ps.subscribe_fn(topic, move |b| s.lock().unwrap().push(b.clone())), seen)
}

async fn node(server: &RedisServer, name: &str) -> PubSub {
    connect(RedisConfig::new(server.url(), name)).await.unwrap()
}

/// Waits until `seen` holds `n` messages (or five seconds pass).
async fn wait_for(seen: &Seen, n: usize) -> Vec<Broadcast> {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

fn bc(event: &str, n: u64) -> Broadcast {
    Broadcast::new("room:1", event, Payload::from(json!({"n": n})))
}

/// A raw client: sends one command, returns the reply's bytes.
async fn raw(server: &RedisServer, args: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", server.port())).await.unwrap();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    buf.truncate(n);
    buf
}

async fn subscribers_of_channel(server: &RedisServer) -> String {
    let reply = raw(server, &[b"PUBSUB", b"NUMSUB", b"phx:Fawkes.PubSub.Adapter"]).await;
    String::from_utf8_lossy(&reply).lines().last().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_broadcast_reaches_every_node_once() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let (_sa, seen_a) = record(&a, "room:1");
    let (_sb, seen_b) = record(&b, "room:1");
    let (_other, seen_other) = record(&b, "room:2");
    a.broadcast(bc("from_a", 1)).unwrap();
    b.broadcast(bc("from_b", 2)).unwrap();
    let got_b = wait_for(&seen_b, 2).await;
    let got_a = wait_for(&seen_a, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = |s: &Seen| {
        let mut e: Vec<String> = s.lock().unwrap().iter().map(|b| b.event.clone()).collect();
        e.sort();
        e
    };
    assert_eq!(events(&seen_a), ["from_a", "from_b"], "{got_a:?}");
    assert_eq!(events(&seen_b), ["from_a", "from_b"], "{got_b:?}");
    assert!(seen_other.lock().unwrap().is_empty());
    assert_eq!(got_b.iter().find(|m| m.event == "from_a").unwrap().payload, Payload::from(json!({"n": 1})));
}

#[tokio::test]
async fn a_direct_broadcast_reaches_the_named_node_only() {
    let server = RedisServer::start();
    let (a, b, c) = (node(&server, "a").await, node(&server, "b").await, node(&server, "c").await);
    let (_sb, seen_b) = record(&b, "room:1");
    let (_sc, seen_c) = record(&c, "room:1");
    a.direct_broadcast("c", bc("direct", 1)).unwrap();
    assert_eq!(wait_for(&seen_c, 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen_b.lock().unwrap().is_empty());
    assert_eq!(seen_c.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn broadcasts_from_one_node_arrive_in_order_and_binary_intact() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let (_sb, seen_b) = record(&b, "room:1");
    for i in 0..2000 {
        a.broadcast(bc("seq", i)).unwrap();
    }
    a.broadcast(Broadcast::new("room:1", "bin", Payload::binary(vec![0u8, 255, 10, 13]))).unwrap();
    let got = wait_for(&seen_b, 2001).await;
    assert_eq!(got.len(), 2001);
    for (i, m) in got[..2000].iter().enumerate() {
        assert_eq!(m.payload, Payload::from(json!({"n": i})), "message {i}");
    }
    assert_eq!(got[2000].payload, Payload::binary(vec![0u8, 255, 10, 13]));
}

#[tokio::test]
async fn nodes_reconnect_after_redis_restarts() {
    let mut server = RedisServer::start();
    let config = |name: &str| {
        let mut c = RedisConfig::new(server.url(), name);
        c.reconnect_every = Duration::from_millis(100);
        c
    };
    let a = connect_cluster(config("a")).await.unwrap();
    let b = connect_cluster(config("b")).await.unwrap();
    let (_sb, seen_b) = record(&b.pubsub, "room:1");
    a.pubsub.broadcast(bc("before", 0)).unwrap();
    assert_eq!(wait_for(&seen_b, 1).await.len(), 1);

    server.stop();
    // published while Redis is down: dropped (at most once), counted
    a.pubsub.broadcast(bc("lost", 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    // until both connections are back, broadcasts may still be lost:
    // retry until one gets through
    let mut arrived = false;
    for i in 0..100 {
        a.pubsub.broadcast(bc("after", i)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if seen_b.lock().unwrap().iter().any(|m| m.event == "after") {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "no broadcast crossed after the restart");
    assert!(a.stats.dropped() >= 1);
    assert!(b.stats.reconnects() >= 1);
    assert!(!seen_b.lock().unwrap().iter().any(|m| m.event == "lost"));
}

#[tokio::test]
async fn passwords_are_sent_and_wrong_ones_refused() {
    let server = RedisServer::start_with_password(Some("s3cret"));
    let a = connect(RedisConfig::new(server.url(), "a")).await.unwrap();
    let b = connect(RedisConfig::new(server.url(), "b")).await.unwrap();
    let (_sb, seen_b) = record(&b, "room:1");
    a.broadcast(bc("authed", 1)).unwrap();
    assert_eq!(wait_for(&seen_b, 1).await.len(), 1);
    let wrong = format!("redis://:nope@127.0.0.1:{}", server.port());
    let e = connect(RedisConfig::new(wrong, "c")).await.unwrap_err();
    assert!(matches!(e, RedisError::Io { .. }), "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains("nope"), "{e}");
    let none = format!("redis://127.0.0.1:{}", server.port());
    assert!(connect(RedisConfig::new(none, "d")).await.is_err(), "SUBSCRIBE without AUTH is refused");
}

#[tokio::test]
async fn bad_configs_are_errors() {
    assert!(matches!(connect(RedisConfig::new("http://x", "a")).await, Err(RedisError::Url(_))));
    assert!(matches!(connect(RedisConfig::new("redis://127.0.0.1:1", "")).await, Err(RedisError::NodeName)));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nobody = format!("redis://127.0.0.1:{port}");
    let e = connect(RedisConfig::new(nobody, "a")).await.unwrap_err();
    assert!(matches!(e, RedisError::Io { .. }));
    // the address tried and why, in words
    assert_eq!(e.to_string(), format!("cannot connect to Redis at redis://127.0.0.1:{port}: connection refused"));
    let e = connect(RedisConfig::new(format!("redis://user:hidden@127.0.0.1:{port}/0"), "a")).await.unwrap_err();
    assert_eq!(e.to_string(), format!("cannot connect to Redis at redis://127.0.0.1:{port}: connection refused"));
}

/// What a Phoenix node publishes is delivered; anything else on the channel
/// is counted and skipped, and the subscription keeps working.
#[tokio::test]
async fn phoenix_messages_are_delivered_and_garbage_is_skipped() {
    let server = RedisServer::start();
    let b = connect_cluster(RedisConfig::new(server.url(), "b")).await.unwrap();
    let (_sb, seen_b) = record(&b.pubsub, "room:1");
    let channel = b"phx:Fawkes.PubSub.Adapter";
    raw(&server, &[b"PUBLISH", channel, b"not a term"]).await;
    raw(&server, &[b"PUBLISH", channel, &[131, 104, 1, 97, 2]]).await;
    let from_phoenix = fawkes_redis::wire::encode(&fawkes_pubsub::RemoteMessage {
        target: fawkes_pubsub::Target::Except("phoenix@host".into()),
        broadcast: bc("from_phoenix", 7),
    })
    .unwrap();
    raw(&server, &[b"PUBLISH", channel, &from_phoenix]).await;
    let got = wait_for(&seen_b, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, "from_phoenix");
    assert_eq!(b.stats.undecodable(), 2);
    assert_eq!(b.stats.ignored(), 0);
}

/// Phoenix.PubSub messages that are not channel broadcasts reach the
/// subscribers of their topic whole; what no subscriber takes, what is for
/// another node and what is of another format version is passed over, and
/// only what was meant for this node is counted as ignored.
#[tokio::test]
async fn phoenix_terms_reach_their_topic_and_the_rest_is_counted() {
    use fawkes_etf::Term;
    let server = RedisServer::start();
    let b = connect_cluster(RedisConfig::new(server.url(), "b")).await.unwrap();
    let (_s, seen) = record(&b.pubsub, "tracker");
    let channel = b"phx:Fawkes.PubSub.Adapter";
    let message = |mode: &str, node: &str, topic: &str, vsn: i128| {
        fawkes_etf::encode(&Term::Tuple(vec![
            Term::Int(vsn),
            Term::atom(mode),
            Term::atom(node),
            Term::binary(topic),
            Term::Tuple(vec![Term::atom("pub"), Term::atom("heartbeat"), Term::Int(1)]),
            Term::atom("Elixir.Phoenix.PubSub"),
        ]))
    };
    raw(&server, &[b"PUBLISH", channel, &message("except", "phx1", "nobody", 3)]).await;
    raw(&server, &[b"PUBLISH", channel, &message("only", "phx2", "tracker", 3)]).await;
    raw(&server, &[b"PUBLISH", channel, &message("except", "phx1", "tracker", 2)]).await;
    raw(&server, &[b"PUBLISH", channel, &message("only", "b", "tracker", 3)]).await;
    let got = wait_for(&seen, 1).await;
    assert_eq!(got.len(), 1, "only the message for b");
    assert_eq!(got[0].event, fawkes_pubsub::TERM_EVENT);
    let Payload::Binary(term) = &got[0].payload else { panic!("a term") };
    assert_eq!(fawkes_etf::decode(term).unwrap().as_tuple().unwrap()[1].as_atom(), Some("heartbeat"));
    assert_eq!((b.stats.ignored(), b.stats.undecodable()), (2, 0), "no taker, and version 2");
    assert!(b.stats.prometheus().contains("fawkes_redis_ignored_total 2\n"));
}

#[tokio::test]
async fn dropping_the_pubsub_unsubscribes_from_redis() {
    let server = RedisServer::start();
    let a = node(&server, "a").await;
    assert_eq!(subscribers_of_channel(&server).await, ":1");
    drop(a);
    let mut count = String::new();
    for _ in 0..100 {
        count = subscribers_of_channel(&server).await;
        if count == ":0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, ":0");
}

#[tokio::test]
async fn flush_returns_once_everything_before_it_is_published() {
    let server = RedisServer::start();
    let a = connect_cluster(RedisConfig::new(server.url(), "a")).await.unwrap();
    for i in 0..1000 {
        a.pubsub.broadcast(bc("flushed", i)).unwrap();
    }
    a.pubsub.flush().await;
    assert_eq!(a.stats.published(), 1000);
    // and with nothing queued, at once
    tokio::time::timeout(Duration::from_secs(1), a.pubsub.flush()).await.unwrap();
}

/// A subscription that goes silent (a half-open connection after a
/// failover, say) is taken for dead and made again; and a connection that
/// does not answer its first PING carries nothing.
#[tokio::test]
async fn a_silent_subscription_is_made_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // a fake Redis: answers everything until SUBSCRIBE, confirms it, then
    // never says a word, not even to PING
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let subscribes = Arc::new(AtomicUsize::new(0));
    let counted = subscribes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 4096];
                let mut silent = false;
                loop {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if silent {
                        continue;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some((name, used, channels)) = command_name(&buf) {
                        buf.drain(..used);
                        let reply: Vec<u8> = match name.as_str() {
                            "PING" => b"+PONG\r\n".to_vec(),
                            "SUBSCRIBE" => {
                                silent = true;
                                counted.fetch_add(1, Ordering::SeqCst);
                                // one confirmation per channel
                                (1..=channels)
                                    .flat_map(|k| format!("*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:{k}\r\n").into_bytes())
                                    .collect()
                            }
                            _ => b"+OK\r\n".to_vec(),
                        };
                        let _ = sock.write_all(&reply).await;
                        if silent {
                            break;
                        }
                    }
                }
            });
        }
    });
    let mut config = RedisConfig::new(format!("redis://127.0.0.1:{port}"), "a");
    config.keepalive = Duration::from_millis(50);
    config.deadline = Duration::from_millis(100);
    config.reconnect_every = Duration::from_millis(50);
    let cluster = connect_cluster(config).await.unwrap();
    for _ in 0..300 {
        if subscribes.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(subscribes.load(Ordering::SeqCst) >= 2, "the silent subscription was never made again");
    assert!(cluster.stats.reconnects() >= 1);
}

/// The name of the first whole command (a RESP array of bulk strings) in
/// `buf`, the bytes it takes and the number of its arguments.
fn command_name(buf: &[u8]) -> Option<(String, usize, usize)> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut at = 0;
    let line = |at: &mut usize| -> Option<&str> {
        let end = text[*at..].find("\r\n")? + *at;
        let l = &text[*at..end];
        *at = end + 2;
        Some(l)
    };
    let n: usize = line(&mut at)?.strip_prefix('*')?.parse().ok()?;
    let mut name = String::new();
    for i in 0..n {
        let len: usize = line(&mut at)?.strip_prefix('$')?.parse().ok()?;
        let arg = text.get(at..at + len)?;
        if i == 0 {
            name = arg.to_ascii_uppercase();
        }
        at += len;
        line(&mut at)?;
    }
    Some((name, at, n.saturating_sub(1)))
}

/// Sharded fan-out on one server (plain channels): a node subscribes to the
/// channels of its own topics only, and direct broadcasts reach their node.
#[tokio::test]
async fn sharded_channels_on_one_server_follow_the_local_topics() {
    let server = RedisServer::start();
    let node = |name: &str| {
        let mut c = RedisConfig::new(server.url(), name);
        c.shards = 8;
        connect_cluster(c)
    };
    let (a, b, c) = (node("a").await.unwrap(), node("b").await.unwrap(), node("c").await.unwrap());
    assert_eq!(a.stats.channels(), 1, "its own channel");
    let (sa, seen_a) = record(&a.pubsub, "room:1");
    for _ in 0..200 {
        if a.stats.channels() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.stats.channels(), 2);
    b.pubsub.broadcast(bc("sharded", 1)).unwrap();
    b.pubsub.direct_broadcast("a", bc("direct", 2)).unwrap();
    assert_eq!(wait_for(&seen_a, 2).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.stats.received(), 0, "c has no subscriber: it hears nothing");
    let numsub = raw(&server, &[b"PUBSUB", b"NUMSUB", b"phx:Fawkes.PubSub.Adapter"]).await;
    assert!(String::from_utf8_lossy(&numsub).ends_with(":0\r\n"), "nobody is on the single channel");
    // the last subscriber gone, the shard's channel goes too
    drop(sa);
    for _ in 0..200 {
        if a.stats.channels() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.stats.channels(), 1);
}

/// The time Redis takes to confirm publishes is a histogram registered
/// through the PubSub (what an endpoint renders at `/metrics`).
#[tokio::test]
async fn publish_latency_is_a_histogram() {
    let server = RedisServer::start();
    let a = connect_cluster(RedisConfig::new(server.url(), "a")).await.unwrap();
    let b = node(&server, "b").await;
    let (_sb, seen_b) = record(&b, "room:1");
    for i in 0..3 {
        a.pubsub.broadcast(bc("lat", i)).unwrap();
        // one batch each
        wait_for(&seen_b, (i + 1) as usize).await;
    }
    let mut registry = prometheus_client::registry::Registry::default();
    a.pubsub.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("fawkes_redis_publish_duration_seconds_count "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert_eq!(count, 3, "each broadcast was confirmed in a batch of its own: {text}");
    // one observation per confirmed batch, and a batch holds one message or more
    assert!(count <= a.stats.published(), "{text}");
    assert!(text.contains("# TYPE fawkes_redis_publish_duration_seconds histogram"));
}
