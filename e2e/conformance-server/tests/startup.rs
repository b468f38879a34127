//! The server's start-up, run as a user runs it: a bad environment, a port
//! in use or an unreachable Redis stop it at once with one line that names
//! what failed and where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every variable the server reads.
const VARS: [&str; 11] = [
    "PORT",
    "SOCKET_TIMEOUT_MS",
    "PRESENCE_DIFF_WINDOW_MS",
    "RATE_LIMITS",
    "REDIS_URL",
    "NODE_NAME",
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
