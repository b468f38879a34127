//! `fawkes bench` refuses what it must refuse, before it sends anything,
//! describes every scenario, and reports what it measured in plain words.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;

use fawkes::{
    Channel, ChannelContext, ChannelError, ConnectError, ConnectInfo, Endpoint, HandleIn, Join, Params, Payload,
    Socket, SocketHandler,
};

const SCENARIOS: [&str; 5] = ["conns", "fanout", "echo", "churn", "presence"];

/// The exit code, stdout and stderr of `fawkes bench <args>`.
fn bench(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = Command::new(env!("CARGO_BIN_EXE_fawkes")).args(&all).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// A usage error: exit code 2, nothing on stdout, `wanted` on stderr.
fn assert_usage_error(args: &[&str], wanted: &str) {
    let (code, out, err) = bench(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(out, "", "{args:?}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(wanted), "{args:?}: {err}");
}

/// A loopback port that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Anyone;

impl Socket for Anyone {
    type Assigns = ();

    async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
        Ok(())
    }
}

struct Room;

impl Channel<Anyone> for Room {
    type Info = ();

    async fn join(_: &str, _: Payload, _: &mut ChannelContext<Anyone, ()>) -> Result<Join<Self>, ChannelError> {
        Ok(Join::ok(Room))
    }

    async fn handle_in(
        &mut self,
        _: &str,
        payload: Payload,
        _: &mut ChannelContext<Anyone, ()>,
    ) -> Result<HandleIn, ChannelError> {
        Ok(HandleIn::ok(payload))
    }
}

/// A Phoenix-protocol server with `room:*` on a free loopback port, in this
/// process, for as long as the test runs.
fn server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let endpoint = Endpoint::local();
            let app = endpoint.socket("/socket", SocketHandler::new(Anyone).channel::<Room>("room:*"));
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
        });
    });
    addr
}

#[test]
fn targets_off_loopback_are_refused() {
    for args in [
        &["fanout", "--url", "http://192.0.2.1:4000"][..],
        &["fanout", "--url", "http://127.0.0.1:4000", "--publish-url", "http://192.0.2.1:4000"],
        &["echo", "--url", "ws://[2001:db8::1]:4000"],
    ] {
        assert_usage_error(args, "only loopback targets are allowed");
    }
}

#[test]
fn unknown_scenarios_and_arguments_are_usage_errors() {
    assert_usage_error(&["nope"], "Usage: fawkes bench <SCENARIO>");
    assert_usage_error(&["nope"], "'nope'");
    // no scenario: the help, on stderr, as a usage error
    let (code, out, err) = bench(&[]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("Usage: fawkes bench <SCENARIO>") && err.contains("presence"), "{err}");
    assert_usage_error(&["echo", "stray"], "unexpected argument 'stray'");
}

#[test]
fn unknown_options_are_usage_errors() {
    assert_usage_error(&["--secs", "3"], "unexpected argument '--secs'");
    assert_usage_error(&["echo", "--secs", "3"], "unexpected argument '--secs'");
    assert_usage_error(&["fanout", "--bogus", "x"], "unexpected argument '--bogus'");
    // options of another scenario
    assert_usage_error(&["churn", "--publish-url", "http://127.0.0.1:4001"], "unexpected argument '--publish-url'");
    assert_usage_error(&["echo", "--n", "5"], "unexpected argument '--n'");
    assert_usage_error(&["conns", "--clients", "5"], "unexpected argument '--clients'");
}

