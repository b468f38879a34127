//! The reader against tungstenite's (a `WebSocket` in the server's role over
//! an in-memory stream), on hand-made streams, on streams of random frames
//! and on random bytes, each cut in random pieces: both must deliver the
//! same messages and control frames, and agree on whether the stream is an
//! error.
//!
//! Deliberate differences, allowed here and nowhere else:
//!
//! * A frame that is still incomplete when the stream ends: the reader
//!   refuses it as soon as the bytes it has prove it invalid (its header,
//!   or text that cannot be UTF-8 whatever follows), where tungstenite
//!   waits for the whole frame and so sees only the end of the stream. The
//!   stream cut at its last whole frame must then read without an error.
//! * A close code that may not be sent: tungstenite delivers the close
//!   frame (and answers it with 1002), the reader reports the error (whose
//!   close code is 1002).
//! * Close code 1014 (Bad Gateway, registered with IANA after RFC 6455):
//!   the reader accepts it, tungstenite answers it as a protocol error.
//!
//! tungstenite has no permessage-deflate: compression is off here, and
//! compressed frames are errors for both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};

use fawkes_ws::{Event, MessageKind, Reader};
use proptest::prelude::*;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// What a reader delivered, in common terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Everything a reader delivered, and whether it ended on an error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    got: Vec<Got>,
    error: bool,
}

/// Cuts `data` in pieces of the sizes in `sizes`, in turn (whole when
/// empty).
fn pieces<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let n = if sizes.is_empty() { data.len() } else { sizes[i % sizes.len()].max(1) };
        i += 1;
        let piece = &data[at..(at + n).min(data.len())];
        at += piece.len();
        Some(piece)
    })
}

fn ours(data: &[u8], limit: usize, sizes: &[usize]) -> Outcome {
    let mut r = Reader::new(limit, false);
    let mut got = Vec::new();
    for piece in pieces(data, sizes) {
        r.feed(piece);
        loop {
            match r.next_event() {
                Ok(Some(ev)) => got.push(match ev {
                    Event::Message(m) if m.kind == MessageKind::Text => Got::Text(m.data.to_vec()),
                    Event::Message(m) => Got::Binary(m.data.to_vec()),
                    Event::Ping(d) => Got::Ping(d.to_vec()),
                    Event::Pong(d) => Got::Pong(d.to_vec()),
                    Event::Close(c) => {
                        return Outcome { got: push(got, Got::Close(c.map(|c| (c.code, c.reason)))), error: false }
                    }
                }),
                Ok(None) => break,
                Err(_) => return Outcome { got, error: true },
            }
        }
    }
    Outcome { got, error: false }
}

fn push(mut got: Vec<Got>, g: Got) -> Vec<Got> {
    got.push(g);
    got
}

/// An in-memory connection: reads the stream in the given pieces, then the
/// end; what is written (pongs, the close reply) is dropped.
struct Wire<'a> {
    pieces: Box<dyn Iterator<Item = &'a [u8]> + 'a>,
    current: &'a [u8],
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            self.current = self.pieces.next().unwrap_or(&[]);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn theirs(data: &[u8], limit: usize, sizes: &[usize]) -> Outcome {
    // The reader's limit is on messages; control frames have their own
    // (125 bytes). The frame limit keeps tungstenite from reserving what a
    // header claims.
    let config = WebSocketConfig::default().max_message_size(Some(limit)).max_frame_size(Some(limit.max(125)));
    let wire = Wire { pieces: Box::new(pieces(data, sizes)), current: &[] };
    let mut ws = WebSocket::from_raw_socket(wire, Role::Server, Some(config));
    let mut got = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => got.push(Got::Text(t.as_bytes().to_vec())),
            Ok(Message::Binary(b)) => got.push(Got::Binary(b.to_vec())),
            Ok(Message::Ping(d)) => got.push(Got::Ping(d.to_vec())),
            Ok(Message::Pong(d)) => got.push(Got::Pong(d.to_vec())),
            Ok(Message::Close(c)) => {
                got.push(Got::Close(c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned()))));
                return Outcome { got, error: false };
            }
            Ok(Message::Frame(_)) => unreachable!("raw frames are not read"),
            // the end of the stream, outside a close handshake
            Err(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
                return Outcome { got, error: false }
            }
            Err(_) => return Outcome { got, error: true },
        }
    }
}

