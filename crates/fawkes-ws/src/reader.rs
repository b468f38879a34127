//! Reassembling a client's messages from the bytes read off its connection.
//!
//! The [`Reader`] is fed bytes as they are read, in pieces of any size, and
//! asked for the next [`Event`] until it has none. A message that arrives
//! whole in one read is copied once, out of the read buffer; a message
//! that arrives in pieces (a large frame over many reads, or fragments) is
//! unmasked into the message's buffer as each piece arrives, so the reader
//! holds the message and at most one frame header or control frame besides,
//! and text is checked for UTF-8 as it comes.

use bytes::Bytes;

use crate::close::{self, CloseFrame};
use crate::deflate;
use crate::frame::{apply_mask, Header, Opcode};
use crate::utf8::Utf8Validator;
use crate::Error;

/// Whether a message is text (valid UTF-8) or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message: its data is valid UTF-8.
    Text,
    /// A binary message.
    Binary,
}

/// A whole data message, decompressed if it was compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: MessageKind,
    /// Its payload (valid UTF-8 for text).
    pub data: Bytes,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message.
    Message(Message),
    /// A ping: to be answered with a pong that carries the same bytes.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The client's close frame: its code and reason, if it has them. The
    /// reader reads nothing after it.
    Close(Option<CloseFrame>),
}

/// A data frame whose payload is arriving.
#[derive(Debug)]
struct InFrame {
    remaining: usize,
    mask: [u8; 4],
    /// Where the next byte falls in the masking key.
    offset: usize,
    fin: bool,
}

/// A message that has not arrived whole.
#[derive(Debug)]
struct Partial {
    kind: MessageKind,
    compressed: bool,
    data: Vec<u8>,
    /// For uncompressed text: its validation so far.
    utf8: Option<Utf8Validator>,
    frame: Option<InFrame>,
}

/// Bytes of read buffer kept while the reader waits for the rest of a
/// header or control frame (larger buffers are given back).
const KEEP: usize = 256;

/// Reassembles a client's messages (the server's side of RFC 6455: client
/// frames must be masked), with permessage-deflate when it was negotiated.
///
/// The size limit applies to each message's payload as it arrives
/// (compressed or not), checked on each frame's header before its payload
/// arrives, and again to a compressed message's decompressed size, which
/// stops decompression as soon as it is exceeded.
///
/// After an [`Error`], the client's [`Event::Close`] or [`Reader::discard`],
/// the reader holds nothing, drops whatever it is fed and returns no
/// more events.
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start: frames are consumed by moving
    /// this, and the buffer is compacted once per feed, not once per frame.
    start: usize,
    /// Boxed: only a message that arrives in pieces needs it.
    partial: Option<Box<Partial>>,
    max_message: usize,
    deflate: bool,
    done: bool,
}

