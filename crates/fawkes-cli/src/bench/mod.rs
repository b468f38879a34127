//! `fawkes bench`: load for any Phoenix-protocol server, over loopback only,
//! with the V2 protocol, against the rooms of the conformance contract.

mod client;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{value_parser, ArgAction, Args, Subcommand};
use client::{fields, number_after, Client};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

/// The conformance server's default address.
const DEFAULT_URL: &str = "http://127.0.0.1:4001";

/// A scenario of docs/benchmarks.md and its options.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// N sockets, each joined to a topic; the server's RSS per connection.
    #[command(allow_negative_numbers = true)]
    Conns {
        /// Connections.
        #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
        n: u64,
        /// `false`: connect only, join nothing.
        #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "true|false")]
        join: bool,
        #[command(flatten)]
        common: Common,
    },
    /// S subscribers on T topics (one by default), a publisher at R
    /// messages/s round-robin over the topics; delivery, latency and server
    /// CPU per delivery. Subscriber i joins topic i mod T on node i mod M
    /// (the --url server, then each --node-url): with T a multiple of M, each
    /// topic's subscribers are on one node.
    #[command(allow_negative_numbers = true)]
    Fanout {
        /// Subscribers.
        #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
        subscribers: u64,
        /// Messages published per second.
        #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..))]
        rate: u64,
        /// Size of each message, in bytes.
        #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(..=8_000_000))]
        bytes: u64,
        /// Publish through another node of a cluster (loopback only)
        /// [default: the --url server].
        #[arg(long, value_name = "URL", value_parser = loopback)]
        publish_url: Option<SocketAddr>,
        /// Topics the subscribers are spread over.
        #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=1_000_000))]
        topics: u64,
        /// Another node of the cluster that subscribers connect to (loopback
        /// only; repeatable).
        #[arg(long = "node-url", value_name = "URL", value_parser = loopback)]
        node_urls: Vec<SocketAddr>,
        /// The process of each --node-url, in the same order, for its CPU
        /// time per delivery (repeatable).
        #[arg(long = "node-pid", value_name = "PID", value_parser = process)]
        node_pids: Vec<u32>,
        /// A Redis server process, for its CPU time (repeatable: a
        /// cluster's).
        #[arg(long = "redis-pid", value_name = "PID", value_parser = process)]
        redis_pids: Vec<u32>,
        /// `true`: a `history:*` topic (every broadcast positioned and
        /// kept), to measure what history costs.
        #[arg(long, default_value_t = false, action = ArgAction::Set, value_name = "true|false")]
        history: bool,
        #[command(flatten)]
        common: Common,
    },
    /// C clients, each keeping W echo pushes in flight; replies per second,
    /// round trip and server CPU per reply.
    #[command(allow_negative_numbers = true)]
    Echo {
        /// Clients.
        #[arg(long, default_value_t = 20, value_parser = value_parser!(u64).range(1..))]
        clients: u64,
        /// Pushes each client keeps in flight.
        #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=100_000))]
        in_flight: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Connect, join, echo, leave and close cycles offered at a rate.
    #[command(allow_negative_numbers = true)]
    Churn {
        /// Cycles offered per second.
        #[arg(long, default_value_t = 500, value_parser = value_parser!(u64).range(1..))]
        rate: u64,
        #[command(flatten)]
        common: Common,
    },
    /// K clients join a topic and stop reading while it is flooded with
    /// large broadcasts, next to one client that reads: the server's memory
    /// growth, and whether the reader still gets everything in time.
    #[command(allow_negative_numbers = true)]
    Stalled {
        /// Clients that join and never read again.
        #[arg(long, default_value_t = 200, value_parser = value_parser!(u64).range(0..))]
        stalled: u64,
        /// Broadcasts per second.
        #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(1..))]
        rate: u64,
        /// Size of each broadcast, in bytes.
        #[arg(long, default_value_t = 32 * 1024, value_parser = value_parser!(u64).range(64..=8_000_000))]
        bytes: u64,
        #[command(flatten)]
        common: Common,
    },
    /// N subscribers to one topic while a publisher sends R messages/s;
    /// each subscriber drops its connection at random (every T s on
    /// average) and reconnects after a random pause, rejoining with the last
    /// position it saw: delivered %, duplicates, order, replays and gaps.
    #[command(allow_negative_numbers = true)]
    Jitter {
        /// Subscribers.
        #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(1..))]
        subscribers: u64,
        /// Messages published per second.
        #[arg(long, default_value_t = 50, value_parser = value_parser!(u64).range(1..))]
        rate: u64,
        /// Mean seconds between a subscriber's drops.
        #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = seconds)]
        drop_every: Duration,
        /// Longest pause before reconnecting, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(0..=600_000))]
        pause_ms: u64,
        /// `false`: a topic without history (the baseline: at most once).
        #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "true|false")]
        history: bool,
        /// Other nodes of the cluster (loopback only): reconnects go to the
        /// --url node and these in turn.
        #[arg(long = "also", value_name = "URL", value_parser = loopback)]
        also: Vec<SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// N users join one presence topic; how long until everyone sees
    /// everyone, and how many presence frames that took.
    #[command(allow_negative_numbers = true)]
    Presence {
        /// Users.
        #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
        n: u64,
        #[command(flatten)]
        common: Common,
    },
}

impl Scenario {
    /// The scenario's name, as on the command line.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Scenario::Conns { .. } => "conns",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Echo { .. } => "echo",
            Scenario::Churn { .. } => "churn",
            Scenario::Presence { .. } => "presence",
            Scenario::Stalled { .. } => "stalled",
            Scenario::Jitter { .. } => "jitter",
        }
    }

    fn common(&self) -> &Common {
        match self {
            Scenario::Conns { common, .. }
            | Scenario::Fanout { common, .. }
            | Scenario::Echo { common, .. }
            | Scenario::Churn { common, .. }
            | Scenario::Presence { common, .. }
            | Scenario::Stalled { common, .. }
            | Scenario::Jitter { common, .. } => common,
        }
    }
}

