//! The chat server: `PORT` (4000, on 127.0.0.1), `DATABASE_URL`
//! (`sqlite:...` or `postgres://...`; a SQLite file, `fawkes-chat.db`, by
//! default), `SECRET_KEY_BASE` (at least 20 bytes; generated and stored when
//! absent), `REDIS_URL` with `NODE_NAME` to run several nodes as one
//! (broadcasts and presence span every node on that Redis; give them one
//! database; an empty `REDIS_URL` is none; `rediss://`, `redis+sentinel://`
//! and `redis+cluster://` URLs too, see [`fawkes_redis`]), `REDIS_CA_FILE`,
//! `REDIS_CERT_FILE` and `REDIS_KEY_FILE` (TLS), `REDIS_SHARDED` (sharded
//! fan-out over that many channels), `PHOENIX_PUBSUB_NAME` with `REDIS_URL`
//! to run among a Phoenix application's nodes (its PubSub's channel,
//! `MyApp.PubSub` say, and presence as its Phoenix.Presence,
//! `PHOENIX_PRESENCE_NAME`, by default `<App>Web.Presence` for
//! `<App>.PubSub`, with `PHOENIX_PRESENCE_POOL_SIZE` shards, 1 by default),
//! `METRICS_TOKEN` (`/metrics` then needs `Authorization: Bearer <token>`),
//! `ADMIN_KEY` (serve the live admin page, [`fawkes::admin`], at `/admin`
//! for that key: `/admin#key=<key>`),
//! `SESSION_MAX_AGE` (seconds a session lasts after sign-in; two weeks by
//! default), `CHAT_DEV_SIGN_IN=1` (sign-in by name alone, without a
//! password: for development only, anyone can then be anyone),
//! and `RUST_LOG` (`info`). Ctrl-C or SIGTERM stops it gracefully.
//!
//! A bad value in any of these, a port already in use, or a database or
//! Redis that cannot be reached stops the server at start-up with one line
//! on stderr that names what failed and where (a database URL's password
//! left out), and exit status 1. The database gets [`CONNECT_TIMEOUT`]
//! (5 s) to answer the first connection, Redis the same.

use std::process::ExitCode;

use fawkes::token::MIN_SECRET_LEN;
use fawkes_chat::db::CONNECT_TIMEOUT;

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

/// A URL as it may be printed: a password in its user info or in its
/// `password` query parameter left out.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let mut hidden = false;
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            hidden = true;
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| {
                    let secret = p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("password"));
                    hidden |= secret;
                    !secret
                })
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    let shown = format!("{scheme}://{authority}{tail}");
    if hidden {
        format!("{shown} (password hidden)")
    } else {
        shown
    }
}

/// An I/O error as people read it: `connection refused`, without the
/// operating system's error number.
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // the system's messages are capitalized sentences with a number
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => {
            let mut chars = text[..at].chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        _ => text,
    }
}

