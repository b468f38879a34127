//! Serves the rooms on 127.0.0.1:4000.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    fawkes::serve(listener, fawkes_example_rooms::app(&fawkes::Endpoint::local())).await
}