/// Options common to every scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// The server (http:// or ws://, loopback only).
    #[arg(long = "url", value_name = "URL", default_value = DEFAULT_URL, value_parser = loopback)]
    server: SocketAddr,
    /// The server's process, to read its memory and CPU time from /proc.
    #[arg(long, value_parser = process)]
    pid: Option<u32>,
    /// Seconds of load (at most a day).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    duration: Duration,
}

/// A process that exists, by its id.
fn process(s: &str) -> Result<u32, String> {
    let pid: u32 = s.parse().map_err(|_| "must be a process id".to_owned())?;
    if std::fs::metadata(format!("/proc/{pid}/stat")).is_err() {
        return Err(format!("no process {pid} to read /proc/{pid}/stat from"));
    }
    Ok(pid)
}

/// Seconds, from 0 to a day.
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=86_400.0).contains(f))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "must be a number of seconds from 0 to 86400".to_owned())
}

/// The address of a URL, which must be on loopback.
fn loopback(url: &str) -> Result<SocketAddr, String> {
    let hostport = url.trim_start_matches("http://").trim_start_matches("ws://").trim_end_matches('/');
    let server = hostport
        .to_socket_addrs()
        .map_err(|e| format!("not a loopback host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{hostport} has no address"))?;
    if !server.ip().is_loopback() {
        return Err(format!("refusing to load {server}: only loopback targets are allowed"));
    }
    Ok(server)
}

/// An I/O error as people read it: `connection refused`, without the
/// operating system's error number.
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // the system's messages are capitalized sentences with a number
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => {
            let mut chars = text[..at].chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        _ => text,
    }
}

/// Client source addresses spread over 127.0.0.0/8, so that 20 000
/// connections never run out of ephemeral ports.
fn local_ip(i: u64) -> IpAddr {
    let n = i % 60_000;
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 2 + (n % 250) as u8))
}

/// Raises the soft open-files limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((_, hard)) => {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
            hard
        }
        Err(_) => 1024,
    }
}

fn server_rss_kib(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The server's user + system CPU time.
fn server_cpu(pid: Option<u32>) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux
    Some(Duration::from_millis(ticks * 10))
}

/// A log-linear latency histogram (16 sub-buckets per power of two).
#[derive(Clone)]
struct Histogram(Vec<u64>);

impl Histogram {
    fn new() -> Histogram {
        Histogram(vec![0; 64 * 16])
    }
    fn index(ns: u64) -> usize {
        let v = ns.max(1);
        let exp = 63 - v.leading_zeros() as usize;
        let sub = if exp >= 4 { ((v >> (exp - 4)) & 15) as usize } else { (v as usize) & 15 };
        exp * 16 + sub
    }
    fn record(&mut self, d: Duration) {
        let i = Self::index(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.0[i] += 1;
    }
    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a += b;
        }
    }
    fn count(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The value at percentile `p` (upper edge of its bucket), in ms.
    fn percentile_ms(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= want {
                let (exp, sub) = (i / 16, (i % 16) as u64);
                let upper = if exp >= 4 { ((16 + sub + 1) << (exp - 4)) as f64 } else { (sub + 1) as f64 };
                return upper / 1e6;
            }
        }
        0.0
    }
}

fn report(name: &str, human: &[(String, String)], json_line: Value) {
    println!("== fawkes bench {name}");
    for (k, v) in human {
        println!("  {k:<28} {v}");
    }
    println!("{json_line}");
}

async fn connect_joined(server: SocketAddr, i: u64, query: &str, topic: &str, buf: usize) -> std::io::Result<Client> {
    let mut c = Client::connect(server, local_ip(i), &format!("/socket/websocket?vsn=2.0.0{query}"), buf).await?;
    c.send_text(json!(["1", "1", topic, "phx_join", {}]).to_string().as_bytes()).await?;
    loop {
        let f = c.next().await?;
        let p = c.payload(&f);
        if let Some(fl) = fields(p) {
            if fl[1] == b"1" && fl[3] == b"phx_reply" {
                // once per connection: a real parse, whatever the key order
                let ok = serde_json::from_slice::<Value>(fl[4]).is_ok_and(|v| v["status"] == "ok");
                if !ok {
                    return Err(std::io::Error::other(format!("join refused: {}", String::from_utf8_lossy(fl[4]))));
                }
                return Ok(c);
            }
        }
    }
}

fn run_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    )
}

/// N sockets each joined to a topic; the server's RSS per connection.
async fn conns(o: &Common, n: u64, join: bool) -> Result<(), String> {
    let limit = raise_nofile();
    if n.saturating_add(100) > limit {
        return Err(format!("{n} connections need more than the {limit} open files allowed"));
    }
    let before = server_rss_kib(o.pid);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n as usize);
    let run = run_id();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let server = o.server;
        let topic = format!("room:conns-{run}-{}", i % 100);
        tasks.push(tokio::spawn(async move {
            let c = if join {
                connect_joined(server, i, "", &topic, 1024).await
            } else {
                Client::connect(server, local_ip(i), "/socket/websocket?vsn=2.0.0", 1024).await
            };
            drop(permit);
            c
        }));
    }
    let mut clients = Vec::with_capacity(n as usize);
    let mut failed = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => clients.push(c),
            _ => failed += 1,
        }
    }
    let joined_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server_rss_kib(o.pid);
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if !clients.is_empty() => Some((a.saturating_sub(b)) as f64 / clients.len() as f64),
        _ => None,
    };
    let open = clients.len();
    drop(clients);
    report(
        "conns",
        &[
            ("connections joined".into(), format!("{open} of {n} ({failed} failed)")),
            ("time to connect and join".into(), format!("{:.2} s", joined_in.as_secs_f64())),
            (
                "server RSS before/after".into(),
                match (before, after) {
                    (Some(b), Some(a)) => format!("{b} / {a} KiB"),
                    _ => "n/a (no --pid)".into(),
                },
            ),
            ("server RSS per connection".into(), per_conn.map_or("n/a (no --pid)".into(), |k| format!("{k:.2} KiB"))),
        ],
        json!({"scenario": "conns", "n": n, "joined": open, "failed": failed, "join_s": joined_in.as_secs_f64(), "rss_before_kib": before, "rss_after_kib": after, "rss_per_conn_kib": per_conn}),
    );
    Ok(())
}

