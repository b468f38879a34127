//! RFC 6455 framing for the server side, written for a low cost per
//! connection: nothing is buffered between messages, a message that arrives
//! in one frame is handed on without a copy, and frames for the client are
//! written in batches.
//!
//! Also the server's half of permessage-deflate (RFC 7692), negotiated with
//! no context takeover in either direction, so that a connection keeps no
//! compression state between messages.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use fawkes_protocol::{Frame, Opcode};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use sha1::{Digest, Sha1};

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close codes the server uses.
pub(crate) mod close {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL: u16 = 1002;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const INTERNAL: u16 = 1011;
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// What the reader found.
#[derive(Debug, PartialEq)]
pub(crate) enum WsEvent {
    /// A complete data message.
    Message(Frame),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// The client's close frame: its code, if any.
    Close(Option<u16>),
}

/// A framing violation, and the close code it calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

fn err(code: u16, reason: &'static str) -> WsError {
    WsError { code, reason }
}

/// A frame's header: its length, flags, opcode and payload length.
struct FrameHeader {
    header: usize,
    fin: bool,
    rsv1: bool,
    opcode: u8,
    len: usize,
}

struct Partial {
    opcode: Opcode,
    compressed: bool,
    data: Vec<u8>,
}

/// Reassembles client messages from bytes as they arrive.
pub(crate) struct WsReader {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start: frames are consumed by moving
    /// this, and the buffer is compacted once per read, not once per frame.
    start: usize,
    partial: Option<Partial>,
    max_message: usize,
    deflate: bool,
    /// After a protocol error: bytes are dropped as they arrive, so that
    /// the connection can be read to its end (and the close frame sent
    /// before reaches the client) without holding what the client still
    /// sends.
    discarding: bool,
}

impl WsReader {
    pub(crate) fn new(max_message: usize, deflate: bool) -> WsReader {
        WsReader { buf: Vec::new(), start: 0, partial: None, max_message, deflate, discarding: false }
    }

    /// Drops everything held and everything fed from now on.
    pub(crate) fn discard(&mut self) {
        self.discarding = true;
        self.buf = Vec::new();
        self.start = 0;
        self.partial = None;
    }

    /// Adds bytes read from the connection.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.discarding {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// True when no partial frame or message is held.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.buf.len() == self.start && self.partial.is_none()
    }

    /// The next event, if a whole frame has arrived.
    pub(crate) fn next_event(&mut self) -> Result<Option<WsEvent>, WsError> {
        if self.discarding {
            return Ok(None);
        }
        loop {
            let Some(FrameHeader { header, fin, rsv1, opcode, len }) = self.parse_header()? else {
                self.release();
                return Ok(None);
            };
            let end = header + len;
            let b = &self.buf[self.start..];
            if b.len() < end {
                return Ok(None);
            }
            let mask: [u8; 4] = [b[header - 4], b[header - 3], b[header - 2], b[header - 1]];
            let mut payload: Vec<u8> = b[header..end].to_vec();
            self.start += end;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            if let Some(ev) = self.on_frame(fin, rsv1, opcode, payload)? {
                self.release();
                return Ok(Some(ev));
            }
        }
    }

