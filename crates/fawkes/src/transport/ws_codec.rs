//! The WebSocket codec (the `fawkes-ws` crate) in Fawkes' terms: messages
//! are [`Frame`]s, a broadcast is compressed once for every subscriber that
//! negotiated permessage-deflate, and what the server writes goes into the
//! connection's write buffer.

use bytes::Bytes;
use fawkes_protocol::{Frame, Opcode};
use fawkes_ws::deflate;
use fawkes_ws::frame::Opcode as WsOpcode;
use http::{header, HeaderMap};

pub(crate) use fawkes_ws::close;
pub(crate) use fawkes_ws::close::write_close;
pub(crate) use fawkes_ws::deflate::Negotiated;
pub(crate) use fawkes_ws::frame::write_frame;
pub(crate) use fawkes_ws::handshake::accept_key;

pub(crate) const OP_CLOSE: WsOpcode = WsOpcode::Close;
pub(crate) const OP_PONG: WsOpcode = WsOpcode::Pong;

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

/// Reassembles client messages from bytes as they arrive.
#[derive(Debug)]
pub(crate) struct WsReader(fawkes_ws::Reader);

impl WsReader {
    pub(crate) fn new(max_message: usize, deflate: bool) -> WsReader {
        WsReader(fawkes_ws::Reader::new(max_message, deflate))
    }

    /// Drops everything held and everything fed from now on.
    pub(crate) fn discard(&mut self) {
        self.0.discard();
    }

    /// Adds bytes read from the connection.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.0.feed(data);
    }

    /// True when no partial frame or message is held.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.0.is_idle()
    }

    /// The next event, if a whole frame has arrived.
    pub(crate) fn next_event(&mut self) -> Result<Option<WsEvent>, WsError> {
        use fawkes_ws::{Event, MessageKind};
        match self.0.next_event() {
            Ok(Some(Event::Message(m))) => {
                let opcode = match m.kind {
                    MessageKind::Text => Opcode::Text,
                    MessageKind::Binary => Opcode::Binary,
                };
                Ok(Some(WsEvent::Message(Frame { opcode, data: m.data })))
            }
            Ok(Some(Event::Ping(data))) => Ok(Some(WsEvent::Ping(data))),
            Ok(Some(Event::Pong(_))) => Ok(Some(WsEvent::Pong)),
            Ok(Some(Event::Close(c))) => Ok(Some(WsEvent::Close(c.map(|c| c.code)))),
            Ok(None) => Ok(None),
            Err(e) => Err(WsError { code: e.close_code(), reason: e.reason() }),
        }
    }
}

/// The answer to the request's `Sec-WebSocket-Extensions` (every line of
/// it, in order), when compression is on.
pub(crate) fn negotiate_deflate(headers: &HeaderMap) -> Option<Negotiated> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(deflate::negotiate)
}

fn opcode(frame: &Frame) -> WsOpcode {
    match frame.opcode {
        Opcode::Text => WsOpcode::Text,
        Opcode::Binary => WsOpcode::Binary,
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
    Bytes::from(deflate::compress(&frame.data))
}

/// Appends a data frame for `frame`, compressed when `deflate` is on.
pub(crate) fn write_message(out: &mut Vec<u8>, frame: &Frame, deflate: bool) {
    if deflate && worth_deflating(frame) {
        let z = deflate::compress(&frame.data);
        write_frame(out, opcode(frame), true, &z);
    } else {
        write_frame(out, opcode(frame), false, &frame.data);
    }
}

/// Appends a data frame whose data [`deflate_frame`] already compressed.
pub(crate) fn write_deflated(out: &mut Vec<u8>, frame: &Frame) {
    write_frame(out, opcode(frame), true, &frame.data);
}

#[cfg(test)]
mod tests {
    use fawkes_ws::frame::{apply_mask, Header};

    use super::*;

    fn client_frame(opcode: WsOpcode, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [5, 6, 7, 8];
        let mut wire = Vec::new();
        Header { fin: true, rsv1, opcode, mask: Some(mask), len: payload.len() as u64 }.write(&mut wire);
        let at = wire.len();
        wire.extend_from_slice(payload);
        apply_mask(&mut wire[at..], mask, 0);
        wire
    }

    #[test]
    fn events_and_errors_in_fawkes_terms() {
        let mut r = WsReader::new(1000, true);
        let mut wire = client_frame(WsOpcode::Text, false, b"hi");
        wire.extend(client_frame(WsOpcode::Binary, true, &deflate_frame(&Frame::binary(vec![3u8; 500]))));
        wire.extend(client_frame(WsOpcode::Ping, false, b"p"));
        wire.extend(client_frame(WsOpcode::Pong, false, b"q"));
        wire.extend(client_frame(WsOpcode::Close, false, &4000u16.to_be_bytes()));
        r.feed(&wire);
        assert_eq!(r.next_event(), Ok(Some(WsEvent::Message(Frame::text("hi")))));
        assert_eq!(r.next_event(), Ok(Some(WsEvent::Message(Frame::binary(vec![3u8; 500])))));
        assert_eq!(r.next_event(), Ok(Some(WsEvent::Ping(Bytes::from_static(b"p")))));
        assert_eq!(r.next_event(), Ok(Some(WsEvent::Pong)));
        assert_eq!(r.next_event(), Ok(Some(WsEvent::Close(Some(4000)))));
        assert!(r.is_idle());
        let mut r = WsReader::new(10, false);
        r.feed(&client_frame(WsOpcode::Binary, false, &[0; 11]));
        assert_eq!(r.next_event(), Err(WsError { code: close::TOO_BIG, reason: "message too big" }));
    }

    #[test]
    fn compresses_what_is_worth_it_and_reads_every_extensions_line() {
        let small = Frame::text("tiny");
        let big = Frame::text("hello ".repeat(100));
        let mut out = Vec::new();
        write_message(&mut out, &small, true);
        assert_eq!(out[0], 0x81);
        out.clear();
        write_message(&mut out, &big, true);
        assert_eq!(out[0], 0xC1);
        assert!(out.len() < 100);
        let mut headers = HeaderMap::new();
        headers.append(header::SEC_WEBSOCKET_EXTENSIONS, "x-webkit-deflate-frame".parse().unwrap());
        assert_eq!(negotiate_deflate(&headers), None);
        headers.append(header::SEC_WEBSOCKET_EXTENSIONS, "permessage-deflate".parse().unwrap());
        assert!(negotiate_deflate(&headers).is_some_and(|n| n.server_compresses()));
    }
}