#[derive(Clone)]
struct SubStats {
    received: u64,
    dups: u64,
    out_of_order: u64,
    seen: Vec<u64>,
    last: Option<u64>,
    hist: Histogram,
}

/// What `fanout` is asked for.
struct Fanout {
    subs: u64,
    rate: u64,
    bytes: u64,
    publish: Option<SocketAddr>,
    topics: u64,
    node_urls: Vec<SocketAddr>,
    node_pids: Vec<u32>,
    redis_pids: Vec<u32>,
    history: bool,
}

/// CPU time of several processes (`None` for one that cannot be read).
fn cpus(pids: &[Option<u32>]) -> Vec<Option<Duration>> {
    pids.iter().map(|p| server_cpu(*p)).collect()
}

/// S subscribers on T topics over M nodes, a publisher at R messages/s.
async fn fanout(o: &Common, f: Fanout) -> Result<(), String> {
    let Fanout { subs, rate, bytes, publish, topics, node_urls, node_pids, redis_pids, history } = f;
    raise_nofile();
    let run = run_id();
    let prefix = if history { "history" } else { "room" };
    let topic_of =
        |i: u64| if topics == 1 { format!("{prefix}:fanout-{run}") } else { format!("{prefix}:fanout-{run}-{i}") };
    let nodes: Vec<SocketAddr> = std::iter::once(o.server).chain(node_urls.iter().copied()).collect();
    let n_nodes = nodes.len() as u64;
    let base = Instant::now();
    let stop = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicU64::new(0));
    for i in 0..subs {
        let permit = gate.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (node, t) = (i % n_nodes, i % topics);
        let (server, topic, stop, ready) = (nodes[node as usize], topic_of(t), stop.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect_joined(server, i, "", &topic, 64 * 1024).await.ok()?;
            drop(permit);
            ready.fetch_add(1, Ordering::Relaxed);
            let mut st = SubStats { received: 0, dups: 0, out_of_order: 0, seen: Vec::new(), last: None, hist: Histogram::new() };
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    f = c.next() => {
                        let Ok(f) = f else { break };
                        let now = base.elapsed();
                        let p = c.payload(&f);
                        let Some(fl) = fields(p) else { continue };
                        if fl[3] != b"broadcast" { continue }
                        let (Some(t), Some(s)) = (number_after(fl[4], b"\"t\":"), number_after(fl[4], b"\"s\":")) else { continue };
                        st.received += 1;
                        st.hist.record(now.saturating_sub(Duration::from_nanos(t)));
                        let (w, bit) = ((s / 64) as usize, 1u64 << (s % 64));
                        if st.seen.len() <= w { st.seen.resize(w + 1, 0); }
                        if st.seen[w] & bit != 0 { st.dups += 1; } else { st.seen[w] |= bit; }
                        if st.last.is_some_and(|l| s < l) { st.out_of_order += 1; }
                        st.last = Some(st.last.map_or(s, |l| l.max(s)));
                    }
                }
            }
            Some((node, t, st))
        }));
    }
    while ready.load(Ordering::Relaxed) + (tasks.iter().filter(|t| t.is_finished()).count() as u64) < subs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = ready.load(Ordering::Relaxed);
    let publish = publish.unwrap_or(o.server);
    // the publishers join every topic (one may only broadcast on a topic it
    // joined), 100 topics each: a socket's channel limit
    const PER_PUBLISHER: u64 = 100;
    let failed = |e: std::io::Error| format!("a publisher's connection to {publish} failed: {}", reason(&e));
    let mut publishers = Vec::new();
    for p in 0..topics.div_ceil(PER_PUBLISHER) {
        let first = p * PER_PUBLISHER;
        let mut c = connect_joined(publish, subs + 1 + p, "", &topic_of(first), 64 * 1024)
            .await
            .map_err(|e| format!("a publisher cannot join {} on {publish}: {}", topic_of(first), reason(&e)))?;
        let last = (first + PER_PUBLISHER).min(topics);
        for t in first + 1..last {
            c.queue_text(json!(["1", format!("j{t}"), topic_of(t), "phx_join", {}]).to_string().as_bytes());
        }
        c.flush().await.map_err(failed)?;
        let mut joins = first + 1;
        while joins < last {
            let f = c.next().await.map_err(failed)?;
            if reply_slot(c.payload(&f), b'j').is_some() {
                joins += 1;
            }
        }
        publishers.push(c);
    }
    // the publishers' replies are read and dropped
    let pad = "x".repeat(bytes.saturating_sub(40) as usize);
    let watched: Vec<Option<u32>> = std::iter::once(o.pid)
        .chain(node_pids.iter().map(|p| Some(*p)))
        .chain(redis_pids.iter().map(|p| Some(*p)))
        .collect();
    let cpu0 = cpus(&watched);
    let wall0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = (o.duration.as_secs_f64() * rate as f64) as u64;
    let mut next = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let now = Instant::now();
        while next <= now && sent < total {
            let t = u64::try_from(base.elapsed().as_nanos()).unwrap_or(0);
            let topic = sent % topics;
            publishers[(topic / PER_PUBLISHER) as usize].queue_text(
                json!(["1", sent.to_string(), topic_of(topic), "broadcast_from", {"t": t, "s": sent, "p": pad}])
                    .to_string()
                    .as_bytes(),
            );
            sent += 1;
            next += interval;
        }
        for c in &mut publishers {
            c.flush().await.map_err(failed)?;
            // whatever arrived (replies), without waiting
            while let Ok(r) = tokio::time::timeout(Duration::ZERO, c.next()).await {
                r.map_err(failed)?;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = publishers[0].next() => { r.map_err(failed)?; }
        }
    }
    // let the last messages arrive
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wall = wall0.elapsed();
    let cpu1 = cpus(&watched);
    stop.notify_waiters();
    let mut hist = Histogram::new();
    let (mut received, mut dups, mut ooo, mut expected) = (0u64, 0u64, 0u64, 0u64);
    let mut per_node = vec![0u64; nodes.len()];
    for task in tasks {
        if let Ok(Some((node, t, st))) = task.await {
            received += st.received;
            dups += st.dups;
            ooo += st.out_of_order;
            hist.merge(&st.hist);
            per_node[node as usize] += st.received;
            // the messages sent on topic t: s < sent with s mod T = t
            expected += sent / topics + u64::from(t < sent % topics);
        }
    }
    let lost = expected.saturating_sub(received - dups);
    let used = |i: usize| match (cpu0[i], cpu1[i]) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let per_delivery = |i: usize, n: u64| used(i).filter(|_| n > 0).map(|c| c.as_secs_f64() * 1e6 / n as f64);
    let cpu = per_delivery(0, if nodes.len() == 1 { received } else { per_node[0] });
    let mut rows = vec![
        ("subscribers".into(), format!("{joined} of {subs} on {} topic(s), {} node(s)", topics, nodes.len())),
        ("published".into(), format!("{sent} at {rate}/s, {bytes} B")),
        (
            "delivered".into(),
            format!(
                "{received} of {expected} ({:.2} %, {:.0}/s over {:.1} s)",
                if expected > 0 { received as f64 * 100.0 / expected as f64 } else { 0.0 },
                received as f64 / wall.as_secs_f64(),
                wall.as_secs_f64()
            ),
        ),
        ("lost / duplicated / out of order".into(), format!("{lost} / {dups} / {ooo}")),
        (
            "latency p50 / p99 / max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                hist.percentile_ms(50.0),
                hist.percentile_ms(99.0),
                hist.percentile_ms(100.0)
            ),
        ),
        ("server CPU per delivery".into(), cpu.map_or("n/a (no --pid)".into(), |c| format!("{c:.3} µs"))),
    ];
    let mut node_json = Vec::new();
    for (i, addr) in nodes.iter().enumerate() {
        let c = used(i);
        let each = per_delivery(i, per_node[i]);
        if nodes.len() > 1 {
            rows.push((
                format!("node {addr}"),
                format!(
                    "{} delivered; CPU {}{}",
                    per_node[i],
                    c.map_or("n/a".into(), |c| format!(
                        "{:.2} s ({:.0} % of a core)",
                        c.as_secs_f64(),
                        c.as_secs_f64() * 100.0 / wall.as_secs_f64()
                    )),
                    each.map_or(String::new(), |e| format!(", {e:.3} µs per delivery"))
                ),
            ));
        }
        node_json.push(json!({"url": addr.to_string(), "delivered": per_node[i], "cpu_s": c.map(|c| c.as_secs_f64()), "cpu_us_per_delivery": each}));
    }
    let mut redis_json = Vec::new();
    for (j, pid) in redis_pids.iter().enumerate() {
        let c = used(1 + node_pids.len() + j);
        rows.push((
            format!("redis {pid}"),
            c.map_or("n/a".into(), |c| {
                format!(
                    "CPU {:.2} s ({:.0} % of a core), {:.2} µs per published message",
                    c.as_secs_f64(),
                    c.as_secs_f64() * 100.0 / wall.as_secs_f64(),
                    c.as_secs_f64() * 1e6 / sent.max(1) as f64
                )
            }),
        ));
        redis_json.push(json!({"pid": pid, "cpu_s": c.map(|c| c.as_secs_f64())}));
    }
    report(
        "fanout",
        &rows,
        json!({"scenario": "fanout", "subscribers": joined, "topics": topics, "rate": rate, "bytes": bytes, "published": sent, "expected": expected, "delivered": received, "lost": lost, "duplicated": dups, "out_of_order": ooo,
               "p50_ms": hist.percentile_ms(50.0), "p99_ms": hist.percentile_ms(99.0), "max_ms": hist.percentile_ms(100.0), "cpu_us_per_delivery": cpu, "wall_s": wall.as_secs_f64(),
               "nodes": node_json, "redis": redis_json}),
    );
    Ok(())
}

