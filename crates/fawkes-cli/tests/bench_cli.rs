//! `fawkes bench` refuses what it must refuse, before it sends anything.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bench(args: &[&str]) -> (i32, String) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = Command::new(env!("CARGO_BIN_EXE_fawkes")).args(&all).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn targets_off_loopback_are_refused() {
    for args in [
        &["fanout", "--url", "http://192.0.2.1:4000"][..],
        &["fanout", "--url", "http://127.0.0.1:4000", "--publish-url", "http://192.0.2.1:4000"],
        &["echo", "--url", "ws://[2001:db8::1]:4000"],
    ] {
        let (code, err) = bench(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains("only loopback targets are allowed"), "{args:?}: {err}");
    }
}

#[test]
fn unknown_scenarios_and_arguments_are_usage_errors() {
    let (code, err) = bench(&["nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("usage: fawkes bench"), "{err}");
    let (code, err) = bench(&["echo", "stray"]);
    assert_ne!(code, 0);
    assert!(err.contains("unexpected argument"), "{err}");
}