/// Why the database at `url` (already without its password) could not be
/// opened.
fn database_error(url: &str, e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(e) => format!("cannot connect to the database at {url}: {}", reason(&e)),
        sqlx::Error::PoolTimedOut => {
            format!("cannot connect to the database at {url}: no answer within {} s", CONNECT_TIMEOUT.as_secs())
        }
        sqlx::Error::Database(e) => format!("cannot open the database at {url}: {}", e.message()),
        e => format!("cannot open the database at {url}: {e}"),
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what service managers send):
/// both stop the server gracefully.
async fn stop_requested() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fawkes-chat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let log = match var("RUST_LOG")? {
        None => tracing_subscriber::EnvFilter::new("info"),
        Some(v) => tracing_subscriber::EnvFilter::try_new(&v)
            .map_err(|e| format!("RUST_LOG must be a log filter such as \"info\" ({e}), got {v:?}"))?,
    };
    let port: u16 = match var("PORT")? {
        None => 4000,
        Some(v) => v.parse().map_err(|_| format!("PORT must be a port number (0-65535), got {v:?}"))?,
    };
    let database_url = var("DATABASE_URL")?.unwrap_or_else(|| "sqlite://fawkes-chat.db?mode=rwc".into());
    let shown_url = without_password(&database_url);
    if !["sqlite:", "postgres://", "postgresql://"].iter().any(|s| database_url.starts_with(s)) {
        return Err(format!("DATABASE_URL must be a sqlite:... or postgres://... URL, got {shown_url:?}"));
    }
    let secret_key_base = var("SECRET_KEY_BASE")?;
    if let Some(s) = &secret_key_base {
        if s.len() < MIN_SECRET_LEN {
            // the secret itself is not printed
            return Err(format!("SECRET_KEY_BASE must be at least {MIN_SECRET_LEN} bytes, got {}", s.len()));
        }
    }
    let admin_key = var("ADMIN_KEY")?.filter(|k| !k.is_empty());
    let metrics_token = var("METRICS_TOKEN")?.filter(|k| !k.is_empty());
    let dev_sign_in = match var("CHAT_DEV_SIGN_IN")?.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => return Err(format!("CHAT_DEV_SIGN_IN must be 1 or 0, got {v:?}")),
    };
    let session_max_age = match var("SESSION_MAX_AGE")? {
        None => fawkes_chat::DEFAULT_SESSION_MAX_AGE,
        Some(v) => match v.parse::<u64>() {
            Ok(s) if s > 0 => std::time::Duration::from_secs(s),
            _ => return Err(format!("SESSION_MAX_AGE must be a number of seconds (1 or more), got {v:?}")),
        },
    };
    let node = var("NODE_NAME")?;
    if node.as_deref() == Some("") {
        return Err("NODE_NAME must not be empty".into());
    }
    let redis = fawkes_redis::env::config_from_env()?;
    let phoenix = fawkes_redis::env::PhoenixApp::from_env(redis.is_some())?;
    tracing_subscriber::fmt().with_env_filter(log).init();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {}", reason(&e)))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {}", reason(&e)))?;
    let pubsub = match redis {
        Some(mut config) => {
            config.node_name = node.unwrap_or_else(|| format!("fawkes-chat-{}", addr.port()));
            if let Some(app) = &phoenix {
                config = config.phoenix_pubsub(&app.pubsub);
            }
            let sharded = config.shards > 0;
            let cluster = fawkes_redis::connect_cluster(config).await.map_err(|e| match e {
                fawkes_redis::RedisError::Url(url) => format!(
                    "REDIS_URL must be redis://[[user]:password@]host[:port][/db] (or rediss://, \
                     redis+sentinel://host:port/master, redis+cluster://host:port,...), got {:?}",
                    without_password(&url)
                ),
                e => e.to_string(),
            })?;
            // rooms' history in Redis, for every node (not in sharded mode)
            let history =
                (!sharded).then(|| cluster.history.clone() as std::sync::Arc<dyn fawkes::history::SharedHistory>);
            Some((cluster.pubsub, history))
        }
        None => None,
    };
    let (pubsub, shared_history) = match pubsub {
        Some((p, h)) => (Some(p), h),
        None => (None, None),
    };
    let config = fawkes_chat::Config {
        database_url,
        secret_key_base,
        pubsub,
        shared_history,
        phoenix_presence: phoenix.map(|app| (app.presence, app.pool_size)),
        session_max_age,
        dev_sign_in,
        metrics_token,
    };
    let (mut router, service, app) = fawkes_chat::build(&config).await.map_err(|e| database_error(&shown_url, e))?;
    if let Some(key) = admin_key {
        // the live admin page at /admin (fawkes::admin), for that key
        let admin = fawkes::admin::Admin::new(service.endpoint(), key).presence(app.presence.clone());
        router = router.nest("/admin", admin.router());
    }
    if dev_sign_in {
        tracing::warn!("CHAT_DEV_SIGN_IN: anyone can sign in as anyone by name alone");
    }
    tracing::info!("fawkes-chat on http://{addr}");
    let endpoint = service.endpoint().clone();
    let stopping = endpoint.clone();
    fawkes::serve(listener, router)
        .with_graceful_shutdown(async move {
            stop_requested().await;
            // the other nodes drop this one's presences at once
            app.presence.leave_cluster();
            // connections close in batches, as Phoenix's drainer closes them
            stopping.drain(fawkes::Drain::default()).await;
        })
        .await
        .map_err(|e| format!("serving on {addr} failed: {}", reason(&e)))?;
    // what was broadcast last leaves before the process does
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.pubsub().flush()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_left_out_of_printed_urls() {
        for (url, shown) in [
            ("postgres://u:p@127.0.0.1:5432/db", "postgres://u@127.0.0.1:5432/db (password hidden)"),
            ("postgres://:p@h/db?sslmode=disable", "postgres://@h/db?sslmode=disable (password hidden)"),
            ("postgres://u@h/db?password=p&sslmode=disable", "postgres://u@h/db?sslmode=disable (password hidden)"),
            ("postgres://u:p%40x@h?Password=q", "postgres://u@h (password hidden)"),
            ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
            ("sqlite://fawkes-chat.db?mode=rwc", "sqlite://fawkes-chat.db?mode=rwc"),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(without_password(url), shown, "{url}");
        }
    }
}
