//! The public transport contract (`fawkes::transport`), driven directly as
//! a transport outside the crate drives it: back-pressure while a channel's
//! mailbox is full, replies in order, and the closes the driver asks for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fawkes::transport::{Close, Driver};
use fawkes::*;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

struct UserSocket {
    /// Permits for `handle_in`: none, and the channel stalls.
    gate: Arc<Semaphore>,
}

impl Socket for UserSocket {
    type Assigns = Arc<Semaphore>;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<Arc<Semaphore>, ConnectError> {
        if params.get_str("refuse").is_some() {
            return Err(ConnectError::Refused);
        }
        Ok(self.gate.clone())
    }

    fn id(&self, _: &Arc<Semaphore>) -> Option<String> {
        Some("user_socket:1".into())
    }
}

struct Room;

impl Channel<UserSocket> for Room {
    type Info = ();

    async fn join(_: &str, _: Payload, _: &mut ChannelContext<UserSocket, ()>) -> Result<Join<Self>, ChannelError> {
        Ok(Join::ok(Room))
    }

    async fn handle_in(
        &mut self,
        _: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        ctx.assigns().acquire().await.unwrap().forget();
        Ok(HandleIn::ok(payload))
    }
}

fn service_for(gate: &Arc<Semaphore>, endpoint: &Endpoint) -> SocketService<UserSocket> {
    SocketHandler::new(UserSocket { gate: gate.clone() })
        .channel::<Room>("room:*")
        .configure(|c| {
            c.mailbox_limit = 4;
            c.timeout = Duration::from_millis(200);
        })
        .build(endpoint)
}

async fn connect(service: &SocketService<UserSocket>) -> Driver<UserSocket> {
    service.connect_transport(&Params::from_query("vsn=2.0.0"), &ConnectInfo::default(), "test").await.unwrap()
}

fn frame(join_ref: &str, r: u64, topic: &str, event: &str, payload: Value) -> Frame {
    Frame::text(json!([join_ref, r.to_string(), topic, event, payload]).to_string())
}

/// Waits for what the driver has for the client (at most 5 s) and takes it.
async fn take(driver: &mut Driver<UserSocket>) -> (Vec<Value>, Result<(), Close>) {
    let mut frames = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(5), driver.ready()).await.expect("ready within 5 s");
    assert!(ready.outbound, "{ready:?}");
    let result = driver.handle_info(|push| {
        assert!(!push.deflated);
        frames.push(serde_json::from_slice(&push.frame.data).unwrap());
        Ok(())
    });
    (frames, result)
}

