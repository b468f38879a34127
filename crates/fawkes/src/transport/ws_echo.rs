//! A WebSocket echo endpoint on the socket's WebSocket layer: the same
//! handshake checks, extension negotiation, reader, writer and byte
//! streams, without the Phoenix protocol on top. It exists so that a
//! WebSocket conformance suite (Autobahn) can test that layer.

use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::ws_codec::{self, close, negotiate_deflate, WsEvent, WsReader};
use super::ws_handshake::{check_upgrade, switching_protocols};
use super::ws_io::{Generic, WsIo};
use crate::serve::Capped;

/// Options of [`echo`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EchoConfig {
    /// Largest message a client may send, in bytes (10,000,000 by default,
    /// as for a socket): beyond it the connection is closed with 1009.
    pub max_message_size: usize,
    /// Accept permessage-deflate (on by default).
    pub compress: bool,
    /// How long a connection may stay silent, and the longest time one
    /// write may take (60 s by default).
    pub timeout: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig { max_message_size: 10_000_000, compress: true, timeout: Duration::from_secs(60) }
    }
}

/// Bytes of echoes gathered before they are written, when one read holds
/// many messages.
const WRITE_AT: usize = 64 * 1024;

/// How long a connection closed for a protocol error is read on, for the
/// client's close frame.
const LINGER: Duration = Duration::from_secs(5);

/// A WebSocket endpoint that sends every message back as it came (text as
/// text, binary as binary, compressed when permessage-deflate was
/// negotiated and the message is worth it), answers pings, and completes
/// the close handshake, echoing the client's close code.
///
/// It runs on the same WebSocket layer as a socket's `/websocket`
/// endpoint (handshake checks, permessage-deflate negotiation, frame
/// reader and writer, the connection's byte stream), with no Phoenix
/// protocol on top: it is there for conformance suites that test that
/// layer, such as Autobahn's.
///
/// ```no_run
/// use fawkes::websocket::{echo, EchoConfig};
///
/// let mut config = EchoConfig::default();
/// config.max_message_size = 64 << 20;
/// let app: axum::Router = axum::Router::new().route("/echo", echo(config));
/// ```
pub fn echo<S: Clone + Send + Sync + 'static>(config: EchoConfig) -> MethodRouter<S> {
    any(move |req: Request| std::future::ready(upgrade(&config, req)))
}

fn upgrade(config: &EchoConfig, mut req: Request) -> Response {
    if req.method() != Method::GET {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let headers = req.headers();
    let accept = match check_upgrade(headers) {
        Ok(accept) => accept,
        Err(refused) => return refused.into_response(),
    };
    let deflate = if config.compress { negotiate_deflate(headers) } else { None };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded").into_response();
    };
    let reader = WsReader::new(config.max_message_size, deflate.is_some());
    let compress = deflate.is_some_and(|d| d.server_compresses());
    let timeout = config.timeout;
    let span = tracing::info_span!("echo", transport = "websocket");
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => run(parts.io.into_inner(), &parts.read_buf, reader, compress, timeout).await,
                    Err(upgraded) => match upgraded.downcast::<TokioIo<Capped>>() {
                        Ok(parts) => run(parts.io.into_inner(), &parts.read_buf, reader, compress, timeout).await,
                        Err(upgraded) => run(Generic(TokioIo::new(upgraded)), &[], reader, compress, timeout).await,
                    },
                },
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        }
        .instrument(span),
    );
    switching_protocols(&accept, deflate.as_ref(), None)
}

/// Why the echo stops.
enum End {
    /// The client closed (its code is echoed) or went away.
    ClientClosed(Option<u16>),
    /// The server closes with this code (a protocol error, the idle timeout).
    Close(u16, &'static str),
    Gone,
}

async fn run<IO: WsIo>(mut io: IO, leftover: &[u8], mut reader: WsReader, compress: bool, timeout: Duration) {
    reader.feed(leftover);
    let mut out = Vec::new();
    let end = 'conn: loop {
        loop {
            match reader.next_event() {
                Ok(Some(WsEvent::Message(frame))) => ws_codec::write_message(&mut out, &frame, compress),
                Ok(Some(WsEvent::Ping(data))) => ws_codec::write_frame(&mut out, ws_codec::OP_PONG, false, &data),
                Ok(Some(WsEvent::Pong)) => {}
                Ok(Some(WsEvent::Close(code))) => break 'conn End::ClientClosed(code),
                Ok(None) => break,
                Err(e) => break 'conn End::Close(e.code, e.reason),
            }
            if out.len() >= WRITE_AT && !write(&mut io, &mut out, timeout).await {
                break 'conn End::Gone;
            }
        }
        if !write(&mut io, &mut out, timeout).await {
            break End::Gone;
        }
        match tokio::time::timeout(timeout, io.read_into(&mut reader)).await {
            Ok(Ok(0) | Err(_)) => break End::Gone,
            Ok(Ok(_)) => {}
            Err(_) => break End::Close(close::NORMAL, "idle timeout"),
        }
    };
    match end {
        End::ClientClosed(code) => {
            match code {
                Some(code) => ws_codec::write_close(&mut out, code, ""),
                None => ws_codec::write_frame(&mut out, ws_codec::OP_CLOSE, false, &[]),
            }
            if write(&mut io, &mut out, timeout).await {
                io.close_write().await;
            }
        }
        End::Close(code, reason) => {
            reader.discard();
            ws_codec::write_close(&mut out, code, reason);
            if !write(&mut io, &mut out, timeout).await {
                return;
            }
            io.close_write().await;
            // Read on (dropping what arrives) until the client closes, so
            // that unread bytes do not turn the close into a reset that
            // could overtake the close frame.
            let _ =
                tokio::time::timeout(LINGER, async { while let Ok(1..) = io.read_into(&mut reader).await {} }).await;
        }
        End::Gone => {}
    }
}

/// Writes and empties `out`; false when the connection is gone or the
/// write took longer than `timeout`.
async fn write<IO: WsIo>(io: &mut IO, out: &mut Vec<u8>, timeout: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let written = matches!(tokio::time::timeout(timeout, io.write_all_bytes(out)).await, Ok(Ok(())));
    if out.capacity() > 4 * WRITE_AT {
        *out = Vec::new();
    } else {
        out.clear();
    }
    written
}
