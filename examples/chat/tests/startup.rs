//! The server's start-up, run as a user runs it: a bad environment, a port
//! in use, an unreachable database or Redis stop it within seconds with one
//! line that names what failed and where, and never a password.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every variable the server reads.
const VARS: [&str; 13] = [
    "PORT",
    "DATABASE_URL",
    "SECRET_KEY_BASE",
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

const PASSWORD: &str = "hunter2-not-for-logs";

/// A SQLite URL in a directory of its own, removed with it.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("fawkes-chat-startup-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDb(dir)
    }
    fn url(&self) -> String {
        format!("sqlite://{}/chat.db?mode=rwc", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fawkes-chat"));
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Runs the server with `env` and expects it to fail: its stderr, after
/// checking that it exited with status 1 within `within`, said one line,
/// no debug text and no password.
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
    assert!(err.starts_with("fawkes-chat: "), "{env:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
    for debug in ["Os {", "kind:", "os error", "panicked", "backtrace", "Error {", "Io(", "PoolTimedOut", PASSWORD] {
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
    let db = TempDb::new("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = fails(&[("PORT", &port), ("DATABASE_URL", &db.url())], Duration::from_secs(5));
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}: address already in use")), "{err}");
}

#[test]
fn bad_values_are_named_with_the_variable() {
    let db = TempDb::new("values");
    let mysql = format!("mysql://u:{PASSWORD}@127.0.0.1/db");
    for (env, wanted) in [
        (&[("PORT", "notaport")][..], r#"PORT must be a port number (0-65535), got "notaport""#),
        (&[("PORT", "65536")], r#"PORT must be a port number (0-65535), got "65536""#),
        (&[("PORT", "")], r#"PORT must be a port number (0-65535), got """#),
        (
            &[("DATABASE_URL", &mysql)],
            r#"DATABASE_URL must be a sqlite:... or postgres://... URL, got "mysql://u@127.0.0.1/db (password hidden)""#,
        ),
        (&[("DATABASE_URL", "")], r#"DATABASE_URL must be"#),
        (&[("SECRET_KEY_BASE", "short-secret")], "SECRET_KEY_BASE must be at least 20 bytes, got 12"),
        (&[("RUST_LOG", "info,=[")], "RUST_LOG must be a log filter"),
        (&[("REDIS_URL", "redis://127.0.0.1:1"), ("NODE_NAME", "")], "NODE_NAME must not be empty"),
        (&[("REDIS_URL", "http://127.0.0.1:6379")], r#"REDIS_URL must be redis://"#),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("REDIS_SHARDED", "many")],
            r#"REDIS_SHARDED must be a number of channels (1 to 65536), got "many""#,
        ),
        (
            &[("REDIS_URL", "rediss://127.0.0.1:1"), ("REDIS_KEY_FILE", "/nonexistent/key.pem")],
            r#"REDIS_KEY_FILE must name a readable file, got "/nonexistent/key.pem": no such file or directory"#,
        ),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("REDIS_CA_FILE", "Cargo.toml")],
            "REDIS_CA_FILE needs a rediss:// REDIS_URL (TLS)",
        ),
        (
            &[("REDIS_URL", "rediss://127.0.0.1:1"), ("REDIS_KEY_FILE", "Cargo.toml")],
            "REDIS_CERT_FILE and REDIS_KEY_FILE go together: give both or neither",
        ),
        (&[("PHOENIX_PUBSUB_NAME", "MyApp.PubSub")], "PHOENIX_PUBSUB_NAME needs REDIS_URL"),
        (
            &[("REDIS_URL", "redis://127.0.0.1:1"), ("PHOENIX_PUBSUB_NAME", "MyApp.PubSub.")],
            r#"PHOENIX_PUBSUB_NAME must be an Elixir module name such as MyApp.PubSub, got "MyApp.PubSub.""#,
        ),
        (
            &[
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("PHOENIX_PUBSUB_NAME", "MyApp.PubSub"),
                ("PHOENIX_PRESENCE_POOL_SIZE", "many"),
            ],
            r#"PHOENIX_PRESENCE_POOL_SIZE must be a number of shards (1 to 1024), got "many""#,
        ),
    ] {
        let mut env = env.to_vec();
        let port = closed_port().to_string();
        let url = db.url();
        for (k, v) in [("PORT", port.as_str()), ("DATABASE_URL", url.as_str())] {
            if !env.iter().any(|(name, _)| *name == k) {
                env.push((k, v));
            }
        }
        let err = fails(&env, Duration::from_secs(5));
        assert!(err.contains(wanted), "{env:?}: {err}");
        assert!(!err.contains("short-secret"), "{err}");
    }
}

#[test]
fn an_unreachable_redis_is_named() {
    let db = TempDb::new("redis");
    let port = closed_port().to_string();
    let redis = closed_port();
    let err = fails(
        &[("PORT", &port), ("DATABASE_URL", &db.url()), ("REDIS_URL", &format!("redis://127.0.0.1:{redis}"))],
        Duration::from_secs(10),
    );
    assert!(
        err.contains(&format!("cannot connect to Redis at redis://127.0.0.1:{redis}: connection refused")),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let port = closed_port().to_string();
    let pg = closed_port();
    let url = format!("postgres://u:{PASSWORD}@127.0.0.1:{pg}/db");
    let err = fails(&[("PORT", &port), ("DATABASE_URL", &url)], Duration::from_secs(10));
    assert!(
        err.contains(&format!(
            "cannot connect to the database at postgres://u@127.0.0.1:{pg}/db (password hidden): connection refused"
        )),
        "{err}"
    );
}

#[test]
fn a_database_that_never_answers_fails_within_seconds() {
    // accepts connections (the system does) and never says a word
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pg = silent.local_addr().unwrap().port();
    let port = closed_port().to_string();
    let url = format!("postgres://u:{PASSWORD}@127.0.0.1:{pg}/db");
    let started = Instant::now();
    let err = fails(&[("PORT", &port), ("DATABASE_URL", &url)], Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_secs(4), "{err}");
    assert!(
        err.contains(&format!(
            "the database at postgres://u@127.0.0.1:{pg}/db (password hidden): no answer within 5 s"
        )),
        "{err}"
    );
}

#[test]
fn port_zero_and_valid_values_start_the_server() {
    let db = TempDb::new("ok");
    let mut child = spawn(&[
        ("PORT", "0"),
        ("DATABASE_URL", &db.url()),
        ("SECRET_KEY_BASE", "a-secret-key-base-long-enough-for-phoenix"),
        ("REDIS_URL", ""),
        ("RUST_LOG", "info"),
    ]);
    // the log line names the port the system chose
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("fawkes-chat on http://127.0.0.1:") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "no address logged");
    }
    let at = line.find("http://127.0.0.1:").unwrap() + "http://".len();
    let addr: String = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains(r#"{"status":"ok"}"#), "{reply}");
}
