//! The rooms over a real WebSocket on loopback, as the official client
//! speaks (V2 JSON arrays).
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn recv(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn a_shout_reaches_the_room_with_the_senders_name() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fawkes_example_rooms::app(&fawkes::Endpoint::local());
    tokio::spawn(async move { fawkes::serve(listener, app).await });
    let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&name=ada");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(json!(["1", "1", "room:lobby", "phx_join", {}]).to_string())).await.unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!(["1", "1", "room:lobby", "phx_reply", {"status": "error", "response": {"reason": "rooms are numbered"}}])
    );
    ws.send(Message::text(json!(["2", "2", "room:7", "phx_join", {}]).to_string())).await.unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!(["2", "2", "room:7", "phx_reply", {"status": "ok", "response": {"room": 7}}])
    );
    ws.send(Message::text(json!(["2", "3", "room:7", "shout", {"body": "hi"}]).to_string())).await.unwrap();
    let mut got = [recv(&mut ws).await, recv(&mut ws).await];
    got.sort_by_key(|m| m[3].as_str().unwrap().to_owned());
    assert_eq!(got[0], json!(["2", "3", "room:7", "phx_reply", {"status": "ok", "response": {}}]));
    assert_eq!(got[1], json!([null, null, "room:7", "shout", {"body": "hi", "by": "ada", "room": 7}]));
}
