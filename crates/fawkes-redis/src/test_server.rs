//! Throwaway Redis processes for tests: a `redis-server` on a free loopback
//! port (optionally with a password or TLS), a master with a replica and
//! sentinels, a Redis Cluster; all without persistence, stopped when
//! dropped. They need `redis-server` and `redis-cli` (Debian: `apt-get
//! install redis-server`; the project's `scripts/test.sh` installs it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port whose neighbour 10 000 above is free too (a cluster
/// node's bus port).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        if port != 0 && port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fawkes-redis-{what}-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::create_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files of a TLS server: its certificate and key, and the CA that
/// client certificates must chain to (`tls-auth-clients` is on when
/// `require_client_cert`).
#[derive(Debug, Clone)]
pub struct TlsServerFiles {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA of client certificates (PEM).
    pub ca: PathBuf,
    /// Whether a client must show a certificate.
    pub require_client_cert: bool,
}

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    tls: Option<TlsServerFiles>,
    extra: Vec<String>,
    child: Option<Child>,
}

fn kill(child: &mut Child) {
    // a stopped process must be resumed to die at once
    let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
    let _ = child.kill();
    let _ = child.wait();
}

impl RedisServer {
    /// Starts a server on a free port.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not answer within
    /// five seconds.
    pub fn start() -> RedisServer {
        RedisServer::start_with_password(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        RedisServer::start_with(password, None, &[])
    }

    /// Starts a server that only takes TLS connections, with `tls`'s
    /// files; [`RedisServer::url`] is then `rediss://`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_tls(tls: TlsServerFiles) -> RedisServer {
        RedisServer::start_with(None, Some(tls), &[])
    }

