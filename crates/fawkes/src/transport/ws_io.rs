//! Reading and writing an upgraded connection.
//!
//! Reads go into a buffer on the stack of one poll (or, on a plain TCP
//! stream, wait for readiness first), so an idle connection holds no read
//! buffer at all. Writes are tried at once, and only what the socket does
//! not take is waited for.

use std::future::Future;
use std::io;

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::ws_codec::WsReader;

pub(crate) trait WsIo: Send + Unpin + 'static {
    /// Reads what is available into `reader`; `Ready(Ok(0))` at end of
    /// stream; `Pending` (and a wake-up later) when nothing is available.
    fn poll_read_into(&mut self, cx: &mut Context<'_>, reader: &mut WsReader) -> Poll<io::Result<usize>>;
    /// Reads what is available into `reader`; `Ok(0)` at end of stream.
    fn read_into(&mut self, reader: &mut WsReader) -> impl Future<Output = io::Result<usize>> + Send {
        std::future::poll_fn(move |cx| self.poll_read_into(cx, reader))
    }
    /// Writes what the stream takes now, without waiting. `Ok(None)`: all
    /// of it was written and flushed; `Ok(Some(n))`: `n` bytes were taken,
    /// and [`WsIo::write_all_bytes`] must finish with the rest (which may be
    /// empty when only the flush is left).
    fn try_write_now(&mut self, buf: &[u8]) -> io::Result<Option<usize>>;
    /// Writes all of `buf`.
    fn write_all_bytes(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the write side.
    fn close_write(&mut self) -> impl Future<Output = ()> + Send;
}

const CHUNK: usize = 16 * 1024;

fn read_ready(stream: &TcpStream, reader: &mut WsReader) -> io::Result<usize> {
    let mut chunk = [0u8; CHUNK];
    let n = stream.try_read(&mut chunk)?;
    reader.feed(&chunk[..n]);
    Ok(n)
}

impl WsIo for TcpStream {
    fn poll_read_into(&mut self, cx: &mut Context<'_>, reader: &mut WsReader) -> Poll<io::Result<usize>> {
        loop {
            match self.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match read_ready(self, reader) {
                // readiness was stale: tokio cleared it, poll again
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn try_write_now(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        let mut done = 0;
        while done < buf.len() {
            match self.try_write(&buf[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(done)),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await
    }

    async fn close_write(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// A connection accepted by `fawkes::serve`: its TCP stream.
impl WsIo for crate::serve::Capped {
    fn poll_read_into(&mut self, cx: &mut Context<'_>, reader: &mut WsReader) -> Poll<io::Result<usize>> {
        self.stream.poll_read_into(cx, reader)
    }

    fn try_write_now(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        self.stream.try_write_now(buf)
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stream.write_all_bytes(buf).await
    }

    async fn close_write(&mut self) {
        self.stream.close_write().await;
    }
}

/// Any other byte stream.
pub(crate) struct Generic<T>(pub(crate) T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> WsIo for Generic<T> {
    fn poll_read_into(&mut self, cx: &mut Context<'_>, reader: &mut WsReader) -> Poll<io::Result<usize>> {
        // The buffer lives on the stack of one poll only: while the read is
        // pending, the connection holds no buffer.
        let mut chunk = [0u8; CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                reader.feed(buf.filled());
                Poll::Ready(Ok(buf.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn try_write_now(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        // Polled with a waker that does nothing: a stream that is not ready
        // is then waited for properly by `write_all_bytes`.
        let mut cx = Context::from_waker(Waker::noop());
        let mut done = 0;
        while done < buf.len() {
            match Pin::new(&mut self.0).poll_write(&mut cx, &buf[done..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(Some(done)),
            }
        }
        match Pin::new(&mut self.0).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Ok(None),
            Poll::Ready(Err(e)) => Err(e),
            // all taken, not yet flushed: the flush is left
            Poll::Pending => Ok(Some(done)),
        }
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await?;
        self.0.flush().await
    }

    async fn close_write(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A stream that takes at most `room` bytes before its reader drains it
    /// reports what it took, and the slow path writes the rest in order.
    #[tokio::test]
    async fn generic_writes_what_fits_then_the_rest() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut io = Generic(a);
        let data: Vec<u8> = (0..100u8).collect();
        let taken = io.try_write_now(&data).unwrap();
        assert_eq!(taken, Some(16));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        io.write_all_bytes(&data[16..]).await.unwrap();
        io.close_write().await;
        drop(io);
        assert_eq!(reader.await.unwrap(), data);
    }

    #[tokio::test]
    async fn generic_writes_everything_when_there_is_room() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = Generic(a);
        assert_eq!(io.try_write_now(b"hello").unwrap(), None);
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    /// On TCP, a peer that does not read fills the kernel's buffers: the
    /// try reports a partial write instead of waiting.
    #[tokio::test]
    async fn tcp_reports_a_partial_write_to_a_peer_that_does_not_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut server, _) = accepted.unwrap();
        let mut client = client.unwrap();
        let data = vec![7u8; 64 * 1024 * 1024];
        let Some(taken) = server.try_write_now(&data).unwrap() else {
            panic!("64 MiB cannot fit in a socket's buffers");
        };
        assert!(taken < data.len());
        let mut first = vec![0u8; 1024];
        client.read_exact(&mut first).await.unwrap();
        assert!(first.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn tcp_reads_what_is_there_and_sees_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut server, _) = accepted.unwrap();
        let mut client = client.unwrap();
        client.write_all(&[0x89, 0x80, 1, 2, 3, 4]).await.unwrap(); // a masked, empty ping
        let mut reader = WsReader::new(1024, false);
        assert_eq!(server.read_into(&mut reader).await.unwrap(), 6);
        assert!(matches!(reader.next_event(), Ok(Some(super::super::ws_codec::WsEvent::Ping(_)))));
        drop(client);
        assert_eq!(server.read_into(&mut reader).await.unwrap(), 0);
    }
}
