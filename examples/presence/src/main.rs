//! Serves the rooms with presence on 127.0.0.1:4000.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let service = fawkes_example_presence::service(&fawkes::Endpoint::local());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    fawkes::serve(listener, service.router("/socket")).await
}