    fn release(&mut self) {
        if self.buf.len() == self.start && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Header length, FIN, RSV1, opcode and payload length of the frame at the
    /// front of the buffer, once its header is complete.
    fn parse_header(&self) -> Result<Option<FrameHeader>, WsError> {
        let b = &self.buf[self.start..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let rsv1 = b[0] & 0x40 != 0;
        if b[0] & 0x30 != 0 {
            return Err(err(close::PROTOCOL, "reserved bits set"));
        }
        let opcode = b[0] & 0x0f;
        if b[1] & 0x80 == 0 {
            return Err(err(close::PROTOCOL, "client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        let is_control = opcode & 0x08 != 0;
        if is_control && (!fin || len > 125) {
            return Err(err(close::PROTOCOL, "invalid control frame"));
        }
        let held = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
        if len.saturating_add(held) > self.max_message as u64 {
            return Err(err(close::TOO_BIG, "message too big"));
        }
        let header = at + 4;
        if b.len() < header {
            return Ok(None);
        }
        // `len` fits: it is at most `max_message`, a usize.
        Ok(Some(FrameHeader { header, fin, rsv1, opcode, len: len as usize }))
    }

    fn on_frame(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: Vec<u8>) -> Result<Option<WsEvent>, WsError> {
        match opcode {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(err(close::PROTOCOL, "new message inside a fragmented one"));
                }
                if rsv1 && !self.deflate {
                    return Err(err(close::PROTOCOL, "compressed frame without permessage-deflate"));
                }
                let op = if opcode == OP_TEXT { Opcode::Text } else { Opcode::Binary };
                if fin {
                    return self.finish(op, rsv1, payload).map(Some);
                }
                self.partial = Some(Partial { opcode: op, compressed: rsv1, data: payload });
                Ok(None)
            }
            OP_CONT => {
                if rsv1 {
                    return Err(err(close::PROTOCOL, "RSV1 on a continuation frame"));
                }
                let Some(p) = self.partial.as_mut() else {
                    return Err(err(close::PROTOCOL, "continuation without a message"));
                };
                p.data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let Some(p) = self.partial.take() else {
                    return Ok(None);
                };
                self.finish(p.opcode, p.compressed, p.data).map(Some)
            }
            OP_CLOSE => {
                if rsv1 {
                    return Err(err(close::PROTOCOL, "RSV1 on a control frame"));
                }
                match payload.len() {
                    0 => Ok(Some(WsEvent::Close(None))),
                    1 => Err(err(close::PROTOCOL, "close frame of one byte")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
                        if !valid {
                            return Err(err(close::PROTOCOL, "invalid close code"));
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(err(close::INVALID_DATA, "close reason is not UTF-8"));
                        }
                        Ok(Some(WsEvent::Close(Some(code))))
                    }
                }
            }
            OP_PING if !rsv1 => Ok(Some(WsEvent::Ping(Bytes::from(payload)))),
            OP_PONG if !rsv1 => Ok(Some(WsEvent::Pong)),
            _ => Err(err(close::PROTOCOL, "unknown opcode")),
        }
    }

    fn finish(&self, opcode: Opcode, compressed: bool, data: Vec<u8>) -> Result<WsEvent, WsError> {
        let data = if compressed { inflate(&data, self.max_message)? } else { data };
        if opcode == Opcode::Text && std::str::from_utf8(&data).is_err() {
            return Err(err(close::INVALID_DATA, "text message is not UTF-8"));
        }
        Ok(WsEvent::Message(Frame { opcode, data: Bytes::from(data) }))
    }
}

/// Appends a server frame (unmasked, final) to `out`.
pub(crate) fn write_frame(out: &mut Vec<u8>, opcode: u8, rsv1: bool, payload: &[u8]) {
    out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn opcode(frame: &Frame) -> u8 {
    match frame.opcode {
        Opcode::Text => OP_TEXT,
        Opcode::Binary => OP_BINARY,
    }
}

/// Whether a message is worth compressing: tiny ones do not shrink, and
/// RFC 7692 lets each message choose.
pub(crate) fn worth_deflating(frame: &Frame) -> bool {
    frame.data.len() > 64
}

/// A message's data compressed for permessage-deflate (no context
/// takeover, so the same bytes serve every connection).
pub(crate) fn deflate_frame(frame: &Frame) -> Bytes {
    Bytes::from(deflate_message(&frame.data))
}

/// Appends a data frame for `frame`, compressed when `deflate` is on.
pub(crate) fn write_message(out: &mut Vec<u8>, frame: &Frame, deflate: bool) {
    if deflate && worth_deflating(frame) {
        let z = deflate_message(&frame.data);
        write_frame(out, opcode(frame), true, &z);
    } else {
        write_frame(out, opcode(frame), false, &frame.data);
    }
}

/// Appends a data frame whose data [`deflate_frame`] already compressed.
pub(crate) fn write_deflated(out: &mut Vec<u8>, frame: &Frame) {
    write_frame(out, opcode(frame), true, &frame.data);
}

/// Appends a close frame.
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    write_frame(out, OP_CLOSE, false, &p);
}

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

thread_local! {
    /// One compressor and one decompressor per worker thread, reset before
    /// each message (no context takeover allows it): their state is large,
    /// and making it per message cost more than the compression.
    static DEFLATE: std::cell::RefCell<Compress> = std::cell::RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: std::cell::RefCell<Decompress> = std::cell::RefCell::new(Decompress::new(false));
}

fn deflate_message(data: &[u8]) -> Vec<u8> {
    DEFLATE.with_borrow_mut(|c| {
        c.reset();
        deflate_with(c, data)
    })
}

fn deflate_with(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let consumed = (c.total_in() as usize).min(data.len());
        if c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).is_err() {
            break;
        }
        // With a sync flush, room left in the output means the flush is complete.
        if c.total_in() as usize >= data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    }
    out
}

fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
    INFLATE.with_borrow_mut(|d| {
        d.reset(false);
        inflate_with(d, data, max)
    })
}

fn inflate_with(d: &mut Decompress, data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
    let invalid = || err(close::INVALID_DATA, "invalid deflate data");
    let mut input = BytesMut::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&TAIL);
    let mut out: Vec<u8> = Vec::with_capacity((data.len() * 3).clamp(64, max.max(64)));
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let consumed = (d.total_in() as usize).min(input.len());
        let status = d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync).map_err(|_| invalid())?;
        if out.len() > max {
            return Err(err(close::TOO_BIG, "message too big"));
        }
        if status == Status::StreamEnd || (d.total_in() as usize >= input.len() && out.len() < out.capacity()) {
            return Ok(out);
        }
        if d.total_in() == in_before && out.len() == out_before && out.len() < out.capacity() {
            return Err(invalid());
        }
    }
}