/// The reply ref of a V2 reply frame to one of ours (`<prefix><n>`).
fn reply_slot(payload: &[u8], prefix: u8) -> Option<usize> {
    let fl = fields(payload)?;
    if fl[3] != b"phx_reply" || fl[1].first() != Some(&prefix) {
        return None;
    }
    std::str::from_utf8(&fl[1][1..]).ok()?.parse().ok()
}

/// C clients, each keeping W echo pushes in flight.
async fn echo(o: &Common, clients: u64, window: u64) -> Result<(), String> {
    let window = usize::try_from(window).map_err(|e| e.to_string())?;
    let base = format!("room:echo-{}", run_id());
    let mut conns = Vec::new();
    for i in 0..clients {
        let t = format!("{base}-{i}");
        let c = connect_joined(o.server, i, "", &t, 64 * 1024)
            .await
            .map_err(|e| format!("client {i} cannot join {t} on {}: {}", o.server, reason(&e)))?;
        conns.push((c, t));
    }
    let cpu0 = server_cpu(o.pid);
    let start = Instant::now();
    let end = start + o.duration;
    let mut tasks = Vec::new();
    for (mut c, t) in conns {
        tasks.push(tokio::spawn(async move {
            let frames: Vec<Vec<u8>> = (0..window)
                .map(|w| json!(["1", format!("e{w}"), t, "echo", {"n": w}]).to_string().into_bytes())
                .collect();
            let mut sent_at = vec![Instant::now(); window];
            for (w, f) in frames.iter().enumerate() {
                c.queue_text(f);
                sent_at[w] = Instant::now();
            }
            let mut hist = Histogram::new();
            let mut replies = 0u64;
            if c.flush().await.is_err() {
                return (hist, replies);
            }
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let Ok(Ok(first)) = tokio::time::timeout(end - now, c.next()).await else { break };
                let now = Instant::now();
                let mut next = Some(first);
                while let Some(f) = next {
                    if let Some(w) = reply_slot(c.payload(&f), b'e').filter(|w| *w < window) {
                        hist.record(now - sent_at[w]);
                        replies += 1;
                        sent_at[w] = now;
                        c.queue_text(&frames[w]);
                    }
                    next = c.parse();
                }
                if c.flush().await.is_err() {
                    break;
                }
            }
            (hist, replies)
        }));
    }
    let mut hist = Histogram::new();
    let mut replies = 0;
    for t in tasks {
        if let Ok((h, r)) = t.await {
            hist.merge(&h);
            replies += r;
        }
    }
    let wall = start.elapsed();
    let cpu = match (cpu0, server_cpu(o.pid)) {
        (Some(a), Some(b)) if replies > 0 => Some((b - a).as_secs_f64() * 1e6 / replies as f64),
        _ => None,
    };
    report(
        "echo",
        &[
            ("clients x in flight".into(), format!("{clients} x {window}")),
            ("replies".into(), format!("{replies} ({:.0}/s)", replies as f64 / wall.as_secs_f64())),
            (
                "round trip p50 / p99 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    hist.percentile_ms(50.0),
                    hist.percentile_ms(99.0),
                    hist.percentile_ms(100.0)
                ),
            ),
            ("server CPU per reply".into(), cpu.map_or("n/a (no --pid)".into(), |c| format!("{c:.3} µs"))),
        ],
        json!({"scenario": "echo", "clients": clients, "in_flight": window, "replies": replies, "replies_per_s": replies as f64 / wall.as_secs_f64(),
               "p50_ms": hist.percentile_ms(50.0), "p99_ms": hist.percentile_ms(99.0), "max_ms": hist.percentile_ms(100.0), "cpu_us_per_reply": cpu}),
    );
    Ok(())
}