/// Where the last whole frame of `data` ends (frames walked by their
/// lengths alone).
fn whole_frames(data: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let b = &data[at..];
        if b.len() < 2 {
            return at;
        }
        let (ext, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (2, u64::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => (8, u64::from_be_bytes(b[2..10].try_into().unwrap())),
            126 | 127 => return at,
            n => (0, u64::from(n)),
        };
        let header = 2 + ext + if b[1] & 0x80 != 0 { 4 } else { 0 };
        match (header as u64).checked_add(len) {
            Some(end) if end <= b.len() as u64 => at += end as usize,
            _ => return at,
        }
    }
}

/// The comparison, with the documented differences allowed.
fn agree(data: &[u8], limit: usize, sizes: &[usize]) -> Result<(), String> {
    let o = ours(data, limit, sizes);
    let mut t = theirs(data, limit, sizes);
    // an invalid close code: their close answered with 1002 is our error
    if o.error && t.got.len() == o.got.len() + 1 {
        if let Some(Got::Close(Some((1002, reason)))) = t.got.last() {
            if reason == "Protocol violation" {
                t.got.pop();
                t.error = true;
            }
        }
    }
    // 1014: accepted here
    if let (Some(Got::Close(Some((1014, _)))), Some(Got::Close(Some((1002, reason))))) = (o.got.last(), t.got.last()) {
        if reason == "Protocol violation" && o.got.len() == t.got.len() {
            t.got.pop();
            t.got.push(o.got[o.got.len() - 1].clone());
        }
    }
    if o.got != t.got {
        return Err(format!("delivered differently: ours {:?}, tungstenite's {:?}", o.got, t.got));
    }
    match (o.error, t.error) {
        (false, true) => Err("tungstenite refuses the stream, ours does not".into()),
        (true, false) => {
            let end = whole_frames(data);
            if end == data.len() {
                return Err("ours refuses a stream of whole frames that tungstenite takes".into());
            }
            let cut = ours(&data[..end], limit, sizes);
            if cut != (Outcome { got: o.got.clone(), error: false }) {
                return Err(format!("cut at its whole frames, the stream still reads differently: {cut:?}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A client frame (masked unless `mask` is `None`), its length in the
/// shortest form.
fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i & 3]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const K: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

#[test]
fn hand_made_streams() {
    let text = |fin: bool, p: &[u8]| frame(if fin { 0x81 } else { 0x01 }, K, p);
    let cont = |fin: bool, p: &[u8]| frame(if fin { 0x80 } else { 0x00 }, K, p);
    let mut cases: Vec<Vec<u8>> = vec![
        text(true, b"Hello"),
        frame(0x82, K, &[0u8; 300]),
        frame(0x82, K, &[1u8; 70_000]),
        [text(false, b"Hel"), frame(0x89, K, b"ping"), cont(false, b""), cont(true, b"lo")].concat(),
        [text(false, "κόσ".as_bytes()), cont(true, "με".as_bytes())].concat(),
        [text(false, &"κόσμε".as_bytes()[..3]), cont(true, &"κόσμε".as_bytes()[3..])].concat(),
        [text(false, b"ok"), cont(true, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")].concat(),
        text(true, b"\xf4\x90\x80\x80"),
        text(true, b"\xce"),
        cont(true, b"x"),
        [text(false, b"a"), text(true, b"b")].concat(),
        frame(0x89, K, &[0; 125]),
        frame(0x89, K, &[0; 126]),
        frame(0x09, K, b"fragmented ping"),
        frame(0x83, K, b"reserved"),
        frame(0x8b, K, b"reserved control"),
        frame(0xc1, K, b"rsv1"),
        frame(0xa1, K, b"rsv2"),
        frame(0x91, K, b"rsv3"),
        frame(0x81, None, b"unmasked"),
        frame(0x8a, K, b"unsolicited pong"),
        frame(0x88, K, b""),
        frame(0x88, K, &[0x03]),
        frame(0x88, K, &close_payload(1000, b"")),
        frame(0x88, K, &close_payload(1000, "bye ✓".as_bytes())),
        frame(0x88, K, &close_payload(1000, b"\xff")),
        [frame(0x88, K, &close_payload(1001, b"")), text(true, b"after the close")].concat(),
        frame(0x82, K, &[0; 1001]),
        [frame(0x02, K, &[0; 600]), frame(0x80, K, &[0; 401])].concat(),
        [frame(0x02, K, &[0; 600]), frame(0x80, K, &[0; 400])].concat(),
        // a length in a longer form than needed, on a data frame and a ping
        [vec![0x82, 0xfe, 0, 3], K.unwrap().to_vec(), vec![1 ^ 0x37, 2 ^ 0xfa, 3 ^ 0x21]].concat(),
        [vec![0x89, 0xfe, 0, 1], K.unwrap().to_vec(), vec![b'p' ^ 0x37]].concat(),
        // a length with its top bit set
        [vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1], K.unwrap().to_vec()].concat(),
        // cut streams
        text(true, b"Hello")[..5].to_vec(),
        text(true, b"bad \xff then more")[..8].to_vec(),
        frame(0x89, K, &[0; 126])[..6].to_vec(),
        frame(0x81, None, b"unmasked, cut")[..5].to_vec(),
    ];
    for code in [
        0u16, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1013, 1014, 1015, 1016, 2999, 3000,
        4999, 5000, 65535,
    ] {
        cases.push(frame(0x88, K, &close_payload(code, b"")));
    }
    for (i, data) in cases.iter().enumerate() {
        for limit in [0, 100, 1000, 1 << 20] {
            for sizes in [&[][..], &[1], &[3, 7], &[1000]] {
                if let Err(e) = agree(data, limit, sizes) {
                    panic!("case {i} (limit {limit}, pieces {sizes:?}): {e}\n{data:?}");
                }
            }
        }
    }
}

/// One frame of a random stream: mostly valid, sometimes not.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        6 => Just(0x1u8), 4 => Just(0x2), 5 => Just(0x0), 2 => Just(0x8), 2 => Just(0x9), 1 => Just(0xA),
        1 => prop_oneof![3u8..=7, 0xBu8..=0xF],
    ];
    let rsv = prop_oneof![12 => Just(0u8), 1 => Just(0x40), 1 => Just(0x20), 1 => Just(0x10)];
    let payload = prop_oneof![
        4 => ".{0,12}".prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => (1u16..=1100).prop_map(|code| code + 999).prop_flat_map(|code| ".{0,4}".prop_map(move |r| close_payload(code, r.as_bytes()))),
        1 => proptest::collection::vec(any::<u8>(), 100..300),
    ];
    (any::<bool>(), rsv, opcode, prop_oneof![15 => Just(true), 1 => Just(false)], payload, any::<[u8; 4]>()).prop_map(
        |(fin, rsv, opcode, masked, payload, key)| {
            frame(if fin { 0x80 } else { 0 } | rsv | opcode, masked.then_some(key), &payload)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_frames(
        frames in proptest::collection::vec(any_frame(), 0..8),
        cut in any::<prop::sample::Index>(),
        whole in any::<bool>(),
        limit in prop_oneof![Just(0usize), Just(8), Just(64), Just(1000)],
        sizes in proptest::collection::vec(1usize..40, 0..4),
    ) {
        let mut data = frames.concat();
        if !whole && !data.is_empty() {
            data.truncate(cut.index(data.len()));
        }
        if let Err(e) = agree(&data, limit, &sizes) {
            return Err(TestCaseError::fail(format!("{e}\n{data:?}")));
        }
    }

    #[test]
    fn random_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        limit in prop_oneof![Just(0usize), Just(16), Just(1 << 20)],
        sizes in proptest::collection::vec(1usize..20, 0..4),
    ) {
        if let Err(e) = agree(&data, limit, &sizes) {
            return Err(TestCaseError::fail(format!("{e}\n{data:?}")));
        }
    }
}
