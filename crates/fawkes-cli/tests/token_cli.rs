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
