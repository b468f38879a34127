//! permessage-deflate (RFC 7692), without context takeover in either
//! direction: each message is compressed and decompressed on its own, so a
//! connection keeps no compression state between messages, and the same
//! compressed bytes are valid on every connection (a broadcast is compressed
//! once for all its subscribers).
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 lets it add both to any offer).
//! It compresses with a 32 KiB window: a client that limits the server's
//! window (`server_max_window_bits` below 15) is answered with that limit,
//! and then gets its messages uncompressed, which RFC 7692 allows for any
//! message. It decompresses with a 32 KiB window, which reads whatever
//! window the client uses, so `client_max_window_bits` needs no answer.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Error;

/// What the server agreed to, from the client's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The `server_max_window_bits` the client asked for, if it did.
    server_max_window_bits: Option<u8>,
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` response header's value.
    pub fn response(&self) -> String {
        let mut r = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            r.push_str(&format!("; server_max_window_bits={bits}"));
        }
        r
    }

    /// Whether the server compresses what it sends (it does unless the
    /// client limited the server's window below 32 KiB). Compressed client
    /// messages are read either way.
    pub fn server_compresses(&self) -> bool {
        self.server_max_window_bits.is_none_or(|bits| bits == 15)
    }
}

/// A window size's parameter value: 8 to 15, a token or a quoted string,
/// without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let v = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    match v.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// The offer's agreement, if it is acceptable: known parameters, each at
/// most once, with valid values.
fn accept(offer: &str) -> Option<Negotiated> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_max_window_bits = None;
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p, None),
        };
        let i = match name {
            "server_no_context_takeover" | "client_no_context_takeover" if value.is_some() => return None,
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => {
                server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                if let Some(v) = value {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(Negotiated { server_max_window_bits })
}

/// The answer to a `Sec-WebSocket-Extensions` request header (several
/// header lines joined with commas): the first acceptable
/// permessage-deflate offer, if any. Offers of other extensions, and
/// permessage-deflate offers with unknown, repeated or invalid parameters,
/// are declined.
pub fn negotiate(offers: &str) -> Option<Negotiated> {
    offers.split(',').find_map(accept)
}

/// The four bytes a sync flush ends with, which RFC 7692 removes from the
/// end of each compressed message and the receiver puts back.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A final block of fixed Huffman codes holding nothing.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

thread_local! {
    /// One compressor and one decompressor per thread, reset before each
    /// message (no context takeover allows it): their state is large, and
    /// making it per message costs more than the compression.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A message's payload compressed on its own (with the tail removed), for a
/// frame with RSV1 set.
pub fn compress(data: &[u8]) -> Vec<u8> {
    DEFLATE.with_borrow_mut(|c| {
        c.reset();
        compress_with(c, data)
    })
}

fn compress_with(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    // miniz_oxide returns from a sync flush as soon as it has handed over
    // output it was holding, even with room left and the flush not done
    // (its next call does it). So: all the input first, without a flush,
    // until nothing is left to hand over; then the flush on its own, and
    // again until nothing is left.
    let flushed = pump(c, data, &mut out, FlushCompress::None)
        && room(&mut out)
        && c.compress_vec(&[], &mut out, FlushCompress::Sync).is_ok()
        && pump(c, &[], &mut out, FlushCompress::None);
    if !flushed || !out.ends_with(&TAIL) {
        // (not seen: a valid stream all the same)
        return stored(data);
    }
    out.truncate(out.len() - 4);
    out
}

/// Makes sure `out` has room for more output.
fn room(out: &mut Vec<u8>) -> bool {
    if out.capacity() - out.len() < 64 {
        out.reserve(out.capacity().max(64));
    }
    true
}

/// Calls the compressor until it has taken all of `input` and has nothing
/// more to hand over. False if it fails or stops making progress.
fn pump(c: &mut Compress, input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> bool {
    let start = c.total_in();
    let mut stuck = 0;
    loop {
        room(out);
        let taken = (c.total_in() - start) as usize;
        let before = out.len();
        if c.compress_vec(&input[taken.min(input.len())..], out, flush).is_err() {
            return false;
        }
        let all_taken = (c.total_in() - start) as usize >= input.len();
        if out.len() == before {
            if all_taken {
                return true;
            }
            stuck += 1;
            if stuck > 2 {
                return false;
            }
        } else {
            stuck = 0;
        }
    }
}

/// `data` in stored (uncompressed) blocks, as a compressed message: valid
/// for any decompressor, whatever its window.
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 0xffff + 1) + 1);
    for chunk in data.chunks(0xffff) {
        // BFINAL 0, BTYPE 00, then the length and its complement
        let len = chunk.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    // the empty stored block of a sync flush, its last four bytes removed
    out.push(0);
    out
}

/// A compressed message's payload decompressed, refused once it exceeds
/// `max` bytes: decompression stops there, so a small message cannot make
/// the server inflate gigabytes. The result's capacity is at most `max`
/// plus one.
pub fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>, Error> {
    INFLATE.with_borrow_mut(|d| {
        d.reset(false);
        decompress_with(d, data, max)
    })
}

fn decompress_with(d: &mut Decompress, data: &[u8], max: usize) -> Result<Vec<u8>, Error> {
    // One byte more than allowed proves the message too big.
    let limit = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(3).max(64).min(limit));
    for (input, flush) in [(data, FlushDecompress::None), (&TAIL[..], FlushDecompress::Sync)] {
        let start = d.total_in();
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(Error::TooBig);
                }
                let want = out.capacity().saturating_mul(2).min(limit);
                out.reserve_exact(want - out.len());
            }
            let consumed = ((d.total_in() - start) as usize).min(input.len());
            let out_before = out.len();
            let status = d.decompress_vec(&input[consumed..], &mut out, flush).map_err(|_| Error::InvalidDeflate)?;
            if out.len() > max {
                return Err(Error::TooBig);
            }
            if status == Status::StreamEnd {
                // a final block: whatever follows it is ignored
                return Ok(out);
            }
            let done = (d.total_in() - start) as usize >= input.len();
            if done && out.len() < out.capacity() {
                break;
            }
            let progress = (d.total_in() - start) as usize > consumed || out.len() > out_before;
            if !progress && out.len() < out.capacity() {
                return Err(Error::InvalidDeflate);
            }
        }
    }
    // The message must end on a block boundary: there, an empty final
    // block ends the stream. Inside a block, its bytes would be read as
    // the block's data (a message cut short).
    let (in_before, out_before) = (d.total_in(), d.total_out());
    let mut probe = [0u8; 8];
    match d.decompress(&EMPTY_FINAL_BLOCK, &mut probe, FlushDecompress::Finish) {
        Ok(Status::StreamEnd) if d.total_out() == out_before && d.total_in() - in_before == 2 => Ok(out),
        _ => Err(Error::InvalidDeflate),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn negotiates_only_what_it_can_honour() {
        let plain = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let n = |offer: &str| negotiate(offer).map(|n| n.response());
        assert_eq!(n("permessage-deflate; client_max_window_bits").as_deref(), Some(plain));
        assert_eq!(n("x-webkit-deflate-frame, permessage-deflate").as_deref(), Some(plain));
        assert_eq!(n("permessage-deflate; client_max_window_bits=\"10\"").as_deref(), Some(plain));
        let limited = negotiate("permessage-deflate; server_max_window_bits=9").unwrap();
        assert_eq!(limited.response(), format!("{plain}; server_max_window_bits=9"));
        assert!(!limited.server_compresses());
        let full = negotiate("permessage-deflate; server_max_window_bits=15").unwrap();
        assert!(full.server_compresses());
        assert!(negotiate("permessage-deflate").unwrap().server_compresses());
        for declined in [
            "permessage-deflate; unknown=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=20",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(negotiate(declined), None, "{declined}");
        }
        // the first acceptable offer wins
        let second =
            negotiate("permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10");
        assert_eq!(second.map(|n| n.server_compresses()), Some(false));
    }

    #[test]
    fn round_trips_and_shrinks_what_repeats() {
        for data in [Vec::new(), b"a".to_vec(), b"hello hello hello hello hello".repeat(100), (0..=255).collect()] {
            let z = compress(&data);
            assert!(!z.ends_with(&TAIL));
            assert_eq!(decompress(&z, data.len()).unwrap(), data);
        }
        let text = b"hello hello hello hello hello".repeat(100);
        assert!(compress(&text).len() < text.len() / 10);
    }

    /// Incompressible data comes out larger than it went in: all of it must
    /// be flushed (Autobahn's 12.5 echoes a PDF in 64 and 128 KiB pieces).
    #[test]
    fn incompressible_data_round_trips_whole() {
        let mut x = 0x2545_F491u32;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            })
            .collect();
        for len in [1000, 16_384, 32_768, 65_535, 65_536, 100_000, 131_072, 300_000] {
            let z = compress(&noise[..len]);
            assert_eq!(decompress(&z, len).map(|d| d == noise[..len]), Ok(true), "{len} bytes");
        }
    }

    /// Data that made miniz_oxide return from its sync flush with the last
    /// block not yet written (and room left): the message came out cut.
    #[test]
    fn a_flush_that_returns_early_is_completed() {
        let mut x = 0x2545_F491u32;
        let data: Vec<u8> = (0..65_536usize)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x & 3) as u8).wrapping_add(((i % 512) / 2) as u8)
            })
            .collect();
        let z = compress(&data);
        // an independent decompressor, as a client's
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(2 * data.len());
        d.decompress_vec(&[&z[..], &TAIL].concat(), &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out == data);
    }

    #[test]
    fn stored_blocks_are_a_valid_message() {
        for len in [0, 1, 0xffff, 0x10000, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            assert_eq!(decompress(&stored(&data), len).map(|d| d == data), Ok(true), "{len}");
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let bomb = compress(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < (8 << 20) / 100, "{}", bomb.len());
        for max in [0, 1, 100, 4096, (8 << 20) - 1] {
            assert_eq!(decompress(&bomb, max), Err(Error::TooBig), "{max}");
        }
        assert_eq!(decompress(&bomb, 8 << 20).map(|v| v.len()), Ok(8 << 20));
    }

    #[test]
    fn the_output_never_holds_more_than_the_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let z = compress(&data);
        let out = decompress(&z, data.len()).unwrap();
        assert!(out.capacity() <= data.len() + 1);
    }

    #[test]
    fn refuses_what_is_not_deflate() {
        assert_eq!(decompress(&[0xff, 0xff, 0xff], 1000), Err(Error::InvalidDeflate));
        // a stored block that claims more bytes than it has
        assert_eq!(decompress(&[0x00, 0x10, 0x00, 0xef, 0xff, 1, 2], 1000), Err(Error::InvalidDeflate));
        // a message cut inside a block
        let z = compress(&b"hello hello hello, a message long enough to cut".repeat(20));
        for cut in [1, z.len() / 2, z.len() - 1] {
            assert_eq!(decompress(&z[..cut], 1 << 20), Err(Error::InvalidDeflate), "cut at {cut}");
        }
        // a message that ends with a final block of its own is complete
        let mut fin = z.clone();
        fin.extend_from_slice(&TAIL);
        fin.extend_from_slice(&EMPTY_FINAL_BLOCK);
        assert_eq!(decompress(&fin, 1 << 20).map(|v| v.len()), Ok(47 * 20));
    }
}
