//! Serves the countdowns on 127.0.0.1:4000.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let service = fawkes_example_timers::service(&fawkes::Endpoint::local(), std::time::Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    fawkes::serve(listener, service.router("/socket")).await
}
