//! Serves the dashboard on 127.0.0.1:4000; `SECRET_KEY_BASE` (at least 20
//! bytes) signs and verifies the tokens.

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = fawkes::Endpoint::local();
    endpoint.set_secret_key_base(&std::env::var("SECRET_KEY_BASE")?)?;
    let (router, _) = fawkes_example_dashboard::app(&endpoint, Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    Ok(fawkes::serve(listener, router).await?)
}
