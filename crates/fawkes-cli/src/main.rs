//! The `fawkes` command.
//!
//! ```text
//! fawkes token sign   --secret-key-base S --salt SALT --data JSON [--signed-at-ms MS | --signed-at SECONDS] [--max-age S|infinity]
//! fawkes token verify --secret-key-base S --salt SALT --token T [--max-age S|infinity] [--now-ms MS]
//! ```
//!
//! `sign` prints the token. `verify` prints the data as JSON, or exits with
//! status 1 and the reason (`expired`, `invalid`, `missing`) on stderr.
//! Usage errors exit with status 2.

use std::collections::HashMap;
use std::process::ExitCode;

use fawkes_token::{sign, verify, MaxAge, SignOptions, VerifyOptions};

mod bench;

const USAGE: &str = "usage:
  fawkes bench <conns|fanout|echo|churn|presence> [options]   (fawkes bench --help)
  fawkes token sign   --secret-key-base S --salt SALT --data JSON [--signed-at-ms MS | --signed-at SECONDS] [--max-age SECONDS|infinity]
  fawkes token verify --secret-key-base S --salt SALT --token T [--max-age SECONDS|infinity] [--now-ms MS]

  --signed-at-ms  when the token was signed, in milliseconds since the Unix epoch (default: now)
  --signed-at     the same in seconds, as Phoenix.Token's signed_at option (stored times 1000)
  --max-age       seconds the token stays valid (sign: stored in the token, default 86400;
                  verify: overrides the stored value)
  --now-ms        the time to verify at, in milliseconds (default: now)";

fn usage(msg: &str) -> ExitCode {
    eprintln!("fawkes: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn flags(args: &[String], allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a:?}"))?;
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => (name.to_owned(), it.next().ok_or_else(|| format!("--{name} needs a value"))?.clone()),
        };
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown option --{name}"));
        }
        out.insert(name, value);
    }
    Ok(out)
}

fn max_age(s: &str) -> Result<MaxAge, String> {
    if s == "infinity" {
        return Ok(MaxAge::Infinity);
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(MaxAge::Seconds)
        .ok_or_else(|| format!("invalid --max-age {s:?}"))
}

fn required<'a>(f: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    f.get(name).map(String::as_str).ok_or_else(|| format!("--{name} is required"))
}

fn token(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("sign") => {
            let f =
                match flags(&args[1..], &["secret-key-base", "salt", "data", "signed-at-ms", "signed-at", "max-age"]) {
                    Ok(f) => f,
                    Err(e) => return usage(&e),
                };
            let run = || -> Result<String, String> {
                let data: serde_json::Value =
                    serde_json::from_str(required(&f, "data")?).map_err(|e| format!("--data is not JSON: {e}"))?;
                let mut opts = SignOptions::default();
                if let Some(ms) = f.get("signed-at-ms") {
                    opts.signed_at_ms = Some(ms.parse().map_err(|_| format!("invalid --signed-at-ms {ms:?}"))?);
                }
                if let Some(s) = f.get("signed-at") {
                    opts = opts.signed_at_seconds(s.parse().map_err(|_| format!("invalid --signed-at {s:?}"))?);
                }
                if let Some(m) = f.get("max-age") {
                    opts.max_age = max_age(m)?;
                }
                sign(required(&f, "secret-key-base")?, required(&f, "salt")?, &data, &opts).map_err(|e| e.to_string())
            };
            match run() {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => usage(&e),
            }
        }
        Some("verify") => {
            let f = match flags(&args[1..], &["secret-key-base", "salt", "token", "max-age", "now-ms"]) {
                Ok(f) => f,
                Err(e) => return usage(&e),
            };
            let mut opts = VerifyOptions::default();
            if let Some(m) = f.get("max-age") {
                match max_age(m) {
                    Ok(m) => opts.max_age = Some(m),
                    Err(e) => return usage(&e),
                }
            }
            if let Some(ms) = f.get("now-ms") {
                match ms.parse() {
                    Ok(ms) => opts.now_ms = Some(ms),
                    Err(_) => return usage(&format!("invalid --now-ms {ms:?}")),
                }
            }
            let (Ok(secret), Ok(salt)) = (required(&f, "secret-key-base"), required(&f, "salt")) else {
                return usage("--secret-key-base and --salt are required");
            };
            match verify(secret, salt, f.get("token").map(String::as_str), &opts) {
                Ok(data) => {
                    println!("{data}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => usage("expected `token sign` or `token verify`"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("token") => token(&args[1..]),
        Some("bench") => match bench::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fawkes bench: {e}\n{}", bench::USAGE);
                ExitCode::from(2)
            }
        },
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("expected a command"),
    }
}
