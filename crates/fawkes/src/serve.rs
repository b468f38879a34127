//! Serving a router with the limits a public server needs.
//!
//! `axum::serve` keeps a connection open for as long as the client likes:
//! a client that sends its request head one byte at a time, or opens a
//! connection and sends nothing, holds a file descriptor until the process
//! runs out of them, and then nothing else is served, not even `/health`.
//! [`serve`] runs the same router on hyper's HTTP/1.1 server with these
//! limits:
//!
//! | limit | default | what the client sees at the limit |
//! | --- | --- | --- |
//! | [`header_read_timeout`](Serve::header_read_timeout) | 10 s | a connection that is waiting for a request (a new one, or a kept-alive one after its last response) and has not sent a complete request head within this time is closed, without an answer (hyper sends none) |
//! | [`body_timeout`](Serve::body_timeout) | 30 s | a request body that has not arrived whole this long after its head fails to read; the handler answers what it answers to a body it cannot read (axum's extractors: `400`; [`is_body_timeout`] tells this case apart, to answer `408`) and the connection is closed |
//! | [`max_connections`](Serve::max_connections) | the process's open-file limit less 64 descriptors for everything else (10 000 where there is no limit to read) | further connections are not accepted: they wait in the kernel's listen backlog, and are served as soon as an open one closes; once the backlog is full, new connection attempts wait or fail as the client's TCP stack decides |
//! | [`shutdown_timeout`](Serve::shutdown_timeout) | 30 s | after the [graceful shutdown](Serve::with_graceful_shutdown) signal, requests still running this long are cut (their connections closed) |
//!
//! Every connection counts toward `max_connections` until its socket is
//! closed, including a connection upgraded to a WebSocket: the cap bounds
//! the file descriptors the server holds for clients. Upgraded connections
//! and requests that are being answered are not subject to the header
//! timeout, so a WebSocket or a long poll that waits for messages (up to
//! `SocketConfig::longpoll_window`, 10 s) is never cut by these limits;
//! the body timeout only bounds the reading of a request body, not the time
//! a handler takes to answer.
//!
//! Handlers can extract `axum::extract::ConnectInfo<SocketAddr>`, the
//! client's address, as with
//! `axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())`;
//! the socket handlers pass it to `Socket::connect` in
//! [`ConnectInfo::peer_addr`](crate::ConnectInfo::peer_addr).
//!
//! # Running your own server
//!
//! A [`SocketHandler`](crate::SocketHandler)'s router works under any server
//! that runs axum routers over hyper's HTTP/1.1. Such a server should set,
//! to the same effect as [`serve`]:
//!
//! * hyper's `http1::Builder::timer(hyper_util::rt::TokioTimer::new())`
//!   and `header_read_timeout(...)` (hyper starts that timer whenever the
//!   connection waits for a request head, so it also closes idle kept-alive
//!   connections); without a timer hyper enforces no header timeout at all;
//! * `serve_connection(...).with_upgrades()`, or WebSockets cannot be
//!   upgraded (answered `400`);
//! * a body timeout: tower-http's `RequestBodyDeadlineLayer` (a deadline for
//!   the whole body; `RequestBodyTimeoutLayer` restarts its timer with every
//!   chunk, so a client sending a byte at a time is never cut by it); not a
//!   timeout on whole requests (`TimeoutLayer`) shorter than the long-poll
//!   window, which would cut every long poll that waits;
//! * a cap on open connections, released only when the socket closes (after
//!   a WebSocket upgrade too);
//! * `ConnectInfo<SocketAddr>` in each request's extensions
//!   (`into_make_service_with_connect_info::<SocketAddr>()` under
//!   `axum::serve`), or `ConnectInfo::peer_addr` is `None`.
//!
//! `axum::serve` has a graceful shutdown and `ConnectInfo`, but none of
//! these limits: hyper's default header timeout is not armed there.
//!
//! # Example
//!
//! ```no_run
//! # async fn run(router: axum::Router) -> std::io::Result<()> {
//! use std::time::Duration;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! fawkes::serve(listener, router)
//!     .header_read_timeout(Some(Duration::from_secs(5)))
//!     .max_connections(50_000)
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::{DeadlineBody, TimeoutError};

/// Default of [`Serve::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Serve::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Serve::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// File descriptors `max_connections` leaves for everything but
/// connections, by default.
const RESERVED_FDS: usize = 64;

/// [`Serve::max_connections`] where the open-file limit cannot be read.
pub const FALLBACK_MAX_CONNECTIONS: usize = 10_000;

/// Serves `router` on `listener` with production limits; see the
/// [module](self) for each limit and its default. Await it (it ends with an
/// error only when the listener cannot be read at all), after setting any
/// limit or a graceful shutdown signal:
///
/// ```no_run
/// # async fn run(router: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
/// fawkes::serve(listener, router).await
/// # }
/// ```
pub fn serve(listener: TcpListener, router: Router) -> Serve {
    Serve {
        listener,
        router,
        header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
        body_timeout: Some(DEFAULT_BODY_TIMEOUT),
        max_connections: None,
        shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        signal: None,
    }
}

