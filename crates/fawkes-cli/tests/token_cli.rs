//! The `fawkes token` commands, run as a user runs them.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const SECRET: &str = "fawkes-test-secret-key-base-0123456789abcdefghijklmnopqrstuvwxyz";

fn fawkes(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fawkes")).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn sign_reproduces_a_phoenix_token_and_verify_reads_it() {
    // Phoenix.Token.sign(secret, "user auth", 123, signed_at: 1700000000000, max_age: 86400)
    let want = "SFMyNTY.g2gDYXtuBwAAQB4YJAoGYgABUYA.TmjBhb0W5wHEBCCo8fHvtncUvMh5voVT_9omqbB5scM";
    let (code, out, _) = fawkes(&[
        "token",
        "sign",
        "--secret-key-base",
        SECRET,
        "--salt",
        "user auth",
        "--data",
        "123",
        "--signed-at",
        "1700000000000",
        "--max-age",
        "86400",
    ]);
    assert_eq!((code, out.as_str()), (0, want));
    let (code, out, _) = fawkes(&[
        "token",
        "sign",
        "--secret-key-base",
        SECRET,
        "--salt",
        "user auth",
        "--data",
        "123",
        "--signed-at-ms",
        "1700000000000000",
        "--max-age",
        "86400",
    ]);
    assert_eq!((code, out.as_str()), (0, want));
    let (code, out, _) =
        fawkes(&["token", "verify", "--secret-key-base", SECRET, "--salt", "user auth", "--token", want]);
    assert_eq!((code, out.as_str()), (0, "123"));
}