impl Reader {
    /// A reader for messages of at most `max_message` bytes; `deflate`: the
    /// connection negotiated permessage-deflate.
    pub fn new(max_message: usize, deflate: bool) -> Reader {
        Reader { buf: Vec::new(), start: 0, partial: None, max_message, deflate, done: false }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Drops everything held and everything fed from now on (a connection
    /// being closed is read to its end without keeping what it sends).
    pub fn discard(&mut self) {
        self.done = true;
        self.buf = Vec::new();
        self.start = 0;
        self.partial = None;
    }

    /// True after an error, the client's close frame, or
    /// [`Reader::discard`]: nothing more will be read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when no part of a frame or message is held.
    pub fn is_idle(&self) -> bool {
        self.buf.len() == self.start && self.partial.is_none()
    }

    /// The memory its buffers hold, in bytes (their capacities). Once
    /// [`Reader::next_event`] has returned `Ok(None)`, at most the size
    /// limit plus a few hundred bytes.
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity() + self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    /// The next event, if what was fed holds one. `Ok(None)`: more bytes are
    /// needed (or the reader is done).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.step() {
            Ok(Some(ev)) => {
                if matches!(ev, Event::Close(_)) {
                    self.discard();
                } else if self.start == self.buf.len() {
                    self.buf = Vec::new();
                    self.start = 0;
                }
                Ok(Some(ev))
            }
            Ok(None) => {
                self.release();
                Ok(None)
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Gives back the read buffer once what is left of it is only part of a
    /// header or control frame.
    fn release(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        } else if self.buf.capacity() > KEEP {
            self.buf = self.buf[self.start..].to_vec();
            self.start = 0;
        }
    }

    fn step(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(p) = self.partial.as_deref_mut() {
                if let Some(f) = p.frame.as_mut() {
                    let available = &mut self.buf[self.start..];
                    let n = available.len().min(f.remaining);
                    if n == 0 {
                        return Ok(None);
                    }
                    let chunk = &mut available[..n];
                    apply_mask(chunk, f.mask, f.offset);
                    let bound = if f.fin { p.data.len() + f.remaining } else { self.max_message };
                    reserve(&mut p.data, n, bound);
                    p.data.extend_from_slice(chunk);
                    if let Some(v) = p.utf8.as_mut() {
                        v.feed(chunk).map_err(|_| Error::InvalidUtf8)?;
                    }
                    self.start += n;
                    f.remaining -= n;
                    f.offset = (f.offset + n) & 3;
                    if f.remaining > 0 {
                        return Ok(None);
                    }
                    let fin = f.fin;
                    p.frame = None;
                    if fin {
                        return self.complete_partial().map(Some);
                    }
                }
            }
            let Some((h, size)) = Header::parse(&self.buf[self.start..])? else {
                return Ok(None);
            };
            let Some(mask) = h.mask else {
                return Err(Error::Unmasked);
            };
            let available = self.buf.len() - self.start;
            if h.opcode.is_control() {
                if h.rsv1 {
                    return Err(Error::CompressedControl);
                }
                // at most 125: `Header::parse` checked
                let len = h.len as usize;
                if available < size + len {
                    return Ok(None);
                }
                let at = self.start + size;
                self.start = at + len;
                let payload = &mut self.buf[at..at + len];
                apply_mask(payload, mask, 0);
                return match h.opcode {
                    Opcode::Ping => Ok(Some(Event::Ping(Bytes::copy_from_slice(payload)))),
                    Opcode::Pong => Ok(Some(Event::Pong(Bytes::copy_from_slice(payload)))),
                    _ => close::parse(payload).map(|c| Some(Event::Close(c))),
                };
            }
            let held = match (h.opcode, &self.partial) {
                (Opcode::Continuation, None) => return Err(Error::UnexpectedContinuation),
                (Opcode::Continuation, _) if h.rsv1 => return Err(Error::CompressedContinuation),
                (Opcode::Continuation, Some(p)) => p.data.len(),
                (_, Some(_)) => return Err(Error::ExpectedContinuation),
                (_, None) if h.rsv1 && !self.deflate => return Err(Error::CompressedWithoutExtension),
                (_, None) => 0,
            };
            if h.len > self.max_message.saturating_sub(held) as u64 {
                return Err(Error::TooBig);
            }
            // fits: at most `max_message`, a usize
            let len = h.len as usize;
            let kind = if h.opcode == Opcode::Text { MessageKind::Text } else { MessageKind::Binary };
            if h.opcode != Opcode::Continuation && h.fin && available >= size + len {
                // the whole message is here: one copy, out of the read buffer
                let at = self.start + size;
                let mut data = self.buf[at..at + len].to_vec();
                self.start = at + len;
                apply_mask(&mut data, mask, 0);
                return self.complete(kind, h.rsv1, data).map(Some);
            }
            self.start += size;
            let p = self.partial.get_or_insert_with(|| {
                Box::new(Partial {
                    kind,
                    compressed: h.rsv1,
                    data: Vec::new(),
                    utf8: (kind == MessageKind::Text && !h.rsv1).then(Utf8Validator::new),
                    frame: None,
                })
            });
            if len > 0 {
                p.frame = Some(InFrame { remaining: len, mask, offset: 0, fin: h.fin });
            } else if h.fin {
                return self.complete_partial().map(Some);
            }
        }
    }

    fn complete_partial(&mut self) -> Result<Event, Error> {
        let Some(p) = self.partial.take() else {
            return Err(Error::UnexpectedContinuation);
        };
        let Partial { kind, compressed, data, utf8, .. } = *p;
        if let Some(v) = utf8 {
            v.finish().map_err(|_| Error::InvalidUtf8)?;
            return Ok(Event::Message(Message { kind, data: Bytes::from(data) }));
        }
        self.complete(kind, compressed, data)
    }

    /// A whole message's payload (unmasked): decompressed if it must be,
    /// and checked for UTF-8 if it is text and was not already.
    fn complete(&self, kind: MessageKind, compressed: bool, data: Vec<u8>) -> Result<Event, Error> {
        let data = if compressed { deflate::decompress(&data, self.max_message)? } else { data };
        if kind == MessageKind::Text && std::str::from_utf8(&data).is_err() {
            return Err(Error::InvalidUtf8);
        }
        Ok(Event::Message(Message { kind, data: Bytes::from(data) }))
    }
}

/// Makes room for `n` more bytes in a message's buffer: doubling, so that
/// many small fragments cost linear time, but never past `bound` (the
/// current frame's end when it is the last, else the size limit).
fn reserve(data: &mut Vec<u8>, n: usize, bound: usize) {
    let needed = data.len() + n;
    if needed > data.capacity() {
        let want = data.capacity().saturating_mul(2).min(bound).max(needed);
        data.reserve_exact(want - data.len());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const OP_CONT: u8 = 0x0;
    const OP_TEXT: u8 = 0x1;
    const OP_BINARY: u8 = 0x2;
    const OP_CLOSE: u8 = 0x8;
    const OP_PING: u8 = 0x9;
    const OP_PONG: u8 = 0xA;

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

    fn compressed(mut frame: Vec<u8>) -> Vec<u8> {
        frame[0] |= 0x40;
        frame
    }

    fn text(s: &str) -> Event {
        Event::Message(Message { kind: MessageKind::Text, data: Bytes::copy_from_slice(s.as_bytes()) })
    }

    fn binary(d: Vec<u8>) -> Event {
        Event::Message(Message { kind: MessageKind::Binary, data: Bytes::from(d) })
    }

    /// Feeds `wire` in pieces of `step` bytes, collecting events until the
    /// end or the first error.
    fn read_all(r: &mut Reader, wire: &[u8], step: usize) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            r.feed(piece);
            while let Some(ev) = r.next_event()? {
                events.push(ev);
            }
        }
        Ok(events)
    }

