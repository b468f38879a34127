//! An in-memory transport: the same session and channels as a WebSocket,
//! with frames handed over in memory. Used by test harnesses and by anyone
//! embedding Fawkes behind their own transport.

use std::sync::Arc;

use fawkes_protocol::{Frame, Vsn};
use tokio::sync::mpsc;

use crate::session::{Action, Blocked, Session};
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
    {
        let (to_server, mut inbound) = mpsc::unbounded_channel::<Frame>();
        let (outbound, from_server) = mpsc::unbounded_channel::<Frame>();
        let mut session = Session::new(conn.clone());
        tokio::spawn(async move {
            let mut blocked: Option<Blocked> = None;
            loop {
                tokio::select! {
                    frame = inbound.recv(), if blocked.is_none() => {
                        let Some(frame) = frame else { break };
                        match conn.vsn.decode(&frame) {
                            Ok(msg) => blocked = session.handle(msg),
                            Err(_) => break,
                        }
                    }
                    _ = async { match &blocked { Some(b) => b.space().await, None => std::future::pending().await } } => {
                        if let Some(b) = blocked.take() {
                            blocked = session.retry(b);
                        }
                    }
                    _ = conn.outbox.ready() => {
                        let (items, overflowed) = conn.outbox.drain();
                        let mut stop = overflowed;
                        for item in items {
                            match session.on_out(item) {
                                Action::Write { frame, .. } => stop |= outbound.send(frame).is_err(),
                                Action::Nothing => {}
                                Action::Disconnect | Action::Shutdown => stop = true,
                            }
                        }
                        if stop {
                            break;
                        }
                    }
                }
            }
            session.close_channels(std::time::Duration::from_secs(5)).await;
            drop(session);
            let _: Arc<_> = conn;
        });
        LocalConnection { to_server, from_server, vsn }
    }
}