/// One churn cycle: connect, join, echo, leave, close.
async fn cycle(server: SocketAddr, i: u64, topic: &str) -> std::io::Result<()> {
    let mut c = connect_joined(server, i, "", topic, 2048).await?;
    for (r, event) in [(2, "echo"), (3, "phx_leave")] {
        c.send_text(json!(["1", format!("c{r}"), topic, event, {}]).to_string().as_bytes()).await?;
        loop {
            let f = c.next().await?;
            if reply_slot(c.payload(&f), b'c') == Some(r) {
                break;
            }
        }
    }
    // a close frame, then the socket is dropped
    c.send_close().await.ok();
    Ok(())
}

/// Connect, join, echo, leave and close cycles offered at a rate.
async fn churn(o: &Common, rate: u64) -> Result<(), String> {
    let limit = raise_nofile();
    let gate = Arc::new(Semaphore::new((limit.saturating_sub(200)) as usize));
    let total = (o.duration.as_secs_f64() * rate as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let run = run_id();
    let cpu0 = server_cpu(o.pid);
    let start = Instant::now();
    let mut next = start;
    let mut tasks = Vec::with_capacity(total.min(1 << 16) as usize);
    let mut refused = 0u64;
    for i in 0..total {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            refused += 1;
            continue;
        };
        let (server, topic) = (o.server, format!("room:churn-{run}-{}", i % 1000));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(10), cycle(server, i, &topic)).await;
            drop(permit);
            (matches!(r, Ok(Ok(()))), t0.elapsed())
        }));
    }
    let offered_for = start.elapsed();
    let mut hist = Histogram::new();
    let (mut ok, mut failed) = (0u64, refused);
    for t in tasks {
        match t.await {
            Ok((true, d)) => {
                ok += 1;
                hist.record(d);
            }
            _ => failed += 1,
        }
    }
    let wall = start.elapsed();
    let cpu = match (cpu0, server_cpu(o.pid)) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() / wall.as_secs_f64() * 100.0),
        _ => None,
    };
    report(
        "churn",
        &[
            ("offered".into(), format!("{total} cycles at {rate}/s over {:.1} s", offered_for.as_secs_f64())),
            ("completed / failed".into(), format!("{ok} / {failed}")),
            ("completed per second".into(), format!("{:.0}", ok as f64 / offered_for.as_secs_f64())),
            (
                "cycle p50 / p99 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    hist.percentile_ms(50.0),
                    hist.percentile_ms(99.0),
                    hist.percentile_ms(100.0)
                ),
            ),
            ("server CPU".into(), cpu.map_or("n/a (no --pid)".into(), |c| format!("{c:.0}% of a core"))),
        ],
        json!({"scenario": "churn", "rate": rate, "offered": total, "completed": ok, "failed": failed, "completed_per_s": ok as f64 / offered_for.as_secs_f64(),
               "p50_ms": hist.percentile_ms(50.0), "p99_ms": hist.percentile_ms(99.0), "max_ms": hist.percentile_ms(100.0), "server_cpu_pct": cpu}),
    );
    Ok(())
}

/// Applies a presence_state or presence_diff payload to a set of keys.
fn apply_presence(keys: &mut HashSet<String>, event: &[u8], payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else { return };
    match event {
        b"presence_state" => {
            if let Some(m) = v.as_object() {
                keys.extend(m.keys().cloned());
            }
        }
        _ => {
            if let Some(m) = v["joins"].as_object() {
                keys.extend(m.keys().cloned());
            }
            if let Some(m) = v["leaves"].as_object() {
                for k in m.keys() {
                    keys.remove(k);
                }
            }
        }
    }
}