#[tokio::test]
async fn a_full_mailbox_blocks_the_transport_until_the_channel_takes_the_message() {
    let gate = Arc::new(Semaphore::new(0));
    let endpoint = Endpoint::local();
    let service = service_for(&gate, &endpoint);
    let mut driver = connect(&service).await;
    assert_eq!(driver.vsn(), Vsn::V2);
    assert_eq!(driver.socket_id(), Some("user_socket:1"));

    driver.handle_in(&frame("1", 1, "room:a", "phx_join", json!({}))).unwrap();
    let (frames, result) = take(&mut driver).await;
    assert_eq!(frames[0][3], "phx_reply");
    result.unwrap();

    // the channel handles nothing (no permits): the first message is in its
    // hands, the next four fill its mailbox, and the sixth blocks
    driver.handle_in(&frame("1", 2, "room:a", "echo", json!({"n": 2}))).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!driver.is_blocked());
    let mut sent = 2;
    while !driver.is_blocked() {
        sent += 1;
        assert!(sent < 100, "never blocked");
        driver.handle_in(&frame("1", sent, "room:a", "echo", json!({"n": sent}))).unwrap();
    }
    assert_eq!(sent, 7);
    // a frame handed in while blocked is the transport's mistake
    assert_eq!(
        driver.handle_in(&frame("1", 99, "room:a", "echo", json!({}))),
        Err(Close::Server { code: 1011, reason: "invalid message" })
    );
    assert!(tokio::time::timeout(Duration::from_millis(100), driver.ready()).await.is_err(), "nothing ready");

    // the channel takes one: the blocked message gets its place
    gate.add_permits(1);
    let mut refs = Vec::new();
    let mut unblocked = false;
    while !unblocked {
        let ready = tokio::time::timeout(Duration::from_secs(5), driver.ready()).await.unwrap();
        if ready.outbound {
            driver
                .handle_info(|push| {
                    let frame: Value = serde_json::from_slice(&push.frame.data).unwrap();
                    refs.push(frame[1].as_str().unwrap().parse::<u64>().unwrap());
                    Ok(())
                })
                .unwrap();
        }
        unblocked = ready.unblocked;
    }
    assert!(!driver.is_blocked());

    // every reply, in the order of the messages
    gate.add_permits(100);
    while refs.len() < 6 {
        let (frames, result) = take(&mut driver).await;
        result.unwrap();
        refs.extend(frames.iter().map(|f| f[1].as_str().unwrap().parse::<u64>().unwrap()));
    }
    assert_eq!(refs, vec![2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn the_driver_closes_on_disconnect_shutdown_bad_frames_and_idleness() {
    let gate = Arc::new(Semaphore::new(100));
    let endpoint = Endpoint::local();
    let service = service_for(&gate, &endpoint);

    // disconnect: the configured code (1001), after the frames before it
    let mut driver = connect(&service).await;
    driver.handle_in(&frame("1", 1, "room:a", "phx_join", json!({}))).unwrap();
    let (_, result) = take(&mut driver).await;
    result.unwrap();
    driver.handle_in(&frame("1", 2, "phoenix", "heartbeat", json!({}))).unwrap();
    endpoint.disconnect("user_socket:1").unwrap();
    let mut frames = Vec::new();
    let result = loop {
        let (more, result) = take(&mut driver).await;
        frames.extend(more);
        if result.is_err() {
            break result;
        }
    };
    assert_eq!(frames.last().unwrap()[1], "2", "the heartbeat's reply is sent before the close");
    let close = result.unwrap_err();
    assert_eq!(close, Close::Server { code: 1001, reason: "" });
    assert!(close.waits_for_channels());
    driver.close_channels(&close).await;
    drop(driver);

    // the endpoint's shutdown: 1012
    let mut driver = connect(&service).await;
    endpoint.shutdown();
    let (_, result) = take(&mut driver).await;
    let close = result.unwrap_err();
    assert_eq!((close.code(), close.reason()), (Some(1012), "service restart"));
    drop(driver);

    // an undecodable frame: 1011, counted
    let endpoint = Endpoint::local();
    let service2 = service_for(&gate, &endpoint);
    let mut driver = connect(&service2).await;
    let errors = endpoint.metrics().snapshot().decode_errors;
    assert_eq!(
        driver.handle_in(&Frame::text("not a frame")),
        Err(Close::Server { code: 1011, reason: "invalid message" })
    );
    assert_eq!(endpoint.metrics().snapshot().decode_errors, errors + 1);

    // the idle timeout (200 ms here): 1000 once nothing happened for that long
    let now = tokio::time::Instant::now();
    let next = driver.check_idle(now).unwrap();
    assert!(next > now);
    assert_eq!(driver.check_idle(next), Err(Close::Server { code: 1000, reason: "idle timeout" }));
    driver.activity();
    assert!(driver.check_idle(next).is_ok());

    // a callback that cannot take a frame ends the connection
    driver.handle_in(&frame("1", 1, "phoenix", "heartbeat", json!({}))).unwrap();
    tokio::time::timeout(Duration::from_secs(5), driver.ready()).await.unwrap();
    let slow = endpoint.metrics().snapshot().slow_consumers;
    assert_eq!(driver.handle_info(|_| Err(Close::SlowConsumer)), Err(Close::SlowConsumer));
    assert_eq!(endpoint.metrics().snapshot().slow_consumers, slow + 1);
    assert!(!Close::SlowConsumer.waits_for_channels());
    assert_eq!(Close::SlowConsumer.code(), Some(1013));
}

#[tokio::test]
async fn connect_refusals_come_back_as_errors() {
    let gate = Arc::new(Semaphore::new(0));
    let service = service_for(&gate, &Endpoint::local());
    let refused = service.connect_transport(&Params::from_query("refuse=1"), &ConnectInfo::default(), "test").await;
    assert!(matches!(refused, Err(ConnectError::Refused)));
    let unknown = service.connect_transport(&Params::from_query("vsn=9.0.0"), &ConnectInfo::default(), "test").await;
    assert!(matches!(unknown, Err(ConnectError::Refused)));
}
