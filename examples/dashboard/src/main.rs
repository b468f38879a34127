//! Serves the dashboard on 127.0.0.1:4000 (`SECRET_KEY_BASE` signs tokens).

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = fawkes::Endpoint::local();
    let secret = std::env::var("SECRET_KEY_BASE").unwrap_or_else(|_| "dashboard-development-secret-key-base".into());
    endpoint.set_secret_key_base(&secret)?;
    let (router, _) = fawkes_example_dashboard::app(&endpoint, Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    fawkes::axum::serve(listener, router).await?;
    Ok(())
}