/// N users join one presence topic; how long until everyone sees everyone,
/// and how many presence frames that took.
async fn presence(o: &Common, n: u64) -> Result<(), String> {
    raise_nofile();
    let topic = format!("presence:bench-{}", run_id());
    let base = Instant::now();
    let last_join = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::new();
    let deadline = o.duration.max(Duration::from_secs(30));
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (server, topic, last_join, frames) = (o.server, topic.clone(), last_join.clone(), frames.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect_joined(server, i, &format!("&user_id=u{i}"), &topic, 64 * 1024).await.ok()?;
            drop(permit);
            last_join.fetch_max(u64::try_from(base.elapsed().as_nanos()).unwrap_or(0), Ordering::Relaxed);
            let mut keys = HashSet::new();
            let done = tokio::time::timeout(deadline, async {
                loop {
                    let f = c.next().await.ok()?;
                    let mut next = Some(f);
                    while let Some(f) = next {
                        if let Some(fl) = fields(c.payload(&f)) {
                            if fl[3] == b"presence_state" || fl[3] == b"presence_diff" {
                                frames.fetch_add(1, Ordering::Relaxed);
                                apply_presence(&mut keys, fl[3], fl[4]);
                            }
                        }
                        next = c.parse();
                    }
                    if keys.len() as u64 >= n {
                        return Some(base.elapsed());
                    }
                }
            })
            .await
            .ok()
            .flatten();
            // keep the socket until everyone is done, so that no one leaves early
            Some((done, c))
        }));
    }
    let mut all_seen: Option<Duration> = Some(Duration::ZERO);
    let mut joined = 0;
    let mut held = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Some((done, c))) => {
                joined += 1;
                held.push(c);
                all_seen = match (all_seen, done) {
                    (Some(a), Some(d)) => Some(a.max(d)),
                    _ => None,
                };
            }
            _ => all_seen = None,
        }
    }
    let last = Duration::from_nanos(last_join.load(Ordering::Relaxed));
    let after_last = all_seen.map(|d| d.saturating_sub(last));
    let total_frames = frames.load(Ordering::Relaxed);
    drop(held);
    report(
        "presence",
        &[
            ("users joined".into(), format!("{joined} of {n}")),
            (
                "everyone saw everyone".into(),
                after_last.map_or("no (timed out)".into(), |d| {
                    format!("{:.0} ms after the last join reply", d.as_secs_f64() * 1e3)
                }),
            ),
            ("presence frames received".into(), format!("{total_frames}")),
        ],
        json!({"scenario": "presence", "n": n, "joined": joined, "ms_after_last_join": after_last.map(|d| d.as_secs_f64() * 1e3), "frames": total_frames}),
    );
    Ok(())
}

/// K stalled readers and one reader on a topic flooded at R broadcasts/s.
async fn stalled(o: &Common, k: u64, rate: u64, bytes: u64) -> Result<(), String> {
    let limit = raise_nofile();
    if k.saturating_add(100) > limit {
        return Err(format!("{k} connections need more than the {limit} open files allowed"));
    }
    let topic = format!("room:stalled-{}", run_id());
    let mut stalled = Vec::new();
    for i in 0..k {
        // a small read buffer: these clients read their join reply, then
        // nothing more
        let c = connect_joined(o.server, i, "", &topic, 1024)
            .await
            .map_err(|e| format!("stalled client {i} cannot join {topic}: {}", reason(&e)))?;
        stalled.push(c);
    }
    let mut reader = connect_joined(o.server, k + 1, "", &topic, 256 * 1024)
        .await
        .map_err(|e| format!("the reader cannot join {topic}: {}", reason(&e)))?;
    let mut publisher = connect_joined(o.server, k + 2, "", &topic, 64 * 1024)
        .await
        .map_err(|e| format!("the publisher cannot join {topic}: {}", reason(&e)))?;
    let rss0 = server_rss_kib(o.pid);
    let mut rss_max = rss0;
    let base = Instant::now();
    let pad = "x".repeat(bytes.saturating_sub(60) as usize);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = (o.duration.as_secs_f64() * rate as f64) as u64;
    let (mut sent, mut received, mut ooo) = (0u64, 0u64, 0u64);
    let mut last: Option<u64> = None;
    let mut hist = Histogram::new();
    let mut next = Instant::now();
    let mut sampled = Instant::now();
    let end_of_reading = |sent: u64, received: u64| sent >= total && received >= total;
    let deadline = o.duration + Duration::from_secs(10);
    while !end_of_reading(sent, received) && base.elapsed() < deadline {
        let now = Instant::now();
        while next <= now && sent < total {
            let t = u64::try_from(base.elapsed().as_nanos()).unwrap_or(0);
            publisher.queue_text(
                json!(["1", sent.to_string(), topic, "broadcast_from", {"t": t, "s": sent, "p": pad}])
                    .to_string()
                    .as_bytes(),
            );
            sent += 1;
            next += interval;
        }
        publisher.flush().await.map_err(|e| format!("the publisher's connection failed: {}", reason(&e)))?;
        while publisher.parse().is_some() {}
        if sampled.elapsed() >= Duration::from_millis(250) {
            sampled = Instant::now();
            rss_max = match (rss_max, server_rss_kib(o.pid)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let wait =
            if sent < total { next.saturating_duration_since(Instant::now()) } else { Duration::from_millis(50) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = publisher.next() => { r.map_err(|e| format!("the publisher's connection failed: {}", reason(&e)))?; }
            f = reader.next() => {
                let mut f = Some(f.map_err(|e| format!("the reader was closed: {}", reason(&e)))?);
                let now = base.elapsed();
                // everything already read, not one frame per turn
                while let Some(at) = f {
                    let p = reader.payload(&at);
                    if let Some(fl) = fields(p) {
                        if fl[3] == b"broadcast" {
                            if let (Some(t), Some(s)) = (number_after(fl[4], b"\"t\":"), number_after(fl[4], b"\"s\":")) {
                                received += 1;
                                hist.record(now.saturating_sub(Duration::from_nanos(t)));
                                if last.is_some_and(|l| s != l + 1) { ooo += 1; }
                                last = Some(s);
                            }
                        }
                    }
                    f = reader.parse();
                }
            }
        }
    }
    let rss1 = server_rss_kib(o.pid);
    // which stalled clients did the server close? (they read to the end now)
    let mut closed = 0u64;
    for mut c in stalled {
        let gone = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if c.next().await.is_err() {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false);
        closed += u64::from(gone);
    }
    let growth = match (rss0, rss_max) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    report(
        "stalled",
        &[
            ("stalled readers closed".into(), format!("{closed} of {k}")),
            ("published".into(), format!("{sent} at {rate}/s, {bytes} B")),
            ("reader received".into(), format!("{received} of {sent}, {ooo} out of order or missing")),
            (
                "reader latency p50 / p99 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    hist.percentile_ms(50.0),
                    hist.percentile_ms(99.0),
                    hist.percentile_ms(100.0)
                ),
            ),
            (
                "server RSS before / max / after".into(),
                match (rss0, rss_max, rss1) {
                    (Some(a), Some(b), Some(c)) => format!("{a} / {b} / {c} KiB"),
                    _ => "n/a (no --pid)".into(),
                },
            ),
            ("server RSS growth at most".into(), growth.map_or("n/a (no --pid)".into(), |g| format!("{g} KiB"))),
        ],
        json!({"scenario": "stalled", "stalled": k, "closed": closed, "rate": rate, "bytes": bytes, "published": sent, "received": received, "out_of_order": ooo,
               "p50_ms": hist.percentile_ms(50.0), "p99_ms": hist.percentile_ms(99.0), "max_ms": hist.percentile_ms(100.0),
               "rss_before_kib": rss0, "rss_max_kib": rss_max, "rss_after_kib": rss1, "rss_growth_kib": growth}),
    );
    Ok(())
}

/// The options of `fawkes bench jitter`.
struct JitterOpts {
    subscribers: u64,
    rate: u64,
    drop_every: Duration,
    pause: Duration,
    history: bool,
    also: Vec<SocketAddr>,
}

/// A small xorshift generator: random enough for drop times, seeded per
/// subscriber, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponentially distributed duration with this mean.
    fn exp(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(-(1.0 - self.next_f64()).ln())
    }
}

