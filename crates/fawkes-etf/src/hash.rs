//! `erlang:phash2/2`, for binaries: how Phoenix.Tracker picks the shard of
//! a topic (`:erlang.phash2(topic, pool_size)`).

/// Bob Jenkins' lookup2 mix, as the Erlang runtime's `MIX`.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 13);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 8);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 13);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 12);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 16);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 5);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 3);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 10);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 15);
}

/// The golden ratio, the hash's arbitrary start.
const HCONST: u32 = 0x9e37_79b9;
/// `HCONST * 13`, the constant binaries are hashed with.
const HCONST_13: u32 = 0x08d1_2e65;

fn block_hash(k: &[u8], init: u32) -> u32 {
    let (mut a, mut b, mut c) = (HCONST, HCONST, init);
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut chunks = k.chunks_exact(12);
    for w in &mut chunks {
        a = a.wrapping_add(word(&w[0..4]));
        b = b.wrapping_add(word(&w[4..8]));
        c = c.wrapping_add(word(&w[8..12]));
        mix(&mut a, &mut b, &mut c);
    }
    // the length goes into the low byte of c, the last bytes above it
    c = c.wrapping_add(k.len() as u32);
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        let v = u32::from(byte);
        match i {
            0..=3 => a = a.wrapping_add(v << (8 * i)),
            4..=7 => b = b.wrapping_add(v << (8 * (i - 4))),
            _ => c = c.wrapping_add(v << (8 * (i - 7))),
        }
    }
    mix(&mut a, &mut b, &mut c);
    c
}

/// `erlang:phash2(bytes, range)` for a binary: the same number any
/// Erlang/OTP node computes, in `0..range`. A `range` of 0 stands for
/// 2^32 (the whole hash).
pub fn phash2_binary(bytes: &[u8], range: u32) -> u32 {
    let hash = if bytes.is_empty() { HCONST_13 } else { block_hash(bytes, HCONST_13) };
    if range == 0 {
        hash
    } else {
        hash % range
    }
}

#[cfg(test)]
mod tests {
    use super::phash2_binary;

    /// Computed by Erlang/OTP 25: `erlang:phash2(B, 1 bsl 32)` and
    /// `erlang:phash2(B, 7)`.
    #[test]
    fn matches_erlang() {
        for (b, full, seven) in [
            (&b""[..], 147_926_629, 4),
            (b"a", 1_589_197_455, 6),
            (b"abc", 1_306_188_027, 4),
            (b"presence:lobby", 1_114_552_836, 5),
            (b"room:123456789012345", 1_444_730_981, 1),
            (&[b'x'; 37][..], 74_291_542, 3),
        ] {
            assert_eq!(phash2_binary(b, 0), full, "{b:?}");
            assert_eq!(phash2_binary(b, 7), seven, "{b:?}");
            assert_eq!(phash2_binary(b, 1), 0);
        }
    }
}
