//! Transports, and the contract a transport of your own implements.
//!
//! A transport carries Phoenix frames between one client and the server: the
//! crate's own are WebSocket (`<path>/websocket`), long polling
//! (`<path>/longpoll`) and the in-memory [`LocalConnection`](crate::LocalConnection).
//! Each is a thin adapter over one [`Driver`] per connection, which holds
//! every rule that does not depend on how bytes move: Phoenix's routing of
//! client messages, the rate and channel limits, back-pressure, slow
//! consumers, and why and how a connection closes. A transport outside the
//! crate gets the same behaviour through the same driver.
//!
//! # The contract
//!
//! The model is Phoenix's `Phoenix.Socket.Transport` behaviour; its
//! callbacks map to calls the transport makes on the driver:
//!
//! | Phoenix                      | Fawkes                                        |
//! |------------------------------|-----------------------------------------------|
//! | `connect(transport_info)`    | [`SocketService::connect_transport`](crate::SocketService::connect_transport) |
//! | `init(state)`                | (done by `connect_transport`: the [`Driver`] is live) |
//! | `handle_in({payload, opts})` | [`Driver::handle_in`] with the client's frame |
//! | `handle_info(message)`       | [`Driver::ready`], then [`Driver::handle_info`] |
//! | `{:push, {opcode, payload}}` | a [`Push`] given to `handle_info`'s callback |
//! | `{:stop, reason}`            | an `Err(`[`Close`]`)` from either call          |
//! | `terminate(reason)`          | [`Driver::close_channels`], then dropping the driver |
//!
//! One task per connection owns its driver and makes every call. It loops:
//!
//! 1. **Client → server.** For each frame the client sends (text or binary,
//!    as the client's serializer encodes it), call
//!    [`Driver::handle_in`]. Frames are handled in the order they are handed
//!    in. Replies are not returned: they are queued, and leave through
//!    `handle_info` in order with everything else.
//! 2. **Back-pressure in.** After `handle_in`, while [`Driver::is_blocked`],
//!    a message waits for room in its channel's mailbox: hand in nothing
//!    more and stop reading from the client (a TCP window fills, a POST
//!    waits for its acknowledgement) until [`Driver::ready`] reports
//!    `unblocked`. Memory stays bounded whatever the client sends.
//! 3. **Server → client.** When [`Driver::ready`] reports `outbound`, call
//!    [`Driver::handle_info`]: it gives every queued frame, in order, to a
//!    callback that writes or buffers it. Frames of one channel keep the
//!    order they were produced in: a join's reply comes before the pushes
//!    of its `join`, a channel's `phx_close` after its last push, and a
//!    close (`disconnect`, shutdown) after the frames queued before it.
//! 4. **Back-pressure out.** Everything for the client goes through the
//!    connection's outbox, bounded by `SocketConfig::outbox_frames` and
//!    `outbox_bytes`. Drain it promptly; bytes taken but not yet written
//!    are reported with [`Driver::set_unwritten`] and count against the same
//!    limit. A full outbox, or a callback that answers
//!    [`Close::SlowConsumer`] because the transport's own buffer is full,
//!    ends the connection as a slow consumer.
//! 5. **Closing.** Either call may return `Err(`[`Close`]`)`; the
//!    transport may also end with its own ([`Close::Client`] when the client
//!    closed, [`Close::Gone`] when its stream failed, a framing error as
//!    [`Close::Server`]). Then send what `handle_info` already gave, await
//!    [`Driver::close_channels`] (the channels end first, so a client that
//!    reconnects at once finds them gone), tell the client
//!    ([`Close::code`] and [`Close::reason`] are the WebSocket close frame's;
//!    a transport without codes just ends the stream) and drop the driver.
//!    Dropping the driver without `close_channels` is also safe (a client
//!    that vanished): every channel still runs `terminate`.
//! 6. **Liveness.** Heartbeats are messages like any other (answered
//!    through `handle_info`); a transport with an idle timeout calls
//!    [`Driver::activity`] on every read and [`Driver::check_idle`] when its
//!    timer fires. Ping/pong and other framing control stay in the transport.
//!
//! Origin checks belong to the transport (it alone knows the request), made
//! before `connect_transport`; so do limits of its framing (e.g. a line
//! length).
//!
//! # Example
//!
//! A transport over a pair of in-memory channels: one task per connection,
//! client frames in, server frames out, closed by the server.
//!
//! ```
//! use fawkes::transport::{Close, Driver};
//! use fawkes::{ConnectError, ConnectInfo, Frame, Params, Socket, SocketService};
//! use tokio::sync::mpsc;
//!
//! async fn serve<S: Socket>(
//!     service: SocketService<S>,
//!     params: Params,
//!     mut from_client: mpsc::Receiver<Frame>,
//!     to_client: mpsc::Sender<Frame>,
//! ) -> Result<(), ConnectError> {
//!     let mut driver: Driver<S> =
//!         service.connect_transport(&params, &ConnectInfo::default(), "channels").await?;
//!     let close = loop {
//!         tokio::select! {
//!             frame = from_client.recv(), if !driver.is_blocked() => match frame {
//!                 Some(frame) => {
//!                     if let Err(close) = driver.handle_in(&frame) {
//!                         break close;
//!                     }
//!                 }
//!                 None => break Close::Client { code: None },
//!             },
//!             ready = driver.ready() => {
//!                 if ready.outbound {
//!                     // a bounded buffer of this transport's own: full is a slow consumer
//!                     let sent = driver.handle_info(|push| {
//!                         to_client.try_send(push.frame).map_err(|e| match e {
//!                             mpsc::error::TrySendError::Full(_) => Close::SlowConsumer,
//!                             mpsc::error::TrySendError::Closed(_) => Close::Gone,
//!                         })
//!                     });
//!                     if let Err(close) = sent {
//!                         break close;
//!                     }
//!                 }
//!             }
//!         }
//!     };
//!     driver.close_channels(&close).await;
//!     // this transport has no close codes: dropping the sender ends the stream
//!     drop(to_client);
//!     Ok(())
//! }
//! # struct S;
//! # impl Socket for S {
//! #     type Assigns = ();
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! #     let service = fawkes::SocketHandler::new(S).build(&fawkes::Endpoint::local());
//! #     let (tx_in, rx_in) = mpsc::channel(8);
//! #     let (tx_out, mut rx_out) = mpsc::channel(8);
//! #     let params = Params::from_query("vsn=2.0.0");
//! #     let task = tokio::spawn(serve(service, params, rx_in, tx_out));
//! #     tx_in.send(Frame::text(r#"[null,"1","phoenix","heartbeat",{}]"#)).await.unwrap();
//! #     let reply = rx_out.recv().await.unwrap();
//! #     assert_eq!(reply.data.as_ref(), br#"[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]"#);
//! #     drop(tx_in);
//! #     task.await.unwrap().unwrap();
//! #     assert!(rx_out.recv().await.is_none());
//! # }
//! ```
//!
//! `crates/fawkes-test` has a complete one over TCP (newline-delimited JSON
//! frames), tested with a Phoenix V2 client.

mod driver;
pub(crate) mod local;
pub(crate) mod longpoll;
pub(crate) mod routes;
pub(crate) mod websocket;
pub(crate) mod ws_codec;
pub(crate) mod ws_echo;
pub(crate) mod ws_handshake;
pub(crate) mod ws_io;

pub use driver::{Close, Driver, Push, Ready};