#[derive(Default)]
struct JitterStats {
    first: Option<u64>,
    received: u64,
    dups: u64,
    out_of_order: u64,
    replayed: u64,
    gaps: u64,
    reconnects: u64,
    failed_joins: u64,
    seen: Vec<u64>,
}

/// Connects and joins `topic` with `since` (when given): the join reply.
async fn join_since(server: SocketAddr, i: u64, topic: &str, since: Option<&str>) -> std::io::Result<Client> {
    let mut c = Client::connect(server, local_ip(i), "/socket/websocket?vsn=2.0.0", 64 * 1024).await?;
    let params = match since {
        Some(p) => json!({"since": p}),
        None => json!({}),
    };
    c.send_text(json!(["1", "1", topic, "phx_join", params]).to_string().as_bytes()).await?;
    loop {
        let f = c.next().await?;
        let p = c.payload(&f);
        if let Some(fl) = fields(p) {
            if fl[1] == b"1" && fl[3] == b"phx_reply" {
                let ok = serde_json::from_slice::<Value>(fl[4]).is_ok_and(|v| v["status"] == "ok");
                if !ok {
                    return Err(std::io::Error::other(format!("join refused: {}", String::from_utf8_lossy(fl[4]))));
                }
                return Ok(c);
            }
        }
    }
}

