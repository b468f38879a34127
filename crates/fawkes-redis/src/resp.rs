//! The few parts of RESP2, Redis's protocol, that PUBLISH and SUBSCRIBE
//! need: commands out, replies and pushes in, parsed incrementally with
//! bounded sizes (a broken or hostile server cannot make this allocate
//! without limit or panic).

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply or push from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Value>>),
}

/// Largest bulk string accepted (Redis's own limit is 512 MB).
const MAX_BULK: usize = 64 << 20;
/// Most elements of one array.
const MAX_ARRAY: usize = 1 << 16;
const MAX_DEPTH: usize = 8;

/// Appends a command: an array of bulk strings.
pub(crate) fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol: {what}"))
}

/// The line at the start of `buf` (without its CRLF) and the bytes it took.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

fn number(s: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("a number was expected"))
}

/// Parses one value at the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the value and the bytes it took.
pub(crate) fn parse(buf: &[u8]) -> io::Result<Option<(Value, usize)>> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> io::Result<Option<(Value, usize)>> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    let Some((&kind, rest)) = buf.split_first() else { return Ok(None) };
    // a status or error line may be long; a length or a number is short
    let limit = if matches!(kind, b'+' | b'-') { 64 * 1024 } else { 32 };
    let Some((head, used)) = line(&rest[..rest.len().min(limit + 2)]) else {
        return if rest.len() > limit + 1 { Err(bad("line too long")) } else { Ok(None) };
    };
    let used = used + 1;
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => (Value::Simple(text()), used),
        b'-' => (Value::Error(text()), used),
        b':' => (Value::Int(number(head)?), used),
        b'$' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| bad("length"))?;
            if n > MAX_BULK {
                return Err(bad("bulk string too large"));
            }
            let Some(body) = buf.get(used..used + n + 2) else { return Ok(None) };
            if &body[n..] != b"\r\n" {
                return Err(bad("bulk string not terminated"));
            }
            (Value::Bulk(Some(Bytes::copy_from_slice(&body[..n]))), used + n + 2)
        }
        b'*' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some((Value::Array(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| bad("length"))?;
            if n > MAX_ARRAY {
                return Err(bad("array too large"));
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = used;
            for _ in 0..n {
                match parse_at(&buf[at..], depth + 1)? {
                    Some((v, took)) => {
                        items.push(v);
                        at += took;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(Some(items)), at)
        }
        _ => return Err(bad("unknown reply type")),
    }))
}

/// A connection to Redis: a stream and what was read but not parsed yet.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects, and authenticates when `auth` is set (`AUTH [user] pass`).
    pub(crate) async fn open(addr: &str, auth: Option<(Option<&str>, &str)>, timeout: Duration) -> io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to redis timed out"))??;
        stream.set_nodelay(true)?;
        let mut conn = Conn { stream, buf: BytesMut::with_capacity(4096) };
        if let Some((user, pass)) = auth {
            let mut out = Vec::new();
            match user {
                Some(u) => command(&mut out, &[b"AUTH", u.as_bytes(), pass.as_bytes()]),
                None => command(&mut out, &[b"AUTH", pass.as_bytes()]),
            }
            conn.write(&out).await?;
            match tokio::time::timeout(timeout, conn.read()).await {
                Ok(Ok(Value::Simple(_))) => {}
                Ok(Ok(Value::Error(e))) => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("redis AUTH: {e}")))
                }
                Ok(Ok(_)) => return Err(bad("unexpected AUTH reply")),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "redis AUTH timed out")),
            }
        }
        Ok(conn)
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// The next value from the server.
    pub(crate) async fn read(&mut self) -> io::Result<Value> {
        loop {
            if let Some((v, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(v);
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(data: &[u8]) -> Value {
        let (v, used) = parse(data).unwrap().unwrap();
        assert_eq!(used, data.len());
        v
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"ch", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn replies_and_pushes_parse() {
        assert_eq!(whole(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(whole(b":42\r\n"), Value::Int(42));
        assert_eq!(whole(b"$-1\r\n"), Value::Bulk(None));
        assert_eq!(
            whole(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\x83\r\n\r\n"),
            Value::Array(Some(vec![
                Value::Bulk(Some(Bytes::from_static(b"message"))),
                Value::Bulk(Some(Bytes::from_static(b"ch"))),
                Value::Bulk(Some(Bytes::from_static(b"\x83\r\n"))),
            ]))
        );
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = b"*2\r\n$5\r\nhello\r\n:1\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic_or_an_allocation() {
        for data in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$99999999999\r\n",
            b"*99999999\r\n",
            b"$3\r\nabcXY",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(data).is_err(), "{:?}", String::from_utf8_lossy(data));
        }
        let long = vec![b'+'; 100_000];
        assert!(parse(&long).is_err());
        let mut long_length = b"$".to_vec();
        long_length.extend(std::iter::repeat_n(b'9', 1000));
        assert!(parse(&long_length).is_err(), "a length line without an end is refused, not buffered");
    }
}
