//! What both of the project's apps read from their environment to join a
//! cluster, for any application that wants the same variables:
//! [`config_from_env`] (`REDIS_URL`, `REDIS_CA_FILE`, `REDIS_CERT_FILE`,
//! `REDIS_KEY_FILE`, `REDIS_SHARDED`) and [`PhoenixApp::from_env`]
//! (`PHOENIX_PUBSUB_NAME`, `PHOENIX_PRESENCE_NAME`,
//! `PHOENIX_PRESENCE_POOL_SIZE`). A bad value is an error that names the
//! variable and the value, never replaced by a default.

use crate::RedisConfig;

/// A variable's value; `None` when it is not set.
fn var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(format!("{name} must be valid UTF-8, got {:?}", v.to_string_lossy()))
        }
    }
}

/// An I/O error's reason in words, without the system's error number.
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => {
            let mut chars = text[..at].chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        _ => text,
    }
}

/// The cluster's Redis from `REDIS_URL` (none when unset or empty), with
/// `REDIS_CA_FILE`, `REDIS_CERT_FILE` and `REDIS_KEY_FILE` for TLS and
/// `REDIS_SHARDED` for sharded fan-out; the node's name is left empty.
///
/// # Errors
///
/// A file that cannot be read, TLS files without a `rediss://` URL, a
/// certificate without its key, a number of shards out of 1 to 65536.
pub fn config_from_env() -> Result<Option<RedisConfig>, String> {
    let Some(url) = var("REDIS_URL")?.filter(|u| !u.is_empty()) else { return Ok(None) };
    let tls = url.starts_with("rediss");
    let mut config = RedisConfig::new(url, "");
    let file = |name: &str| -> Result<Option<std::path::PathBuf>, String> {
        let Some(path) = var(name)?.filter(|p| !p.is_empty()) else { return Ok(None) };
        std::fs::File::open(&path)
            .map_err(|e| format!("{name} must name a readable file, got {path:?}: {}", reason(&e)))?;
        if !tls {
            return Err(format!("{name} needs a rediss:// REDIS_URL (TLS)"));
        }
        Ok(Some(path.into()))
    };
    (config.ca_file, config.cert_file, config.key_file) =
        (file("REDIS_CA_FILE")?, file("REDIS_CERT_FILE")?, file("REDIS_KEY_FILE")?);
    if config.cert_file.is_some() != config.key_file.is_some() {
        return Err("REDIS_CERT_FILE and REDIS_KEY_FILE go together: give both or neither".into());
    }
    if let Some(v) = var("REDIS_SHARDED")? {
        config.shards = v
            .parse()
            .ok()
            .filter(|k| (1..=65_536).contains(k))
            .ok_or_else(|| format!("REDIS_SHARDED must be a number of channels (1 to 65536), got {v:?}"))?;
    }
    Ok(Some(config))
}

/// A Phoenix application's PubSub and Presence, by their module names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoenixApp {
    /// The PubSub's module (`MyApp.PubSub`): its Redis channel is
    /// `phx:Elixir.<it>.Adapter` ([`RedisConfig::phoenix_pubsub`]).
    pub pubsub: String,
    /// The Phoenix.Presence module (`MyAppWeb.Presence` by default).
    pub presence: String,
    /// Its number of shards (`pool_size`, 1 by default).
    pub pool_size: usize,
}

impl PhoenixApp {
    /// `PHOENIX_PUBSUB_NAME` and the presence variables; `redis` tells
    /// whether `REDIS_URL` is set, which they need.
    ///
    /// # Errors
    ///
    /// A variable that is not a module name or a number of shards, or
    /// given without the ones it needs.
    pub fn from_env(redis: bool) -> Result<Option<PhoenixApp>, String> {
        // an Elixir module name: capitalized aliases joined by dots
        let module = |name: &str| -> Result<Option<String>, String> {
            let Some(v) = var(name)?.filter(|v| !v.is_empty()) else { return Ok(None) };
            let m = v.strip_prefix("Elixir.").unwrap_or(&v);
            let alias = |a: &str| {
                a.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if m.split('.').all(alias) {
                Ok(Some(m.to_owned()))
            } else {
                Err(format!("{name} must be an Elixir module name such as MyApp.PubSub, got {v:?}"))
            }
        };
        let pubsub = module("PHOENIX_PUBSUB_NAME")?;
        let presence = module("PHOENIX_PRESENCE_NAME")?;
        let pool = var("PHOENIX_PRESENCE_POOL_SIZE")?;
        let Some(pubsub) = pubsub else {
            return match (presence, pool) {
                (None, None) => Ok(None),
                _ => Err("PHOENIX_PRESENCE_NAME and PHOENIX_PRESENCE_POOL_SIZE need PHOENIX_PUBSUB_NAME".into()),
            };
        };
        if !redis {
            return Err("PHOENIX_PUBSUB_NAME needs REDIS_URL (the Redis of the Phoenix nodes)".into());
        }
        let presence = match presence {
            Some(p) => p,
            None => match pubsub.strip_suffix(".PubSub") {
                Some(app) => format!("{app}Web.Presence"),
                None => {
                    return Err(format!(
                        "PHOENIX_PRESENCE_NAME must be set when PHOENIX_PUBSUB_NAME ({pubsub}) does not end in .PubSub"
                    ))
                }
            },
        };
        let pool_size = match pool {
            None => 1,
            Some(v) => v.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(|| {
                format!("PHOENIX_PRESENCE_POOL_SIZE must be a number of shards (1 to 1024), got {v:?}")
            })?,
        };
        Ok(Some(PhoenixApp { pubsub, presence, pool_size }))
    }
}
