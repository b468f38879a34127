//! Reading and writing an upgraded connection.
//!
//! Reads go into a buffer on the stack of one poll (or, on a plain TCP
//! stream, wait for readiness first), so an idle connection holds no read
//! buffer at all.

use std::future::Future;
use std::io;

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::ws_codec::WsReader;

pub(crate) trait WsIo: Send + Unpin + 'static {
    /// Reads what is available into `reader`; `Ok(0)` at end of stream.
    fn read_into(&mut self, reader: &mut WsReader) -> impl Future<Output = io::Result<usize>> + Send;
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
    async fn read_into(&mut self, reader: &mut WsReader) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match read_ready(self, reader) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await
    }

    async fn close_write(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Any other byte stream.
pub(crate) struct Generic<T>(pub(crate) T);

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> WsIo for Generic<T> {
    async fn read_into(&mut self, reader: &mut WsReader) -> io::Result<usize> {
        // The buffer lives on the stack of one poll only: while the read is
        // pending, the connection holds no buffer.
        std::future::poll_fn(|cx| {
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
        })
        .await
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await?;
        self.0.flush().await
    }

    async fn close_write(&mut self) {
        let _ = self.0.shutdown().await;
    }
}
