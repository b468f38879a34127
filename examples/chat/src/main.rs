//! The chat server: `PORT` (4000), `DATABASE_URL` (a SQLite file by
//! default), `SECRET_KEY_BASE` (generated and stored when absent), and
//! `REDIS_URL` with `NODE_NAME` to run several nodes as one (broadcasts and
//! presence span every node on that Redis; give them one database).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(4000);
    let pubsub = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let node = std::env::var("NODE_NAME").unwrap_or_else(|_| format!("fawkes-chat-{port}"));
            Some(fawkes_redis::connect(fawkes_redis::RedisConfig::new(url, node)).await?)
        }
        _ => None,
    };
    let config = fawkes_chat::Config {
        database_url: std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://fawkes-chat.db?mode=rwc".into()),
        secret_key_base: std::env::var("SECRET_KEY_BASE").ok(),
        pubsub,
    };
    let (router, service, app) = fawkes_chat::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("fawkes-chat on http://127.0.0.1:{port}");
    let endpoint = service.endpoint().clone();
    let stopping = endpoint.clone();
    fawkes::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // the other nodes drop this one's presences at once
            app.presence.leave_cluster();
            stopping.shutdown();
        })
        .await?;
    // what was broadcast last leaves before the process does
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.pubsub().flush()).await;
    Ok(())
}