/// The answer to a `Sec-WebSocket-Extensions` offer when compression is on:
/// `Some(response header)` if a permessage-deflate offer is acceptable.
pub(crate) fn negotiate_deflate(offers: &str) -> Option<&'static str> {
    for offer in offers.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        let acceptable = parts.all(|p| {
            let (name, value) =
                p.split_once('=').map_or((p, None), |(n, v)| (n.trim(), Some(v.trim().trim_matches('"'))));
            match name {
                "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
                "client_max_window_bits" => value.is_none_or(|v| matches!(v.parse::<u8>(), Ok(8..=15))),
                // We compress with a 32 KiB window; a client that asks for less is declined.
                "server_max_window_bits" => value == Some("15"),
                _ => false,
            }
        });
        if acceptable {
            return Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask = [1u8, 2, 3, 4];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn reads_messages_byte_by_byte_and_across_fragments_with_control_frames_between() {
        let mut r = WsReader::new(1 << 20, false);
        let mut wire = client_frame(false, OP_TEXT, b"hel");
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(true, OP_CONT, b"lo"));
        wire.extend(client_frame(true, OP_BINARY, &[0u8; 70000]));
        let mut events = Vec::new();
        for b in wire {
            r.feed(&[b]);
            while let Some(ev) = r.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events[0], WsEvent::Ping(Bytes::from_static(b"p")));
        assert_eq!(events[1], WsEvent::Message(Frame::text("hello")));
        assert_eq!(events[2], WsEvent::Message(Frame::binary(vec![0u8; 70000])));
        assert!(r.is_idle());
    }

    #[test]
    fn refuses_protocol_violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x01, b'a'], close::PROTOCOL), // unmasked
            (client_frame(true, OP_CONT, b"x"), close::PROTOCOL),
            (client_frame(false, OP_PING, b"x"), close::PROTOCOL),
            (client_frame(true, 0x3, b"x"), close::PROTOCOL),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe]), close::INVALID_DATA),
            (client_frame(true, OP_CLOSE, &[0x03]), close::PROTOCOL),
            (client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff]), close::INVALID_DATA),
            (client_frame(true, OP_CLOSE, &[0x03, 0xed]), close::PROTOCOL), // 1005 may not be sent
            (client_frame(true, OP_BINARY, &[0u8; 2000]), close::TOO_BIG),
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"x");
                    f[0] |= 0x40;
                    f
                },
                close::PROTOCOL,
            ),
        ];
        for (wire, code) in cases {
            let mut r = WsReader::new(1000, false);
            r.feed(&wire);
            assert_eq!(r.next_event().map_err(|e| e.code), Err(code), "{wire:?}");
        }
        let mut r = WsReader::new(1000, false);
        let mut wire = client_frame(false, OP_TEXT, b"a");
        wire.extend(client_frame(true, OP_TEXT, b"b"));
        r.feed(&wire);
        assert_eq!(r.next_event().map_err(|e| e.code), Err(close::PROTOCOL));
    }

    #[test]
    fn too_big_is_refused_before_the_payload_arrives() {
        let mut r = WsReader::new(1000, false);
        r.feed(&[0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(r.next_event().map_err(|e| e.code), Err(close::TOO_BIG));
    }

    #[test]
    fn deflate_round_trips_and_bombs_are_refused() {
        let text = "hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let z = deflate_message(text.as_bytes());
        assert!(z.len() < text.len() / 4);
        let mut wire = client_frame(true, OP_TEXT, &z);
        wire[0] |= 0x40;
        let mut r = WsReader::new(1 << 20, true);
        r.feed(&wire);
        assert_eq!(r.next_event().unwrap(), Some(WsEvent::Message(Frame::text(text.clone()))));
        let bomb = deflate_message(&vec![0u8; 1 << 20]);
        let mut wire = client_frame(true, OP_BINARY, &bomb);
        wire[0] |= 0x40;
        let mut r = WsReader::new(4096, true);
        r.feed(&wire);
        assert_eq!(r.next_event().map_err(|e| e.code), Err(close::TOO_BIG));
    }

    #[test]
    fn negotiates_only_what_it_can_honour() {
        assert!(negotiate_deflate("permessage-deflate; client_max_window_bits").is_some());
        assert!(negotiate_deflate("x-webkit-deflate-frame, permessage-deflate").is_some());
        assert!(negotiate_deflate("permessage-deflate; server_max_window_bits=10").is_none());
        assert!(negotiate_deflate("permessage-deflate; server_max_window_bits=10, permessage-deflate").is_some());
        assert!(negotiate_deflate("permessage-deflate; unknown=1").is_none());
    }
}