#[test]
fn bad_numbers_and_missing_values_are_usage_errors() {
    for (args, option) in [
        (&["echo", "--clients", "abc"][..], "--clients"),
        (&["echo", "--in-flight", "0"], "--in-flight"),
        (&["conns", "--n", "-5"], "--n"),
        (&["conns", "--n", "0"], "--n"),
        (&["conns", "--n", "1.5"], "--n"),
        (&["conns", "--join", "maybe"], "--join"),
        (&["fanout", "--rate", "0"], "--rate"),
        (&["fanout", "--subscribers", "99999999999999999999999"], "--subscribers"),
        (&["fanout", "--bytes", "9000000"], "--bytes"),
        (&["churn", "--rate", "fast"], "--rate"),
        (&["presence", "--n", "many"], "--n"),
        (&["echo", "--duration", "-1"], "--duration"),
        (&["echo", "--duration", "NaN"], "--duration"),
        (&["echo", "--duration", "1e30"], "--duration"),
        (&["echo", "--duration", "ten"], "--duration"),
        (&["echo", "--pid", "abc"], "--pid"),
        (&["echo", "--url", "nowhere"], "--url"),
        (&["echo", "--url"], "--url"),
        (&["presence", "--n"], "--n"),
        (&["fanout", "--publish-url"], "--publish-url"),
    ] {
        assert_usage_error(args, &format!("'{option} <"));
    }
}

#[test]
fn a_pid_that_names_no_process_is_refused() {
    // above Linux's largest process id
    assert_usage_error(&["echo", "--pid", "4294967295"], "no process 4294967295");
}

#[test]
fn every_scenario_has_help() {
    let (code, out, _) = bench(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: fawkes bench <SCENARIO>"), "{out}");
    for s in SCENARIOS {
        assert!(out.contains(&format!("\n  {s} ")), "{s}: {out}");
    }
    let own: [&[&str]; 5] = [
        &["--n <N>", "--join <true|false>"],
        &["--subscribers", "--rate", "--bytes", "--publish-url"],
        &["--clients", "--in-flight"],
        &["--rate"],
        &["--n <N>"],
    ];
    for (s, own) in SCENARIOS.iter().zip(own) {
        for help in [&["--help"][..], &["-h"]] {
            let (code, out, err) = bench(&[&[*s][..], help].concat());
            assert_eq!((code, err.as_str()), (0, ""), "{s}");
            assert!(out.contains(&format!("Usage: fawkes bench {s} [OPTIONS]")), "{s}: {out}");
            for option in own.iter().chain(&["--url <URL>", "--pid <PID>", "--duration <SECONDS>"]) {
                assert!(out.contains(option), "{s} has no {option}: {out}");
            }
        }
    }
    // `help <scenario>` is the same page
    let (code, out, _) = bench(&["help", "fanout"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: fawkes bench fanout [OPTIONS]"), "{out}");
}

#[test]
fn a_server_that_is_not_there_is_a_run_error() {
    let port = closed_port();
    let (code, out, err) = bench(&["echo", "--url", &format!("http://127.0.0.1:{port}"), "--duration", "1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "");
    assert!(err.starts_with("fawkes bench echo: "), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    // no debug text, no usage: the command line was right
    assert!(!err.contains("Os {") && !err.contains("os error") && !err.contains("Usage"), "{err}");
}

#[test]
fn conns_reports_memory_in_plain_numbers() {
    let addr = server();
    let url = format!("http://{addr}");
    let pid = std::process::id().to_string();
    let (code, out, err) = bench(&["conns", "--n", "5", "--url", &url, "--pid", &pid]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Some(") && !out.contains("None"), "{out}");
    assert!(out.contains("5 of 5 (0 failed)"), "{out}");
    let rss = out.lines().find(|l| l.trim_start().starts_with("server RSS before/after")).unwrap();
    let value = rss.trim_start().trim_start_matches("server RSS before/after").trim();
    let (before, after) = value.strip_suffix(" KiB").unwrap().split_once(" / ").unwrap();
    assert!(before.parse::<u64>().unwrap() > 0 && after.parse::<u64>().unwrap() > 0, "{rss}");
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(json["joined"], 5);
    assert!(json["rss_before_kib"].is_u64(), "{json}");

    // without --pid there is nothing to read, and it says so
    let (code, out, err) = bench(&["conns", "--n", "2", "--join", "false", "--url", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Some(") && !out.contains("None"), "{out}");
    assert!(out.contains("server RSS before/after") && out.contains("n/a (no --pid)"), "{out}");
}
