//! The line transport of `fawkes_test::lines`, a transport built outside the
//! `fawkes` crate on `fawkes::transport`, on real loopback sockets: a client
//! speaking Phoenix's V2 JSON frames connects, joins, pushes, gets its
//! replies and the broadcasts of another client, and is closed by the
//! server (a `disconnect` to its socket id), its channel ended first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fawkes::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

struct UserSocket;

impl Socket for UserSocket {
    type Assigns = String;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
    }

    fn id(&self, user: &String) -> Option<String> {
        Some(format!("user_socket:{user}"))
    }
}

/// Channels whose `terminate` ran.
static TERMINATED: AtomicUsize = AtomicUsize::new(0);

struct Room;

impl Channel<UserSocket> for Room {
    type Info = ();

    async fn join(
        topic: &str,
        _: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        Ok(Join::ok_with(Room, json!({"topic": topic, "user": ctx.assigns()})))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "shout" => {
                ctx.broadcast("shout", payload)?;
                Ok(HandleIn::ok(json!({"sent": true})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }

    async fn terminate(&mut self, _: &StopReason, _: &mut ChannelContext<UserSocket, ()>) {
        TERMINATED.fetch_add(1, Ordering::SeqCst);
    }
}

/// A Phoenix V2 client over the line transport.
struct Client {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_ref: u64,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, query: &str) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        writer.write_all(format!("{query}\n").as_bytes()).await.unwrap();
        Client { lines: BufReader::new(reader).lines(), writer, next_ref: 0 }
    }

    /// Sends `[join_ref, ref, topic, event, payload]`; returns the ref.
    async fn send(&mut self, join_ref: Option<&str>, topic: &str, event: &str, payload: Value) -> String {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let frame = json!([join_ref, r, topic, event, payload]);
        self.writer.write_all(format!("{frame}\n").as_bytes()).await.unwrap();
        r
    }

    /// The next frame, or `None` when the server ended the stream.
    async fn recv(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("a frame or the end of the stream within 5 s")
            .unwrap()?;
        Some(serde_json::from_str(&line).unwrap())
    }
}

async fn server() -> (Endpoint, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let endpoint = Endpoint::local();
    let service = SocketHandler::new(UserSocket).channel::<Room>("room:*").build(&endpoint);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (endpoint, addr, fawkes_test::lines::serve(listener, service))
}

#[tokio::test]
async fn a_v2_client_joins_pushes_gets_replies_and_broadcasts_and_is_disconnected() {
    let (endpoint, addr, _server) = server().await;
    let mut alice = Client::connect(addr, "vsn=2.0.0&user_id=alice").await;
    let mut bob = Client::connect(addr, "vsn=2.0.0&user_id=bob").await;

    let hb = alice.send(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(
        alice.recv().await.unwrap(),
        json!([null, hb, "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );

    let aj = alice.send(Some("1"), "room:lobby", "phx_join", json!({})).await;
    let aj = Some(aj);
    assert_eq!(
        alice.recv().await.unwrap(),
        json!(["1", aj, "room:lobby", "phx_reply", {"status": "ok", "response": {"topic": "room:lobby", "user": "alice"}}])
    );
    let bj = bob.send(Some("7"), "room:lobby", "phx_join", json!({})).await;
    assert_eq!(
        bob.recv().await.unwrap(),
        json!(["7", bj, "room:lobby", "phx_reply", {"status": "ok", "response": {"topic": "room:lobby", "user": "bob"}}])
    );

    // a push: its reply to the sender, the broadcast to both
    let push = alice.send(Some("1"), "room:lobby", "shout", json!({"body": "hi"})).await;
    let mut got = [alice.recv().await.unwrap(), alice.recv().await.unwrap()];
    got.sort_by_key(|f| f[3].as_str().unwrap().to_owned());
    assert_eq!(got[0], json!(["1", push, "room:lobby", "phx_reply", {"status": "ok", "response": {"sent": true}}]));
    assert_eq!(got[1], json!([null, null, "room:lobby", "shout", {"body": "hi"}]));
    assert_eq!(bob.recv().await.unwrap(), json!([null, null, "room:lobby", "shout", {"body": "hi"}]));

    // an error reply, and a topic not joined
    let bad = alice.send(Some("1"), "room:lobby", "nope", json!({})).await;
    assert_eq!(
        alice.recv().await.unwrap(),
        json!(["1", bad, "room:lobby", "phx_reply", {"status": "error", "response": {"reason": "unknown event"}}])
    );
    let stray = alice.send(Some("3"), "room:other", "shout", json!({})).await;
    assert_eq!(
        alice.recv().await.unwrap(),
        json!([null, stray, "room:other", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );

    // the server closes alice's connection: her channel ends, then her stream
    let terminated = TERMINATED.load(Ordering::SeqCst);
    endpoint.disconnect("user_socket:alice").unwrap();
    assert_eq!(alice.recv().await, None, "the stream ends");
    assert!(TERMINATED.load(Ordering::SeqCst) > terminated, "the channel ended before the stream did");

    // bob is still served, and no longer gets what alice would have
    let push = bob.send(Some("7"), "room:lobby", "shout", json!({"body": "still here"})).await;
    let mut got = [bob.recv().await.unwrap(), bob.recv().await.unwrap()];
    got.sort_by_key(|f| f[3].as_str().unwrap().to_owned());
    assert_eq!(got[0][1], json!(push));
    assert_eq!(got[1], json!([null, null, "room:lobby", "shout", {"body": "still here"}]));
}

#[tokio::test]
async fn a_refused_connect_and_an_undecodable_frame_end_the_stream() {
    let (endpoint, addr, _server) = server().await;
    // connect refuses a client without a user id
    let mut anonymous = Client::connect(addr, "vsn=2.0.0").await;
    assert_eq!(anonymous.recv().await, None);
    // an unknown serializer is refused too
    let mut future = Client::connect(addr, "vsn=9.0.0&user_id=x").await;
    assert_eq!(future.recv().await, None);

    let mut client = Client::connect(addr, "vsn=2.0.0&user_id=carol").await;
    let hb = client.send(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(client.recv().await.unwrap()[1], json!(hb));
    let decode_errors = endpoint.metrics().snapshot().decode_errors;
    client.writer.write_all(b"this is not a frame\n").await.unwrap();
    assert_eq!(client.recv().await, None);
    assert_eq!(endpoint.metrics().snapshot().decode_errors, decode_errors + 1);
}

#[tokio::test]
async fn a_line_over_the_limit_ends_the_stream() {
    let (_endpoint, addr, _server) = server().await;
    let mut client = Client::connect(addr, "vsn=2.0.0&user_id=dave").await;
    let hb = client.send(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(client.recv().await.unwrap()[1], json!(hb));
    let long = vec![b'x'; fawkes_test::lines::MAX_LINE + 1];
    // the server may end the stream before it has read all of this
    let _ = client.writer.write_all(&long).await;
    assert_eq!(client.recv().await, None);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let endpoint = Endpoint::local();
    let service = SocketHandler::new(UserSocket)
        .channel::<Room>("room:*")
        .configure(|c| c.outbox_bytes = 64 * 1024)
        .build(&endpoint);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = fawkes_test::lines::serve(listener, service);
    let mut client = Client::connect(addr, "vsn=2.0.0&user_id=erin").await;
    let join = client.send(Some("1"), "room:slow", "phx_join", json!({})).await;
    assert_eq!(client.recv().await.unwrap()[1], json!(join));

    // broadcasts the client does not read: the socket's buffers fill, the
    // write waits, the outbox overflows and the connection ends at once
    let body = "x".repeat(16 * 1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while endpoint.metrics().snapshot().slow_consumers == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no slow consumer after 10 s");
        for _ in 0..64 {
            endpoint.broadcast("room:slow", "flood", json!({"body": body})).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // what was written is there, then the stream ends
    let mut frames = 0usize;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), client.lines.next_line()).await.unwrap() {
        frames += 1;
    }
    assert!(frames > 0, "the frames written before the close are delivered");
}
