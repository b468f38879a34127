//! Reading and writing an upgraded connection.
//!
//! On a plain TCP stream, reads wait for readiness first and then read into a
//! stack buffer, so an idle connection holds no read buffer at all. Any other
//! stream (TLS, a test pipe) reads through a small heap buffer.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        let mut buf = Vec::with_capacity(4096);
        let n = self.0.read_buf(&mut buf).await?;
        reader.feed(&buf[..n]);
        Ok(n)
    }

    async fn write_all_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await?;
        self.0.flush().await
    }

    async fn close_write(&mut self) {
        let _ = self.0.shutdown().await;
    }
}
