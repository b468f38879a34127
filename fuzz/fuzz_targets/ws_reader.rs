//! The WebSocket reader on any bytes, fed in any pieces, with
//! permessage-deflate on or off and a small or large size limit.
//!
//! Input: byte 0 holds the flags (bit 0: deflate; bit 1: a large limit),
//! byte 1 the limit (small: 4 times it, 0 to 1020 bytes; large: 2 to the
//! power 10 + it mod 15, 1 KiB to 16 MiB), byte 2 the number of piece
//! sizes that follow (mod 16), each one byte (the size less one, used in
//! turn); the rest is the stream.
//!
//! Checks: no panic; every message within the limit, text valid UTF-8,
//! control payloads at most 125 bytes, close codes valid on the wire;
//! after each read drained, the reader holds at most the limit and a few
//! hundred bytes; after an error or a close frame it holds nothing and
//! returns nothing more; and the events and the error do not depend on
//! how the stream was cut. The stream, compressed as the server compresses,
//! decompresses to itself.
#![no_main]

use fawkes_ws::{close, Error, Event, MessageKind, Reader};
use libfuzzer_sys::fuzz_target;

/// What a reader hands back besides its buffers: a message or control
/// frame's details, and the error it ended on.
fn read(data: &[u8], deflate: bool, limit: usize, sizes: &[usize]) -> (Vec<Event>, Option<Error>) {
    let mut r = Reader::new(limit, deflate);
    let mut events = Vec::new();
    let mut ended: Option<Error> = None;
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(data.len()).min(data.len() - at);
        i += 1;
        r.feed(&data[at..at + n]);
        at += n;
        loop {
            match r.next_event() {
                Ok(Some(ev)) => {
                    assert!(ended.is_none(), "an event after the end");
                    check(&ev, limit);
                    let closed = matches!(ev, Event::Close(_));
                    events.push(ev);
                    if closed {
                        assert!(r.is_done());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(ended.is_none(), "a second error");
                    assert!(matches!(e.close_code(), close::PROTOCOL | close::INVALID_DATA | close::TOO_BIG));
                    assert!(e.reason().len() <= 123);
                    ended = Some(e);
                }
            }
        }
        if r.is_done() {
            assert_eq!(r.held_bytes(), 0, "a finished reader holds nothing");
            assert!(r.is_idle());
        } else {
            assert!(r.held_bytes() <= limit + 256, "held {} with a limit of {limit}", r.held_bytes());
        }
    }
    (events, ended)
}

fn check(ev: &Event, limit: usize) {
    match ev {
        Event::Message(m) => {
            assert!(m.data.len() <= limit, "a message of {} with a limit of {limit}", m.data.len());
            if m.kind == MessageKind::Text {
                assert!(std::str::from_utf8(&m.data).is_ok(), "text that is not UTF-8");
            }
        }
        Event::Ping(d) | Event::Pong(d) => assert!(d.len() <= 125),
        Event::Close(Some(c)) => {
            assert!(close::is_valid_on_wire(c.code));
            assert!(c.reason.len() <= 123);
        }
        Event::Close(None) => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, limit, count, rest @ ..] = input else {
        return;
    };
    let deflate = flags & 1 != 0;
    let limit = if flags & 2 == 0 { usize::from(*limit) * 4 } else { 1 << (10 + limit % 15) };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, data) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|s| usize::from(*s) + 1).collect();
    let cut = read(data, deflate, limit, &sizes);
    let whole = read(data, deflate, limit, &[]);
    assert_eq!(cut, whole, "the pieces changed what was read");
    // and what the server compresses reads back whole
    let z = fawkes_ws::deflate::compress(data);
    assert_eq!(fawkes_ws::deflate::decompress(&z, data.len()).as_deref(), Ok(data));
});
