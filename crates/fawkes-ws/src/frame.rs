//! Frame headers, masking, and the server's frames (RFC 6455 section 5).
//!
//! A header is two bytes (FIN, RSV1-3, opcode; MASK and a 7-bit length),
//! then 2 or 8 more bytes of length when the 7-bit length is 126 or 127,
//! then the 4-byte masking key when MASK is set. [`Header::parse`] checks
//! what any frame must satisfy whoever sent it (no RSV2/RSV3, no reserved
//! opcode, control frames final and at most 125 bytes); what depends on
//! the sender and on the connection (masking, RSV1, fragmentation, size
//! limits) is the [`Reader`](crate::Reader)'s business.

use crate::Error;

/// A frame's opcode (the reserved ones are refused by [`Header::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: the first (or only) frame of a text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: the close handshake.
    Close,
    /// 0x9: a ping, answered by a pong with the same payload.
    Ping,
    /// 0xA: a pong.
    Pong,
}

impl Opcode {
    /// The opcode of these four bits, `None` for a reserved one.
    pub fn from_u8(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// Its four bits on the wire.
    #[inline]
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: final, at most 125 bytes, allowed between a
    /// message's fragments.
    #[inline]
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// The longest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// RSV1: under permessage-deflate, the message is compressed (set on
    /// its first frame only).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key (every frame from a client has one, none from a
    /// server).
    pub mask: Option<[u8; 4]>,
    /// The payload's length.
    pub len: u64,
}

impl Header {
    /// The longest header: 2 bytes, 8 of length, 4 of masking key.
    pub const MAX_SIZE: usize = 14;

    /// The header at the start of `buf` and its size, or `None` while it is
    /// incomplete. Refuses RSV2/RSV3, reserved opcodes, and control frames
    /// that are fragmented or longer than 125 bytes. A length may use more
    /// bytes than it needs (RFC 6455 asks senders for the shortest form;
    /// receivers commonly accept the others, as this one does).
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        if b0 & 0x30 != 0 {
            return Err(Error::ReservedBits);
        }
        let Some(opcode) = Opcode::from_u8(b0 & 0x0f) else {
            return Err(Error::ReservedOpcode);
        };
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() && !fin {
            return Err(Error::FragmentedControl);
        }
        let (len, rest) = match b1 & 0x7f {
            126 => match rest {
                [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest),
                _ => return Ok(None),
            },
            127 => match rest.split_first_chunk::<8>() {
                Some((n, rest)) => (u64::from_be_bytes(*n), rest),
                None => return Ok(None),
            },
            n => (u64::from(n), rest),
        };
        if opcode.is_control() && len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Error::ControlTooLong);
        }
        let mask = if b1 & 0x80 != 0 {
            match rest.first_chunk::<4>() {
                Some(m) => Some(*m),
                None => return Ok(None),
            }
        } else {
            None
        };
        let size = buf.len() - rest.len() + if mask.is_some() { 4 } else { 0 };
        Ok(Some((Header { fin, rsv1: b0 & 0x40 != 0, opcode, mask, len }, size)))
    }

    /// The header's size on the wire as [`Header::write`] writes it.
    pub fn size(&self) -> usize {
        let ext = match self.len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header (the length in its shortest form).
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>) {
        let b0 = if self.fin { 0x80 } else { 0 } | if self.rsv1 { 0x40 } else { 0 } | self.opcode.as_u8();
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        out.push(b0);
        match self.len {
            0..=125 => out.push(masked | self.len as u8),
            126..=0xffff => {
                out.push(masked | 126);
                out.extend_from_slice(&(self.len as u16).to_be_bytes());
            }
            _ => {
                out.push(masked | 127);
                out.extend_from_slice(&self.len.to_be_bytes());
            }
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
    }
}

/// Masks or unmasks `data` (the same operation), which starts `offset`
/// bytes into its frame's payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 8];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) & 3];
    }
    let wide = u64::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// Appends a server frame: final, unmasked, RSV1 as given (set on a
/// message compressed by permessage-deflate).
#[inline]
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, rsv1: bool, payload: &[u8]) {
    out.reserve(Header::MAX_SIZE + payload.len());
    Header { fin: true, rsv1, opcode, mask: None, len: payload.len() as u64 }.write(out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_every_length_form_and_waits_for_the_whole_header() {
        for (len, size) in [(0u64, 6), (125, 6), (126, 8), (65535, 8), (65536, 14), (u64::MAX, 14)] {
            let h = Header { fin: false, rsv1: true, opcode: Opcode::Binary, mask: Some([9, 8, 7, 6]), len };
            let mut wire = Vec::new();
            h.write(&mut wire);
            assert_eq!(wire.len(), size);
            for cut in 0..size {
                assert_eq!(Header::parse(&wire[..cut]), Ok(None), "{len} cut at {cut}");
            }
            wire.push(0xAA);
            assert_eq!(Header::parse(&wire), Ok(Some((h, size))));
        }
    }

    #[test]
    fn accepts_a_length_in_a_longer_form_than_needed() {
        let wire = [0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4];
        let (h, size) = Header::parse(&wire).unwrap().unwrap();
        assert_eq!((h.len, size), (5, 8));
    }

    #[test]
    fn refuses_what_no_frame_may_be() {
        assert_eq!(Header::parse(&[0xA1, 0x80]), Err(Error::ReservedBits));
        assert_eq!(Header::parse(&[0x91, 0x80]), Err(Error::ReservedBits));
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(Header::parse(&[0x80 | op, 0x80]), Err(Error::ReservedOpcode), "{op}");
        }
        assert_eq!(Header::parse(&[0x09, 0x80]), Err(Error::FragmentedControl));
        assert_eq!(Header::parse(&[0x88, 0x80 | 126, 0, 126]), Err(Error::ControlTooLong));
        assert_eq!(Header::parse(&[0x8A, 0x80 | 127, 0, 0, 0, 0, 1, 0, 0, 0]), Err(Error::ControlTooLong));
        // the length, not its form, is what counts
        assert!(matches!(Header::parse(&[0x89, 0x80 | 126, 0, 125, 1, 2, 3, 4]), Ok(Some(_))));
        // RSV1 on a control frame is the reader's to refuse: it is valid on
        // data frames under permessage-deflate
        assert!(matches!(Header::parse(&[0xC9, 0x80, 1, 2, 3, 4]), Ok(Some(_))));
    }

    #[test]
    fn masking_at_any_offset_matches_the_byte_by_byte_definition() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let want: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
        for split in [0, 1, 2, 3, 5, 8, 13, 500, 999, 1000] {
            let mut got = data.clone();
            let (a, b) = got.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn server_frames_are_final_and_unmasked() {
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Binary, true, &[7; 300]);
        assert_eq!(&out[..4], &[0xC2, 126, 1, 44]);
        assert_eq!(out.len(), 304);
        let (h, size) = Header::parse(&out).unwrap().unwrap();
        assert_eq!((h.fin, h.rsv1, h.opcode, h.mask, h.len, size), (true, true, Opcode::Binary, None, 300, 4));
    }
}
