//! The server's start-up, run as a user runs it: a bad environment, a port
//! in use or an unreachable Redis stop it at once with one line that names
//! what failed and where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every variable the server reads.
const VARS: [&str; 14] = [
    "PORT",
    "SOCKET_TIMEOUT_MS",
    "PRESENCE_DIFF_WINDOW_MS",
    "RATE_LIMITS",
    "REDIS_URL",
    "NODE_NAME",
    "PHOENIX_PUBSUB_NAME",
    "PHOENIX_PRESENCE_NAME",
    "PHOENIX_PRESENCE_POOL_SIZE",
    "RUST_LOG",
    "REDIS_CA_FILE",
    "REDIS_CERT_FILE",
    "REDIS_KEY_FILE",
    "REDIS_SHARDED",
];

fn spawn(env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conformance-server"));
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Runs the server with `env` and expects it to fail: its stderr, after
/// checking that it exited with status 1 within `within`, and said nothing
/// but one line.
fn fails(env: &[(&str, &str)], within: Duration) -> String {
    let mut child = spawn(env);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > within {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{env:?}: still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{env:?}: {err}");
    assert!(err.starts_with("conformance-server: "), "{env:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
    for debug in ["Os {", "kind:", "os error", "panicked", "backtrace", "Error {", "Io("] {
        assert!(!err.contains(debug), "{env:?}: {err}");
    }
    err
}

/// A loopback port that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = fails(&[("PORT", &port)], Duration::from_secs(5));
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}: address already in use")), "{err}");
}

#[test]
fn bad_values_are_named_with_the_variable() {
    for (env, wanted) in [
        (&[("PORT", "notaport")][..], r#"PORT must be a port number (0-65535), got "notaport""#),
        (&[("PORT", "65536")], r#"got "65536""#),
        (&[("PORT", "")], r#"PORT must be a port number (0-65535), got """#),
        (&[("PORT", "-1")], r#"got "-1""#),
        (
            &[("SOCKET_TIMEOUT_MS", "soon")],
            r#"SOCKET_TIMEOUT_MS must be a number of milliseconds (1 to 86400000), got "soon""#,
        ),
        (&[("SOCKET_TIMEOUT_MS", "0")], r#"SOCKET_TIMEOUT_MS must be"#),
        (
            &[("PRESENCE_DIFF_WINDOW_MS", "-5")],
            r#"PRESENCE_DIFF_WINDOW_MS must be a number of milliseconds (0 to 86400000), got "-5""#,
        ),
        (&[("PRESENCE_DIFF_WINDOW_MS", "99999999999999999999")], r#"PRESENCE_DIFF_WINDOW_MS must be"#),
        (&[("RATE_LIMITS", "no")], r#"RATE_LIMITS must be "on" or "off", got "no""#),
        (&[("RUST_LOG", "info,=[")], r#"RUST_LOG must be a log filter"#),
        (&[("REDIS_URL", "redis://127.0.0.1:1"), ("NODE_NAME", "")], "NODE_NAME must not be empty"),
        (&[("REDIS_URL", "http://127.0.0.1:6379")], r#"REDIS_URL must be redis://"#),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("REDIS_SHARDED", "0")],
            r#"REDIS_SHARDED must be a number of channels (1 to 65536), got "0""#,
        ),
        (
            &[("REDIS_URL", "rediss://127.0.0.1:1"), ("REDIS_CA_FILE", "/nonexistent/ca.pem")],
            r#"REDIS_CA_FILE must name a readable file, got "/nonexistent/ca.pem": no such file or directory"#,
        ),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("REDIS_CA_FILE", "Cargo.toml")],
            "REDIS_CA_FILE needs a rediss:// REDIS_URL (TLS)",
        ),
        (
            &[("REDIS_URL", "rediss://127.0.0.1:1"), ("REDIS_CERT_FILE", "Cargo.toml")],
            "REDIS_CERT_FILE and REDIS_KEY_FILE go together: give both or neither",
        ),
        (
            &[("REDIS_URL", "rediss://127.0.0.1:1"), ("REDIS_CA_FILE", "Cargo.toml")],
            "the CA file Cargo.toml holds no PEM CERTIFICATE",
        ),
        (&[("PHOENIX_PUBSUB_NAME", "MyApp.PubSub")], "PHOENIX_PUBSUB_NAME needs REDIS_URL"),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("PHOENIX_PUBSUB_NAME", "my_app.pubsub")],
            r#"PHOENIX_PUBSUB_NAME must be an Elixir module name such as MyApp.PubSub, got "my_app.pubsub""#,
        ),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("PHOENIX_PUBSUB_NAME", "MyApp.Bus")],
            "PHOENIX_PRESENCE_NAME must be set when PHOENIX_PUBSUB_NAME (MyApp.Bus) does not end in .PubSub",
        ),
        (
            &[
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("PHOENIX_PUBSUB_NAME", "MyApp.PubSub"),
                ("PHOENIX_PRESENCE_NAME", "Presence!"),
            ],
            r#"PHOENIX_PRESENCE_NAME must be an Elixir module name"#,
        ),
        (
            &[
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("PHOENIX_PUBSUB_NAME", "MyApp.PubSub"),
                ("PHOENIX_PRESENCE_POOL_SIZE", "0"),
            ],
            r#"PHOENIX_PRESENCE_POOL_SIZE must be a number of shards (1 to 1024), got "0""#,
        ),
        (
            &[("PHOENIX_PRESENCE_POOL_SIZE", "2")],
            "PHOENIX_PRESENCE_NAME and PHOENIX_PRESENCE_POOL_SIZE need PHOENIX_PUBSUB_NAME",
        ),
    ] {
        let mut env = env.to_vec();
        let port = closed_port().to_string();
        if !env.iter().any(|(k, _)| *k == "PORT") {
            env.push(("PORT", &port));
        }
        let err = fails(&env, Duration::from_secs(5));
        assert!(err.contains(wanted), "{env:?}: {err}");
    }
}

#[test]
fn an_unreachable_redis_is_named() {
    let port = closed_port().to_string();
    let redis = closed_port();
    let err = fails(&[("PORT", &port), ("REDIS_URL", &format!("redis://127.0.0.1:{redis}"))], Duration::from_secs(10));
    assert!(
        err.contains(&format!("cannot connect to Redis at redis://127.0.0.1:{redis}: connection refused")),
        "{err}"
    );
}

#[test]
fn port_zero_and_valid_values_start_the_server() {
    let mut child = spawn(&[
        ("PORT", "0"),
        ("SOCKET_TIMEOUT_MS", "30000"),
        ("PRESENCE_DIFF_WINDOW_MS", "100"),
        ("RATE_LIMITS", "off"),
        ("REDIS_URL", ""),
        ("RUST_LOG", "warn"),
    ]);
    // the log line names the port the system chose
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let at = line.find("http://127.0.0.1:").expect(&line) + "http://".len();
    let addr: String = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok"), "{reply}");
}

/// With `PHOENIX_PUBSUB_NAME` the server is on that PubSub's channel
/// (`phx:Elixir.<name>.Adapter`), and `/metrics` has the adapter's
/// counters next to the endpoint's.
#[test]
fn a_phoenix_pubsub_name_picks_its_channel() {
    let redis = fawkes_redis::test_server::RedisServer::start();
    let mut child = spawn(&[
        ("PORT", "0"),
        ("REDIS_URL", &redis.url()),
        ("NODE_NAME", "fawkes-test"),
        ("PHOENIX_PUBSUB_NAME", "Elixir.MyApp.PubSub"),
        ("PHOENIX_PRESENCE_POOL_SIZE", "4"),
        ("RUST_LOG", "warn"),
    ]);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let at = line.find("http://127.0.0.1:").expect(&line) + "http://".len();
    let addr: String = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    let channels = redis_command(&redis, &["PUBSUB", "CHANNELS", "*"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(metrics.contains("\nfawkes_connections 0\n"), "{metrics}");
    assert!(metrics.contains("\nfawkes_redis_ignored_total "), "{metrics}");
    assert!(metrics.contains("# TYPE fawkes_redis_publish_duration_seconds histogram\n"), "{metrics}");
    assert!(channels.contains("phx:Elixir.MyApp.PubSub.Adapter"), "{channels}");
}

/// One command to Redis; its reply as text.
fn redis_command(redis: &fawkes_redis::test_server::RedisServer, args: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