/// One subscriber of the jitter scenario: read, drop, pause, rejoin.
async fn jitter_subscriber(
    nodes: Arc<Vec<SocketAddr>>,
    i: u64,
    topic: String,
    o: Arc<JitterOpts>,
    stop: Arc<Notify>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> JitterStats {
    let mut st = JitterStats::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut position: Option<String> = None;
    let mut node = i as usize % nodes.len();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let mut highest: Option<u64> = None;
    loop {
        let since = if o.history { position.as_deref() } else { None };
        let mut c = match join_since(nodes[node], i, &topic, since).await {
            Ok(c) => c,
            Err(_) => {
                st.failed_joins += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let joined_at = Instant::now();
        let drop_at = tokio::time::sleep(rng.exp(o.drop_every));
        tokio::pin!(drop_at);
        loop {
            tokio::select! {
                _ = &mut stopped => return st,
                // once publishing is over, no more drops: everyone catches up
                _ = &mut drop_at, if !done.load(Ordering::Relaxed) => break,
                f = c.next() => {
                    let Ok(f) = f else { break };
                    let p = c.payload(&f);
                    let Some(fl) = fields(p) else { continue };
                    if fl[3] == b"history_gap" { st.gaps += 1; continue }
                    if fl[3] != b"broadcast" { continue }
                    let (Some(t), Some(s)) = (number_after(fl[4], b"\"t\":"), number_after(fl[4], b"\"s\":")) else { continue };
                    if fl[1] != b"null" {
                        position = Some(String::from_utf8_lossy(fl[1]).into_owned());
                    }
                    // sent before this connection joined: it came from history
                    let sent_at = Duration::from_nanos(t);
                    if st.reconnects > 0 && sent_at < joined_at.duration_since(base()) {
                        st.replayed += 1;
                    }
                    let first = *st.first.get_or_insert(s);
                    if s < first { continue }
                    let k = s - first;
                    let (w, bit) = ((k / 64) as usize, 1u64 << (k % 64));
                    if st.seen.len() <= w { st.seen.resize(w + 1, 0); }
                    if st.seen[w] & bit != 0 { st.dups += 1; continue }
                    st.seen[w] |= bit;
                    st.received += 1;
                    if highest.is_some_and(|h| s < h) { st.out_of_order += 1; }
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
            }
        }
        drop(c);
        st.reconnects += 1;
        let pause = o.pause.mul_f64(rng.next_f64());
        tokio::select! {
            _ = &mut stopped => return st,
            _ = tokio::time::sleep(pause) => {}
        }
        node = (node + 1) % nodes.len();
    }
}

/// The instant the jitter run's timestamps count from.
static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// `fawkes bench jitter`.
async fn jitter(o: &Common, j: JitterOpts) -> Result<(), String> {
    let limit = raise_nofile();
    if j.subscribers.saturating_add(100) > limit {
        return Err(format!("{} connections need more than the {limit} open files allowed", j.subscribers));
    }
    let base = base();
    let prefix = if j.history { "history" } else { "room" };
    let topic = format!("{prefix}:jitter-{}", run_id());
    let mut nodes = vec![o.server];
    nodes.extend(j.also.iter().copied());
    let nodes = Arc::new(nodes);
    let j = Arc::new(j);
    let stop = Arc::new(Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publisher = connect_joined(o.server, j.subscribers + 1, "", &topic, 64 * 1024)
        .await
        .map_err(|e| format!("the publisher cannot join {topic} on {}: {}", o.server, reason(&e)))?;
    let mut tasks = Vec::new();
    for i in 0..j.subscribers {
        let task = jitter_subscriber(nodes.clone(), i, topic.clone(), j.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(task));
    }
    // let every subscriber join once before publishing
    tokio::time::sleep(Duration::from_millis(500)).await;
    let interval = Duration::from_secs_f64(1.0 / j.rate as f64);
    let total = (o.duration.as_secs_f64() * j.rate as f64) as u64;
    let mut next = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let now = Instant::now();
        while next <= now && sent < total {
            let t = u64::try_from(Instant::now().duration_since(base).as_nanos()).unwrap_or(0);
            publisher.queue_text(
                json!(["1", sent.to_string(), topic, "broadcast_from", {"t": t, "s": sent}]).to_string().as_bytes(),
            );
            sent += 1;
            next += interval;
        }
        publisher.flush().await.map_err(|e| format!("the publisher's connection failed: {}", reason(&e)))?;
        while publisher.parse().is_some() {}
        let wait = next.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = publisher.next() => { r.map_err(|e| format!("the publisher's connection failed: {}", reason(&e)))?; }
        }
    }
    // no more drops: everyone reconnects one last time and catches up
    done.store(true, Ordering::Relaxed);
    tokio::time::sleep(j.pause + Duration::from_secs(3)).await;
    stop.notify_waiters();
    let (mut received, mut expected, mut dups, mut ooo, mut replayed, mut gaps, mut reconnects, mut failed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        if let Ok(st) = t.await {
            if let Some(first) = st.first {
                expected += sent.saturating_sub(first);
            }
            received += st.received;
            dups += st.dups;
            ooo += st.out_of_order;
            replayed += st.replayed;
            gaps += st.gaps;
            reconnects += st.reconnects;
            failed += st.failed_joins;
        }
    }
    let pct = if expected > 0 { received as f64 * 100.0 / expected as f64 } else { 0.0 };
    report(
        "jitter",
        &[
            ("topic".into(), format!("{topic} ({} nodes)", nodes.len())),
            ("published".into(), format!("{sent} at {}/s", j.rate)),
            ("reconnects".into(), format!("{reconnects} ({failed} joins failed and were retried)")),
            ("delivered".into(), format!("{received} of {expected} ({pct:.3} %)")),
            ("duplicates / out of order".into(), format!("{dups} / {ooo}")),
            ("replayed / gaps signalled".into(), format!("{replayed} / {gaps}")),
        ],
        json!({"scenario": "jitter", "history": j.history, "nodes": nodes.len(), "subscribers": j.subscribers, "rate": j.rate, "published": sent,
               "expected": expected, "delivered": received, "delivered_pct": pct, "duplicates": dups, "out_of_order": ooo,
               "replayed": replayed, "gaps": gaps, "reconnects": reconnects, "failed_joins": failed}),
    );
    Ok(())
}

/// Runs a scenario; a bounded time after its load ends, it returns.
pub(crate) fn run(scenario: Scenario) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let o = scenario.common().clone();
    let limit = o.duration + Duration::from_secs(120);
    rt.block_on(async {
        let work = async {
            match scenario {
                Scenario::Conns { n, join, .. } => conns(&o, n, join).await,
                Scenario::Fanout {
                    subscribers,
                    rate,
                    bytes,
                    publish_url,
                    topics,
                    node_urls,
                    node_pids,
                    redis_pids,
                    history,
                    ..
                } => {
                    if !node_pids.is_empty() && node_pids.len() != node_urls.len() {
                        return Err(format!(
                            "give one --node-pid per --node-url ({} for {})",
                            node_pids.len(),
                            node_urls.len()
                        ));
                    }
                    let f = Fanout {
                        subs: subscribers,
                        rate,
                        bytes,
                        publish: publish_url,
                        topics,
                        node_urls,
                        node_pids,
                        redis_pids,
                        history,
                    };
                    fanout(&o, f).await
                }
                Scenario::Echo { clients, in_flight, .. } => echo(&o, clients, in_flight).await,
                Scenario::Churn { rate, .. } => churn(&o, rate).await,
                Scenario::Presence { n, .. } => presence(&o, n).await,
                Scenario::Stalled { stalled: k, rate, bytes, .. } => stalled(&o, k, rate, bytes).await,
                Scenario::Jitter { subscribers, rate, drop_every, pause_ms, history, also, .. } => {
                    let j = JitterOpts {
                        subscribers,
                        rate,
                        drop_every,
                        pause: Duration::from_millis(pause_ms),
                        history,
                        also,
                    };
                    jitter(&o, j).await
                }
            }
        };
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| Err("the run did not finish in time".into()))
    })
}
