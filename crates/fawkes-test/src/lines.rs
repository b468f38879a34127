//! A transport of Phoenix frames over TCP, one frame per line, built on
//! [`fawkes::transport`] from outside the `fawkes` crate: what a transport of
//! your own looks like, and a way to reach a socket with nothing but a TCP
//! stream (`nc`, a test).
//!
//! The protocol:
//!
//! 1. The client sends one line with its connect parameters, as a URL's
//!    query string (`vsn=2.0.0&token=...`); `vsn` picks the serializer (the
//!    JSON ones only: a V2 binary frame cannot be a line).
//! 2. Then each line is one frame (a V1 JSON object or a V2 JSON array),
//!    and the server sends each of its frames as one line.
//! 3. The server ends the stream when the connection closes: `connect`
//!    refused it, a `disconnect` broadcast, the endpoint's shutdown, an
//!    undecodable frame, a line over [`MAX_LINE`], the idle timeout, or a
//!    client that does not read (its frames are not written within
//!    [`WRITE_TIMEOUT`]). There are no close codes: the stream's end is the
//!    close. A client ends the connection by closing its side.
//!
//! Back-pressure is TCP's: while a message waits for room in its channel,
//! the transport reads nothing more, so the client's writes stall.

use std::net::SocketAddr;
use std::time::Duration;

use fawkes::axum::http::{HeaderMap, Uri};
use fawkes::transport::{Close, Driver};
use fawkes::{ConnectInfo, Frame, Params, Socket, SocketService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The longest line taken from a client, in bytes (the frame's JSON and
/// its newline): a longer one ends the connection.
pub const MAX_LINE: usize = 1024 * 1024;

/// How long a write to the client may take before the client is a slow
/// consumer and the connection ends.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of this transport in telemetry.
pub const TRANSPORT: &str = "lines";

/// Serves `service` on every connection `listener` accepts, one task per
/// connection, until the returned task is aborted.
pub fn serve<S: Socket>(listener: TcpListener, service: SocketService<S>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(service.clone(), stream, peer));
                }
                // out of descriptors, or a connection reset before it was
                // accepted: try again shortly
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

/// Lines read from a client and not yet handed in.
struct Lines {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
}

impl Lines {
    /// The next complete line, without its newline (and `\r`).
    fn next(&mut self) -> Option<Result<Vec<u8>, Close>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                Some(Ok(line))
            }
            None if self.buf.len() >= MAX_LINE => Some(Err(Close::Server { code: 1009, reason: "message too big" })),
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Reads more from the client: false at the end of its stream.
    async fn fill(&mut self, reader: &mut OwnedReadHalf) -> std::io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

async fn connection<S: Socket>(service: SocketService<S>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut lines = Lines { buf: Vec::new(), scanned: 0 };
    // connect: the first line holds the parameters
    let query = loop {
        match lines.next() {
            Some(Ok(line)) => break line,
            Some(Err(_)) => return,
            None => match lines.fill(&mut reader).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            },
        }
    };
    let params = Params::from_query(&String::from_utf8_lossy(&query));
    let info = ConnectInfo::new(Some(peer), Uri::default(), &HeaderMap::new());
    let Ok(mut driver) = service.connect_transport(&params, &info, TRANSPORT).await else {
        // refused: the stream ends at once
        let _ = writer.shutdown().await;
        return;
    };
    let close = run(&mut driver, &mut lines, &mut reader, &mut writer).await;
    // the channels end first, so that a client that reconnects at once finds
    // them gone; then the stream ends
    driver.close_channels(&close).await;
    drop(driver);
    if close != Close::Gone {
        let _ = writer.shutdown().await;
    }
}

/// The connection's loop; returns why it ended.
async fn run<S: Socket>(
    driver: &mut Driver<S>,
    lines: &mut Lines,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
) -> Close {
    let mut out: Vec<u8> = Vec::new();
    let idle = tokio::time::sleep(driver.timeout());
    tokio::pin!(idle);
    loop {
        // hand in every complete line, unless a channel's mailbox is full
        while !driver.is_blocked() {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Err(close) = driver.handle_in(&Frame::text(line)) {
                        return close;
                    }
                }
                Some(Err(close)) => return close,
                None => break,
            }
        }
        tokio::select! {
            read = lines.fill(reader), if !driver.is_blocked() => match read {
                Ok(true) => driver.activity(),
                Ok(false) => return Close::Client { code: None },
                Err(_) => return Close::Gone,
            },
            ready = driver.ready() => {
                if ready.outbound {
                    let drained = driver.handle_info(|push| {
                        out.extend_from_slice(&push.frame.data);
                        out.push(b'\n');
                        Ok(())
                    });
                    if let Err(close) = write(driver, writer, &mut out).await {
                        return close;
                    }
                    if let Err(close) = drained {
                        return close;
                    }
                }
            }
            () = idle.as_mut() => match driver.check_idle(tokio::time::Instant::now()) {
                Ok(deadline) => idle.as_mut().reset(deadline),
                Err(close) => return close,
            },
        }
    }
}

/// Writes `out` whole, within [`WRITE_TIMEOUT`]; what waits counts against
/// the connection's outbox meanwhile, and a close the driver wants
/// interrupts the write.
async fn write<S: Socket>(driver: &Driver<S>, writer: &mut OwnedWriteHalf, out: &mut Vec<u8>) -> Result<(), Close> {
    if out.is_empty() {
        return Ok(());
    }
    driver.set_unwritten(out.len());
    let result = tokio::select! {
        biased;
        written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(out)) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::Gone),
            Err(_) => Err(driver.slow_consumer("a write did not complete within the write timeout")),
        },
        close = std::future::poll_fn(|cx| driver.poll_interrupt(cx)) => Err(close),
    };
    driver.set_unwritten(0);
    out.clear();
    result
}