#[test]
fn verify_reports_expired_invalid_and_missing() {
    let (_, token, _) = fawkes(&[
        "token",
        "sign",
        "--secret-key-base",
        SECRET,
        "--salt",
        "s",
        "--data",
        r#"{"user_id":7}"#,
        "--signed-at-ms",
        "1000000",
        "--max-age",
        "60",
    ]);
    let (code, out, _) = fawkes(&[
        "token",
        "verify",
        "--secret-key-base",
        SECRET,
        "--salt",
        "s",
        "--token",
        &token,
        "--now-ms",
        "1060000",
    ]);
    assert_eq!((code, out.as_str()), (0, r#"{"user_id":7}"#));
    let (code, _, err) = fawkes(&[
        "token",
        "verify",
        "--secret-key-base",
        SECRET,
        "--salt",
        "s",
        "--token",
        &token,
        "--now-ms",
        "1060001",
    ]);
    assert_eq!((code, err.trim()), (1, "expired"));
    let (code, _, err) =
        fawkes(&["token", "verify", "--secret-key-base", SECRET, "--salt", "other", "--token", &token]);
    assert_eq!((code, err.trim()), (1, "invalid"));
    let (code, _, err) = fawkes(&["token", "verify", "--secret-key-base", SECRET, "--salt", "s"]);
    assert_eq!((code, err.trim()), (1, "missing"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(fawkes(&["token", "sign", "--salt", "s", "--data", "1"]).0, 2);
    assert_eq!(fawkes(&["token", "sign", "--secret-key-base", SECRET, "--salt", "s", "--data", "{nope"]).0, 2);
    assert_eq!(fawkes(&["token", "frobnicate"]).0, 2);
    assert_eq!(fawkes(&[]).0, 2);
}

/// Exit code 2, nothing on stdout, and `wanted` on stderr.
fn assert_usage_error(args: &[&str], wanted: &str) {
    let (code, out, err) = fawkes(args);
    assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
    assert!(err.starts_with("error: ") && err.contains(wanted), "{args:?}: {err}");
}

#[test]
fn unknown_options_missing_values_and_bad_values_are_named() {
    let sign = ["token", "sign", "--secret-key-base", SECRET, "--salt", "s", "--data", "1"];
    let verify = ["token", "verify", "--secret-key-base", SECRET, "--salt", "s", "--token", "t"];
    let with =
        |base: &[&str], more: &[&str]| -> Vec<String> { base.iter().chain(more).map(|s| (*s).to_owned()).collect() };
    for (args, wanted) in [
        (with(&sign, &["--bogus", "x"]), "unexpected argument '--bogus'"),
        (with(&verify, &["--data", "1"]), "unexpected argument '--data'"),
        (with(&sign, &["--max-age"]), "a value is required for '--max-age <SECONDS>'"),
        (with(&verify, &["--now-ms"]), "a value is required for '--now-ms <MS>'"),
        (with(&sign, &["--max-age", "forever"]), "invalid value 'forever' for '--max-age <SECONDS>'"),
        (with(&sign, &["--max-age", "inf"]), "invalid value 'inf' for '--max-age <SECONDS>'"),
        (with(&verify, &["--max-age", "NaN"]), "invalid value 'NaN' for '--max-age <SECONDS>'"),
        (with(&sign, &["--signed-at-ms", "yesterday"]), "invalid value 'yesterday' for '--signed-at-ms <MS>'"),
        (with(&sign, &["--signed-at-ms", "-1"]), "invalid value '-1' for '--signed-at-ms <MS>'"),
        (with(&sign, &["--signed-at", "-1"]), "invalid value '-1' for '--signed-at <SECONDS>'"),
        (with(&sign, &["--signed-at", "1", "--signed-at-ms", "1000"]), "cannot be used with"),
        (with(&verify, &["--now-ms", "abc"]), "invalid value 'abc' for '--now-ms <MS>'"),
        (with(&sign[..6], &["--data", "{nope"]), "invalid value '{nope' for '--data <JSON>': not JSON"),
        (
            with(&["token", "sign", "--secret-key-base", "short", "--salt", "s", "--data", "1"], &[]),
            "at least 20 bytes",
        ),
        (with(&sign[..6], &[]), "--data <JSON>"),
        (with(&["token", "verify", "--salt", "s"], &[]), "--secret-key-base <S>"),
        (with(&["frobnicate"], &[]), "unrecognized subcommand 'frobnicate'"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_usage_error(&args, wanted);
    }
    // no subcommand: the help, on stderr, as a usage error
    let (code, out, err) = fawkes(&["token"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("Usage: fawkes token <COMMAND>") && err.contains("verify"), "{err}");
    // a negative max age is a number: the token is expired at once
    let (code, token, _) = fawkes(&with(&sign, &["--max-age", "-5"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0);
    let (code, _, err) = fawkes(&["token", "verify", "--secret-key-base", SECRET, "--salt", "s", "--token", &token]);
    assert_eq!((code, err.trim()), (1, "expired"));
}

#[test]
fn every_command_has_help() {
    for (args, usage, options) in [
        (&["--help"][..], "Usage: fawkes <COMMAND>", &["token", "bench"][..]),
        (&["token", "--help"], "Usage: fawkes token <COMMAND>", &["sign", "verify"]),
        (
            &["token", "sign", "--help"],
            "Usage: fawkes token sign",
            &[
                "--secret-key-base <S>",
                "--salt <SALT>",
                "--data <JSON>",
                "--signed-at-ms <MS>",
                "--signed-at <SECONDS>",
                "--max-age <SECONDS>",
            ],
        ),
        (
            &["token", "verify", "--help"],
            "Usage: fawkes token verify",
            &["--secret-key-base <S>", "--salt <SALT>", "--token <T>", "--max-age <SECONDS>", "--now-ms <MS>"],
        ),
        (&["help", "token", "verify"], "Usage: fawkes token verify", &["expired, invalid, missing"]),
    ] {
        let (code, out, err) = fawkes(args);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
        assert!(out.contains(usage), "{args:?}: {out}");
        for o in options {
            assert!(out.contains(o), "{args:?} has no {o}: {out}");
        }
    }
}