    #[test]
    fn reads_messages_byte_by_byte_and_across_fragments_with_control_frames_between() {
        let mut wire = client_frame(false, OP_TEXT, b"hel");
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(false, OP_CONT, b""));
        wire.extend(client_frame(true, OP_CONT, b"lo"));
        wire.extend(client_frame(true, OP_BINARY, &[7u8; 70000]));
        wire.extend(client_frame(true, OP_PONG, b"q"));
        for step in [1, 2, 3, 7, 100, 4096, wire.len()] {
            let mut r = Reader::new(1 << 20, false);
            let events = read_all(&mut r, &wire, step).unwrap();
            assert_eq!(
                events,
                vec![
                    Event::Ping(Bytes::from_static(b"p")),
                    text("hello"),
                    binary(vec![7u8; 70000]),
                    Event::Pong(Bytes::from_static(b"q"))
                ],
                "step {step}"
            );
            assert!(r.is_idle());
            assert_eq!(r.held_bytes(), 0);
        }
    }

    #[test]
    fn refuses_protocol_violations() {
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (vec![0x81, 0x01, b'a'], Error::Unmasked),
            (client_frame(true, OP_CONT, b"x"), Error::UnexpectedContinuation),
            (client_frame(false, OP_PING, b"x"), Error::FragmentedControl),
            (client_frame(true, OP_PING, &[0; 126]), Error::ControlTooLong),
            (client_frame(true, 0x3, b"x"), Error::ReservedOpcode),
            (client_frame(true, 0xB, b"x"), Error::ReservedOpcode),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe]), Error::InvalidUtf8),
            (client_frame(true, OP_CLOSE, &[0x03]), Error::CloseTooShort),
            (client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff]), Error::InvalidCloseReason),
            (client_frame(true, OP_CLOSE, &[0x03, 0xed]), Error::InvalidCloseCode), // 1005 may not be sent
            (client_frame(true, OP_BINARY, &[0u8; 2000]), Error::TooBig),
            (compressed(client_frame(true, OP_TEXT, b"x")), Error::CompressedWithoutExtension),
            (compressed(client_frame(true, OP_PING, b"x")), Error::CompressedControl),
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"x");
                    f[0] |= 0x20;
                    f
                },
                Error::ReservedBits,
            ),
            (
                {
                    let mut f = client_frame(false, OP_TEXT, b"a");
                    f.extend(client_frame(true, OP_TEXT, b"b"));
                    f
                },
                Error::ExpectedContinuation,
            ),
            (
                {
                    let mut f = client_frame(false, OP_TEXT, b"a");
                    f.extend(client_frame(true, OP_CONT, &[0xff]));
                    f
                },
                Error::InvalidUtf8,
            ),
            (
                {
                    let mut f = client_frame(false, OP_BINARY, &[0; 600]);
                    f.extend(client_frame(true, OP_CONT, &[0; 401]));
                    f
                },
                Error::TooBig,
            ),
        ];
        for (wire, want) in cases {
            for step in [1, wire.len()] {
                let mut r = Reader::new(1000, false);
                assert_eq!(read_all(&mut r, &wire, step), Err(want), "{wire:?} by {step}");
                assert!(r.is_done());
                assert_eq!(r.held_bytes(), 0);
            }
        }
        let mut r = Reader::new(1000, true);
        assert_eq!(
            read_all(&mut r, &compressed(client_frame(true, OP_CONT, b"x")), 100),
            Err(Error::UnexpectedContinuation)
        );
        let mut wire = client_frame(false, OP_TEXT, b"a");
        wire.extend(compressed(client_frame(true, OP_CONT, b"b")));
        let mut r = Reader::new(1000, true);
        assert_eq!(read_all(&mut r, &wire, 100), Err(Error::CompressedContinuation));
    }

    #[test]
    fn a_message_exactly_at_the_limit_is_taken() {
        let mut wire = client_frame(false, OP_BINARY, &[1; 600]);
        wire.extend(client_frame(true, OP_CONT, &[2; 400]));
        let mut r = Reader::new(1000, false);
        let mut want = vec![1; 600];
        want.extend([2; 400]);
        assert_eq!(read_all(&mut r, &wire, 64), Ok(vec![binary(want)]));
    }

    #[test]
    fn too_big_is_refused_before_the_payload_arrives() {
        let mut r = Reader::new(1000, false);
        r.feed(&[0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(r.next_event(), Err(Error::TooBig));
        // a length with its top bit set is merely too big
        let mut r = Reader::new(usize::MAX >> 1, false);
        r.feed(&[0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(r.next_event(), Err(Error::TooBig));
    }

    #[test]
    fn invalid_text_is_refused_before_the_rest_of_its_frame_arrives() {
        let wire = client_frame(true, OP_TEXT, &[b"valid, then ".as_slice(), &[0xf8], &[b'x'; 1000]].concat());
        let mut r = Reader::new(1 << 20, false);
        r.feed(&wire[..21]);
        assert_eq!(r.next_event(), Err(Error::InvalidUtf8));
        // a character cut between two reads is not an error
        let wire = client_frame(true, OP_TEXT, "€€€".as_bytes());
        let mut r = Reader::new(1 << 20, false);
        r.feed(&wire[..8]);
        assert_eq!(r.next_event(), Ok(None));
        r.feed(&wire[8..]);
        assert_eq!(r.next_event(), Ok(Some(text("€€€"))));
        // nor is one cut between fragments; one left cut at the end is
        let mut wire = client_frame(false, OP_TEXT, &"€".as_bytes()[..1]);
        wire.extend(client_frame(true, OP_CONT, &"€".as_bytes()[1..]));
        assert_eq!(read_all(&mut Reader::new(100, false), &wire, 1), Ok(vec![text("€")]));
        let mut wire = client_frame(false, OP_TEXT, b"a");
        wire.extend(client_frame(true, OP_CONT, &"€".as_bytes()[..2]));
        assert_eq!(read_all(&mut Reader::new(100, false), &wire, 1), Err(Error::InvalidUtf8));
    }

    #[test]
    fn holds_no_more_than_the_message_and_a_header() {
        let payload = vec![9u8; 300_000];
        let mut wire = client_frame(false, OP_BINARY, &payload[..100_000]);
        wire.extend(client_frame(true, OP_CONT, &payload[100_000..]));
        let mut r = Reader::new(payload.len(), false);
        let mut most = 0;
        for piece in wire.chunks(16 * 1024) {
            r.feed(piece);
            while let Some(ev) = r.next_event().unwrap() {
                assert_eq!(ev, binary(payload.clone()));
            }
            most = most.max(r.held_bytes());
        }
        assert!(most <= payload.len() + KEEP, "held {most}");
        // an idle wait for a header's rest keeps a few bytes, not the read
        let mut r = Reader::new(1 << 20, false);
        let mut wire = client_frame(true, OP_BINARY, &[0; 10_000]);
        wire.extend_from_slice(&[0x82, 0x80 | 126]);
        r.feed(&wire);
        assert!(matches!(r.next_event(), Ok(Some(Event::Message(_)))));
        assert_eq!(r.next_event(), Ok(None));
        assert!(r.held_bytes() <= KEEP);
    }

    #[test]
    fn reads_nothing_after_the_close_frame_or_an_error() {
        let mut wire = client_frame(true, OP_CLOSE, b"\x03\xe8bye");
        wire.extend(client_frame(true, OP_TEXT, b"late"));
        let mut r = Reader::new(100, false);
        assert_eq!(
            read_all(&mut r, &wire, 1000),
            Ok(vec![Event::Close(Some(CloseFrame { code: 1000, reason: "bye".into() }))])
        );
        assert!(r.is_done());
        r.feed(&client_frame(true, OP_TEXT, b"later"));
        assert_eq!(r.next_event(), Ok(None));
        assert_eq!(r.held_bytes(), 0);
        let mut r = Reader::new(100, false);
        r.feed(&[0x81, 0x01, b'a']);
        assert_eq!(r.next_event(), Err(Error::Unmasked));
        r.feed(&client_frame(true, OP_TEXT, b"ok"));
        assert_eq!(r.next_event(), Ok(None));
        let mut r = Reader::new(100, false);
        r.feed(&client_frame(true, OP_CLOSE, b""));
        assert_eq!(r.next_event(), Ok(Some(Event::Close(None))));
    }

    #[test]
    fn discard_drops_everything() {
        let mut r = Reader::new(1 << 20, false);
        r.feed(&client_frame(true, OP_BINARY, &[1; 1000])[..500]);
        assert_eq!(r.next_event(), Ok(None));
        assert!(!r.is_idle());
        r.discard();
        r.feed(&[1; 100]);
        assert_eq!((r.next_event(), r.held_bytes(), r.is_idle()), (Ok(None), 0, true));
    }

    #[test]
    fn compressed_messages_whole_fragmented_and_bombs() {
        let msg = "hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let z = deflate::compress(msg.as_bytes());
        assert!(z.len() < msg.len() / 4);
        let wire = compressed(client_frame(true, OP_TEXT, &z));
        for step in [1, 5, wire.len()] {
            assert_eq!(read_all(&mut Reader::new(1 << 20, true), &wire, step), Ok(vec![text(&msg)]));
        }
        let (a, b) = z.split_at(z.len() / 2);
        let mut wire = compressed(client_frame(false, OP_TEXT, a));
        wire.extend(client_frame(true, OP_PING, b""));
        wire.extend(client_frame(true, OP_CONT, b));
        assert_eq!(
            read_all(&mut Reader::new(1 << 20, true), &wire, 3),
            Ok(vec![Event::Ping(Bytes::new()), text(&msg)])
        );
        // not UTF-8 once decompressed
        let wire = compressed(client_frame(true, OP_TEXT, &deflate::compress(&[0xff; 100])));
        assert_eq!(read_all(&mut Reader::new(1 << 20, true), &wire, 1000), Err(Error::InvalidUtf8));
        // a bomb: small on the wire, refused once decompression passes the limit
        let bomb = deflate::compress(&vec![0u8; 1 << 20]);
        let wire = compressed(client_frame(true, OP_BINARY, &bomb));
        assert_eq!(read_all(&mut Reader::new(4096, true), &wire, 1 << 20), Err(Error::TooBig));
        // uncompressed messages still pass when deflate is on
        let wire = client_frame(true, OP_BINARY, b"plain");
        assert_eq!(read_all(&mut Reader::new(100, true), &wire, 100), Ok(vec![binary(b"plain".to_vec())]));
        // garbage with RSV1 set
        let wire = compressed(client_frame(true, OP_BINARY, &[0xff; 10]));
        assert_eq!(read_all(&mut Reader::new(100, true), &wire, 100), Err(Error::InvalidDeflate));
    }

    #[test]
    fn many_small_fragments_take_linear_time_and_the_limit_bounds_the_buffer() {
        // 4 MiB in 65,536 fragments of 64 bytes, as Autobahn's 9.3.1 sends it
        let mut wire = Vec::with_capacity(5 << 20);
        let total = 4 << 20;
        for i in 0..total / 64 {
            let op = if i == 0 { OP_BINARY } else { OP_CONT };
            wire.extend(client_frame(i == total / 64 - 1, op, &[(i % 251) as u8; 64]));
        }
        let mut r = Reader::new(total, false);
        let mut got = None;
        for piece in wire.chunks(16 * 1024) {
            r.feed(piece);
            while let Some(ev) = r.next_event().unwrap() {
                got = Some(ev);
            }
            assert!(r.held_bytes() <= total + KEEP);
        }
        let Some(Event::Message(m)) = got else { panic!("no message") };
        assert_eq!(m.data.len(), total);
        assert_eq!(m.data[64 * 300], (300 % 251) as u8);
    }
}
