//! The `fawkes` command.
//!
//! ```text
//! fawkes token sign   --secret-key-base S --salt SALT --data JSON [--signed-at-ms MS | --signed-at SECONDS] [--max-age S|infinity]
//! fawkes token verify --secret-key-base S --salt SALT --token T [--max-age S|infinity] [--now-ms MS]
//! fawkes bench <conns|fanout|echo|churn|presence> [options]
//! ```
//!
//! `fawkes help`, `fawkes <command> --help` and `fawkes bench <scenario>
//! --help` describe every option. `sign` prints the token. `verify` prints
//! the data as JSON, or exits with status 1 and the reason (`expired`,
//! `invalid`, `missing`) on stderr. `bench` prints its results, or exits with
//! status 1 and the reason when the run fails. Usage errors (an unknown
//! command or option, a missing or bad value) exit with status 2.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fawkes_token::{sign, verify, MaxAge, SignOptions, VerifyOptions, MIN_SECRET_LEN};

mod bench;

/// Phoenix.Token minting and checking, and load tests of Phoenix-protocol
/// servers.
#[derive(Debug, Parser)]
#[command(name = "fawkes", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mints and checks Phoenix.Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Loads a Phoenix-protocol server on loopback with one of the scenarios
    /// of docs/benchmarks.md (the rooms of the conformance contract, the V2
    /// protocol).
    #[command(subcommand, subcommand_value_name = "SCENARIO", subcommand_help_heading = "Scenarios")]
    Bench(bench::Scenario),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Prints a token signed as Phoenix.Token.sign does.
    #[command(allow_negative_numbers = true)]
    Sign(SignArgs),
    /// Prints the data of a token as JSON, or exits with status 1 and the
    /// reason (expired, invalid, missing) on stderr.
    #[command(allow_negative_numbers = true)]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The secret key base (at least 20 bytes, as Phoenix requires).
    #[arg(long, value_name = "S", value_parser = secret_key_base)]
    secret_key_base: String,
    /// The salt (Phoenix.Token's second argument).
    #[arg(long)]
    salt: String,
    /// The data to sign, as JSON.
    #[arg(long, value_name = "JSON", value_parser = json)]
    data: serde_json::Value,
    /// When the token was signed, in milliseconds since the Unix epoch
    /// [default: now].
    #[arg(long, value_name = "MS")]
    signed_at_ms: Option<u64>,
    /// When the token was signed, in seconds, as Phoenix.Token's signed_at
    /// option (stored times 1000).
    #[arg(long, value_name = "SECONDS", conflicts_with = "signed_at_ms", value_parser = signed_at_seconds)]
    signed_at: Option<f64>,
    /// Seconds the token stays valid, stored in the token, or `infinity`
    /// [default: 86400].
    #[arg(long, value_name = "SECONDS", value_parser = max_age)]
    max_age: Option<MaxAge>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The secret key base the token was signed with.
    #[arg(long, value_name = "S")]
    secret_key_base: String,
    /// The salt the token was signed with.
    #[arg(long)]
    salt: String,
    /// The token; without it, the answer is `missing`.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Seconds the token stays valid, or `infinity`, instead of the max age
    /// stored in the token.
    #[arg(long, value_name = "SECONDS", value_parser = max_age)]
    max_age: Option<MaxAge>,
    /// The time to verify at, in milliseconds since the Unix epoch
    /// [default: now].
    #[arg(long, value_name = "MS")]
    now_ms: Option<u64>,
}

fn secret_key_base(s: &str) -> Result<String, String> {
    if s.len() < MIN_SECRET_LEN {
        return Err(format!("must be at least {MIN_SECRET_LEN} bytes, got {}", s.len()));
    }
    Ok(s.to_owned())
}

fn json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn signed_at_seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        // the milliseconds must fit the token's integer
        .filter(|f| f.is_finite() && *f >= 0.0 && *f * 1000.0 < u64::MAX as f64)
        .ok_or_else(|| "must be a number of seconds since the Unix epoch".to_owned())
}

fn max_age(s: &str) -> Result<MaxAge, String> {
    if s == "infinity" {
        return Ok(MaxAge::Infinity);
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(MaxAge::Seconds)
        .ok_or_else(|| "must be a number of seconds or `infinity`".to_owned())
}

fn token(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Sign(a) => {
            let mut opts = SignOptions { signed_at_ms: a.signed_at_ms, ..SignOptions::default() };
            if let Some(s) = a.signed_at {
                opts = opts.signed_at_seconds(s);
            }
            if let Some(m) = a.max_age {
                opts.max_age = m;
            }
            match sign(&a.secret_key_base, &a.salt, &a.data, &opts) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    // the arguments were checked: this is still a usage error
                    eprintln!("fawkes token sign: {e}");
                    ExitCode::from(2)
                }
            }
        }
        TokenCommand::Verify(a) => {
            let opts = VerifyOptions { max_age: a.max_age, now_ms: a.now_ms };
            match verify::<serde_json::Value>(&a.secret_key_base, &a.salt, a.token.as_deref(), &opts) {
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
    }
}

fn main() -> ExitCode {
    // usage errors exit with status 2, --help and --version with 0
    let cli = Cli::parse();
    match cli.command {
        Command::Token(t) => token(t),
        Command::Bench(scenario) => {
            let name = scenario.name();
            match bench::run(scenario) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fawkes bench {name}: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