/// A server being set up: made by [`serve`], runs when awaited.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    router: Router,
    header_read_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    max_connections: Option<usize>,
    shutdown_timeout: Duration,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("graceful_shutdown", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// How long a connection that waits for a request may take to send its
    /// whole request head (default 10 s; `None`: no limit). The timer starts
    /// when the connection is accepted and again after each response, so it
    /// is also the idle timeout of kept-alive connections. At the limit the
    /// connection is closed without an answer, whether part of a head had
    /// arrived or nothing. Requests being answered, long polls and upgraded
    /// WebSockets are not concerned.
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long after its head a request's body may take to arrive whole
    /// (default 30 s; `None`: no limit). A single deadline, not a timer
    /// restarted by each chunk: a client trickling a byte at a time is cut
    /// too. At the deadline the handler's read of the body fails (see
    /// [`is_body_timeout`]; axum's extractors answer `400`), and hyper closes
    /// the connection after the answer since the body was not read whole.
    /// Requests without a body, and handlers that read theirs and then wait
    /// (long polls), are not concerned.
    pub fn body_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Most connections open at once, WebSockets included (at least 1). At
    /// the cap the server accepts nothing: new connections wait in the
    /// kernel's listen backlog until an open one closes. The default is
    /// the process's soft open-file limit less 64 descriptors when the server
    /// starts (the rest is left for the listener, databases, files and
    /// logs), or 10 000 where that limit cannot be read.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max.max(1));
        self
    }

    /// How long a graceful shutdown waits for the requests still running
    /// (default 30 s); after it their connections are closed and the server
    /// returns.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stops the server when `signal` completes: the listener is closed (so
    /// connections still in its backlog are refused), idle connections are
    /// closed, requests running are answered (up to the
    /// [shutdown timeout](Self::shutdown_timeout)) on connections then
    /// closed, and the server returns. Upgraded WebSockets are not waited
    /// for: `Endpoint::shutdown` closes them.
    pub fn with_graceful_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<()> {
        let max = self.max_connections.unwrap_or_else(default_max_connections).min(Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max));
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(self.header_read_timeout);
        let builder = Arc::new(builder);
        let (stop, stopping) = watch::channel(Stop::Running);
        let mut signal = self.signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let listener = self.listener;
        tracing::debug!(max_connections = max, "serving");
        'accept: loop {
            let slot = tokio::select! {
                biased;
                () = &mut signal => break 'accept,
                slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
            };
            let (stream, peer) = loop {
                tokio::select! {
                    biased;
                    () = &mut signal => break 'accept,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => break accepted,
                        Err(e) if is_connection_error(&e) => continue,
                        Err(e) => {
                            // out of file descriptors, most likely: wait
                            // rather than spin
                            tracing::error!(error = %e, "accept failed");
                            tokio::select! {
                                biased;
                                () = &mut signal => break 'accept,
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    },
                }
            };
            let io = TokioIo::new(Capped { stream, _slot: slot });
            tokio::spawn(connection(
                io,
                peer,
                self.router.clone(),
                builder.clone(),
                self.body_timeout,
                stopping.clone(),
            ));
        }
        drop(listener);
        drop(stopping);
        let _ = stop.send(Stop::Graceful);
        if tokio::time::timeout(self.shutdown_timeout, stop.closed()).await.is_err() {
            tracing::warn!("requests still running at the shutdown timeout: their connections are closed");
            let _ = stop.send(Stop::Now);
            stop.closed().await;
        }
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Whether `error`, or an error it was caused by, is a request body that
/// did not arrive within [`Serve::body_timeout`]; handlers and rejection
/// mappers use it to answer `408 Request Timeout` rather than `400`.
///
/// ```
/// # use axum::extract::rejection::BytesRejection;
/// # use axum::http::StatusCode;
/// fn status(rejection: &BytesRejection) -> StatusCode {
///     if fawkes::serve::is_body_timeout(rejection) { StatusCode::REQUEST_TIMEOUT } else { rejection.status() }
/// }
/// ```
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(error);
    while let Some(err) = e {
        if err.is::<TimeoutError>() {
            return true;
        }
        e = err.source();
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Finish what is running, then close.
    Graceful,
    /// Close now.
    Now,
}

async fn connection(
    io: TokioIo<Capped>,
    peer: SocketAddr,
    router: Router,
    builder: Arc<http1::Builder>,
    body_timeout: Option<Duration>,
    mut stopping: watch::Receiver<Stop>,
) {
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = match body_timeout {
            Some(t) => req.map(|b| Body::new(DeadlineBody::new(t, b))),
            None => req.map(Body::new),
        };
        router.clone().oneshot(req)
    });
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, %peer, "connection ended");
                }
                return;
            }
            changed = stopping.changed() => match changed.map(|()| *stopping.borrow_and_update()) {
                Ok(Stop::Running) => {}
                Ok(Stop::Graceful) => conn.as_mut().graceful_shutdown(),
                // closed now, or the server is gone
                Ok(Stop::Now) | Err(_) => return,
            },
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The soft open-file limit less what the process needs besides its
/// connections (its listener, database and Redis connections, files): 64
/// descriptors, a quarter of the limit when it is under 256.
fn default_max_connections() -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let reserve = (soft / 4).clamp(1, RESERVED_FDS);
        return soft.saturating_sub(reserve).max(1);
    }
    FALLBACK_MAX_CONNECTIONS
}

/// A client's connection and its slot under the connection cap, released
/// when the socket is closed: after an upgrade the WebSocket keeps both.
pub(crate) struct Capped {
    pub(crate) stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
