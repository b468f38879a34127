//! An in-memory transport: the same [`Driver`] as a WebSocket, with frames
//! handed over in memory. Used by test harnesses and by anyone
//! embedding Fawkes behind their own transport.

use std::sync::Arc;

use fawkes_protocol::{Frame, Vsn};
use tokio::sync::mpsc;

use super::driver::{Close, Driver};
use crate::{ConnectError, ConnectInfo, Params, Socket, SocketService};

/// One in-memory connection: send client frames, receive server frames.
///
/// The frames are exactly those a WebSocket client of the same serializer
/// would see. Frames not yet received are held without limit: this is a
/// transport for tests and embedding, not for untrusted peers.
#[derive(Debug)]
pub struct LocalConnection {
    to_server: mpsc::UnboundedSender<Frame>,
    from_server: mpsc::UnboundedReceiver<Frame>,
    vsn: Vsn,
}

impl LocalConnection {
    /// The serializer of this connection.
    pub fn vsn(&self) -> Vsn {
        self.vsn
    }

    /// Sends a frame as the client; `false` once the connection is closed.
    pub fn send(&self, frame: Frame) -> bool {
        self.to_server.send(frame).is_ok()
    }

    /// The next frame from the server; `None` once the server closed the
    /// connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.from_server.recv().await
    }

    /// A frame from the server if one is ready.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.from_server.try_recv().ok()
    }
}

impl<S: Socket> SocketService<S> {
    /// Connects a client in memory, running the real `connect`. `params`
    /// should hold `vsn` as a client's query would; without it, V1.
    ///
    /// # Errors
    ///
    /// When the `vsn` is refused or `connect` refuses the connection.
    pub async fn connect_local(&self, params: Params, info: ConnectInfo) -> Result<LocalConnection, ConnectError> {
        let vsn = Vsn::negotiate(params.get_str("vsn")).map_err(|_| ConnectError::Refused)?;
        let conn = crate::handler::connect(&self.shared, &params, &info, vsn, "local", false).await?;
        Ok(run(conn))
    }
}

/// Runs the session of an established in-memory connection.
pub(crate) fn run<S: Socket>(conn: Arc<crate::conn::ConnState<S>>) -> LocalConnection {
    let vsn = conn.vsn;
    let (to_server, mut inbound) = mpsc::unbounded_channel::<Frame>();
    let (outbound, from_server) = mpsc::unbounded_channel::<Frame>();
    let mut driver = Driver::new(conn);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = inbound.recv(), if !driver.is_blocked() => {
                    let Some(frame) = frame else { break };
                    if driver.handle_in(&frame).is_err() {
                        break;
                    }
                }
                ready = driver.ready() => {
                    if ready.outbound {
                        let sent = driver.handle_info(|push| outbound.send(push.frame).map_err(|_| Close::Gone));
                        if sent.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        driver.end_channels().await;
    });
    LocalConnection { to_server, from_server, vsn }
}