    /// Starts a server with a password, TLS and `extra` arguments
    /// (`--replicaof`, say), each optional.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(password: Option<&str>, tls: Option<TlsServerFiles>, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            password: password.map(str::to_owned),
            tls,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// The URL to connect with (with the password, if any).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (connections to it fail).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Freezes the process (`SIGSTOP`): connections stay open and nothing
    /// answers, as with a stalled server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a process frozen by [`RedisServer::pause`] (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(tls) => cmd.args(["--port", "0", "--tls-port", &port]).args(tls_args(tls)),
        };
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(&self.extra);
        self.child = Some(spawn(cmd));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer within 5 s", self.port);
    }

    /// Runs a command with `redis-cli` against this server; its output.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.args(["--no-auth-warning", "-a", p]);
        }
        if let Some(tls) = &self.tls {
            // the client shows the server's own certificate, signed by the same CA
            cmd.args(["--tls", "--cacert"]).arg(&tls.ca).arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
        }
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("could not run redis-cli ({e})"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn answers(&self) -> bool {
        if self.tls.is_some() {
            return self.cli(&["PING"]).trim() == "PONG";
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let cmd = match &self.password {
            Some(p) => format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n*1\r\n$4\r\nPING\r\n", p.len()),
            None => "*1\r\n$4\r\nPING\r\n".to_owned(),
        };
        if s.write_all(cmd.as_bytes()).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"+PONG\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    }
}

fn tls_args(tls: &TlsServerFiles) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--tls-cert-file".into(),
        path(&tls.cert),
        "--tls-key-file".into(),
        path(&tls.key),
        "--tls-ca-cert-file".into(),
        path(&tls.ca),
        "--tls-auth-clients".into(),
        if tls.require_client_cert { "yes" } else { "no" }.into(),
    ]
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!("could not start redis-server ({e}): install it (Debian: apt-get install redis-server)")
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A master, a replica and sentinels watching them (quorum 1, a master
/// down after one second).
#[derive(Debug)]
pub struct SentinelSetup {
    /// The master at start.
    pub master: RedisServer,
    /// Its replica.
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    _dir: TempDir,
}

/// The name the sentinels know the master by.
pub const SENTINEL_MASTER: &str = "fawkes";

impl SentinelSetup {
    /// Starts a master, a replica of it and `sentinels` sentinels, and
    /// waits until the sentinels have found the replica.
    ///
    /// # Panics
    ///
    /// When a process does not start or the setup is not ready within ten
    /// seconds.
    pub fn start(sentinels: usize) -> SentinelSetup {
        let master = RedisServer::start();
        let of = format!("127.0.0.1 {}", master.port());
        let replica = RedisServer::start_with(None, None, &["--replicaof", &of]);
        let dir = TempDir::new("sentinel");
        let mut running = Vec::new();
        for i in 0..sentinels.max(1) {
            let port = free_port();
            let conf = dir.0.join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                master.port()
            );
            std::fs::write(&conf, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            running.push((port, spawn(cmd)));
        }
        let setup = SentinelSetup { master, replica, sentinels: running, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = setup.sentinels.iter().all(|(port, _)| {
                let out = sentinel_cli(*port, &["SENTINEL", "REPLICAS", SENTINEL_MASTER]);
                out.contains(&setup.replica.port().to_string()) && !out.contains("s_down")
            });
            if ready && setup.replica.cli(&["INFO", "replication"]).contains("master_link_status:up") {
                return setup;
            }
            assert!(Instant::now() < deadline, "the sentinels did not find the replica within 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+sentinel://` with every sentinel.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The port of the master the first sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let out = sentinel_cli(self.sentinels[0].0, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Asks the first sentinel for a failover (`SENTINEL FAILOVER`) and
    /// waits until the sentinels name the replica as the master.
    ///
    /// # Panics
    ///
    /// When the sentinel refuses for fifteen seconds, or the failover takes
    /// more than fifteen seconds.
    pub fn failover(&self) {
        // a sentinel may not have heard from the replica recently enough
        // to promote it yet (NOGOODSLAVE): it asks it every second
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = sentinel_cli(self.sentinels[0].0, &["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
            if out.contains("OK") {
                break;
            }
            assert!(Instant::now() < deadline && out.contains("NOGOODSLAVE"), "SENTINEL FAILOVER: {out}");
            std::thread::sleep(Duration::from_millis(250));
        }
        self.wait_for_master(self.replica.port());
    }

    /// Waits until the sentinels name the master on `port`.
    ///
    /// # Panics
    ///
    /// When that takes more than fifteen seconds.
    pub fn wait_for_master(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.master_port() != Some(port) || !self.replica_is_master(port) {
            assert!(Instant::now() < deadline, "no failover to port {port} within 15 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn replica_is_master(&self, port: u16) -> bool {
        let server = if self.replica.port() == port { &self.replica } else { &self.master };
        server.cli(&["ROLE"]).starts_with("master")
    }
}

fn sentinel_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            kill(child);
        }
    }
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each
/// (`--cluster-enabled yes`, a node timeout of one second).
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, masters first as `redis-cli --cluster create` chose
    /// them at start.
    pub nodes: Vec<RedisServer>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// says it is ok.
    ///
    /// # Panics
    ///
    /// When a process does not start or the cluster is not ready within
    /// twenty seconds.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = TempDir::new("cluster");
        let n = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|i| {
                let conf = dir.0.join(format!("nodes-{i}.conf")).display().to_string();
                RedisServer::start_with(
                    None,
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                        "--dir",
                        &dir.0.display().to_string(),
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("could not run redis-cli --cluster create ({e})"));
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and agrees
    /// on `masters` masters.
    ///
    /// # Panics
    ///
    /// When that takes longer than `within`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster was not ok within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes that are masters now (by `ROLE`).
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes.iter().filter(|n| n.pid().is_some() && n.cli(&["ROLE"]).starts_with("master")).collect()
    }

    /// The index in [`RedisCluster::nodes`] of the master of `channel`'s slot.
    pub fn master_of(&self, channel: &str) -> Option<usize> {
        let slot: u16 = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", channel]).trim().parse().ok()?;
        self.nodes.iter().position(|n| n.pid().is_some() && n.cli(&["ROLE"]).starts_with("master") && owns(n, slot))
    }
}

/// Whether `node` owns `slot` (by `CLUSTER NODES`, the line marked `myself`).
fn owns(node: &RedisServer, slot: u16) -> bool {
    let nodes = node.cli(&["CLUSTER", "NODES"]);
    let Some(me) = nodes.lines().find(|l| l.contains("myself")) else { return false };
    me.split_whitespace().skip(8).any(|range| match range.split_once('-') {
        Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
        None => range.parse::<u16>() == Ok(slot),
    })
}
