//! A minimal, cheap WebSocket client for load: one read buffer per
//! connection, reused; frames parsed in place; writes batched; a zero mask
//! (valid, and free to apply).

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub(crate) struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

/// A frame's place in the read buffer.
pub(crate) struct FrameAt {
    start: usize,
    end: usize,
}

impl Client {
    /// Connects from `local` to `server` and upgrades `path` (with query).
    pub(crate) async fn connect(server: SocketAddr, local: IpAddr, path: &str, buf_size: usize) -> io::Result<Client> {
        let sock = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        sock.bind(SocketAddr::new(local, 0))?;
        let mut stream = sock.connect(server).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {server}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut c = Client { stream, buf: vec![0; buf_size.max(1024)], start: 0, end: 0, out: Vec::new() };
        // read the response head
        loop {
            if let Some(i) = c.buf[..c.end].windows(4).position(|w| w == b"\r\n\r\n") {
                if !c.buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&c.buf[..i]).lines().next().unwrap_or("").to_owned();
                    return Err(io::Error::other(format!("upgrade refused: {head}")));
                }
                c.start = i + 4;
                return Ok(c);
            }
            c.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.end += n;
        Ok(())
    }

    /// Queues a text frame (written by [`Client::flush`]).
    pub(crate) fn queue_text(&mut self, text: &[u8]) {
        let len = text.len();
        self.out.push(0x81);
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if len < 65_536 {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // a zero mask leaves the payload as it is
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        self.out.extend_from_slice(text);
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends a close frame (code 1000, masked with a zero mask).
    pub(crate) async fn send_close(&mut self) -> io::Result<()> {
        self.out.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
        self.flush().await
    }

    pub(crate) async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.queue_text(text);
        self.flush().await
    }

    /// The next frame in the buffer, reading only when none is complete.
    pub(crate) async fn next(&mut self) -> io::Result<FrameAt> {
        loop {
            if let Some(f) = self.parse() {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// A complete frame already read, if any.
    pub(crate) fn parse(&mut self) -> Option<FrameAt> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b.get(2..10)?);
                (usize::try_from(u64::from_be_bytes(n)).ok()?, 10)
            }
            n => (usize::from(n), 2),
        };
        if b.len() < at + len {
            return None;
        }
        let f = FrameAt { start: self.start + at, end: self.start + at + len };
        self.start += at + len;
        Some(f)
    }

    pub(crate) fn payload(&self, f: &FrameAt) -> &[u8] {
        &self.buf[f.start..f.end]
    }
}

/// The `[join_ref, ref, topic, event, payload]` fields of a V2 text frame,
/// without their quotes; the payload as raw JSON.
pub(crate) fn fields(frame: &[u8]) -> Option<[&[u8]; 5]> {
    let mut out: [&[u8]; 5] = [&[]; 5];
    let mut i = frame.iter().position(|&b| b == b'[')? + 1;
    for slot in out.iter_mut().take(4) {
        while frame.get(i)? == &b' ' {
            i += 1;
        }
        if frame.get(i)? == &b'"' {
            let end = i + 1 + frame[i + 1..].iter().position(|&b| b == b'"')?;
            *slot = &frame[i + 1..end];
            i = end + 1;
        } else {
            let end = i + frame[i..].iter().position(|&b| b == b',')?;
            *slot = &frame[i..end];
            i = end;
        }
        while frame.get(i)? != &b',' {
            i += 1;
        }
        i += 1;
    }
    let end = frame.iter().rposition(|&b| b == b']')?;
    out[4] = frame.get(i..end)?;
    Some(out)
}

/// The unsigned integer after `"key":` in `json`, by a plain scan.
pub(crate) fn number_after(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_v2_frames() {
        let f = fields(br#"[null,"12","room:1","phx_reply",{"response":{},"status":"ok"}]"#).unwrap();
        assert_eq!(f[0], b"null");
        assert_eq!(f[1], b"12");
        assert_eq!(f[3], b"phx_reply");
        assert_eq!(f[4], br#"{"response":{},"status":"ok"}"#);
        assert_eq!(number_after(br#"{"t":123,"s":9}"#, b"\"s\":"), Some(9));
    }
}
