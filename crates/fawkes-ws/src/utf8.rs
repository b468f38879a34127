//! UTF-8 validation for a text message that arrives in pieces (fragments,
//! or parts of a frame as they are read): each piece is checked as it comes,
//! with the bytes of a character cut at the end of one piece kept for the
//! next, so that invalid text is refused as soon as the bytes that prove it
//! have arrived (RFC 6455 section 8.1).

/// The bytes seen so far are not the beginning of any UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a text message piece by piece. Holds at most the three bytes
/// of an incomplete character.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Utf8Validator {
        Utf8Validator::default()
    }

    /// Checks the next piece: an error when the message can no longer be
    /// valid UTF-8, whatever follows.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // Complete the cut character one byte at a time.
            while let Some((&b, rest)) = input.split_first() {
                let n = usize::from(self.pending_len);
                self.pending[n] = b;
                self.pending_len += 1;
                input = rest;
                match std::str::from_utf8(&self.pending[..=n]) {
                    Ok(_) => {
                        self.pending_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    // still incomplete (at most three bytes: a fourth
                    // completes the character or proves it invalid)
                    Err(_) => {}
                }
            }
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Checks that the message ends on a character's end.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use proptest::prelude::*;

    use super::*;

    /// Feeds `data` cut at `cuts`; `Ok(true)`: valid and complete,
    /// `Ok(false)`: valid so far, `Err(i)`: refused at piece `i`.
    fn pieces(data: &[u8], cuts: &[usize]) -> Result<bool, usize> {
        let mut v = Utf8Validator::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        for (i, &c) in cuts.iter().enumerate() {
            v.feed(&data[at..c]).map_err(|_| i)?;
            at = c;
        }
        Ok(v.finish().is_ok())
    }

    #[test]
    fn characters_cut_anywhere_are_carried_over() {
        let text = "aé€😀z".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(pieces(text, &[a, b]), Ok(true), "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn refuses_as_soon_as_the_text_cannot_be_valid() {
        let mut v = Utf8Validator::new();
        v.feed(b"ok \xce").unwrap(); // the start of a two-byte character
        assert_eq!(v.feed(b"\xba\xe1\xbd"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8)); // a character is cut at the end
        assert_eq!(v.feed(b"\xb9"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        // invalid on its own, whatever follows
        for bad in [&b"\xff"[..], b"\xc0", b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xf5"] {
            let mut v = Utf8Validator::new();
            assert_eq!(v.feed(bad), Err(InvalidUtf8), "{bad:?}");
        }
        // proven invalid by a later piece
        let mut v = Utf8Validator::new();
        v.feed(b"\xf0\x9f").unwrap();
        assert_eq!(v.feed(b"A"), Err(InvalidUtf8));
    }

    proptest! {
        /// Any bytes in any pieces: refused exactly when std refuses the
        /// whole, and never later than the piece that proves it.
        #[test]
        fn agrees_with_std_however_cut(data in proptest::collection::vec(any::<u8>(), 0..40), cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
            let whole = std::str::from_utf8(&data);
            match pieces(&data, &cuts) {
                Ok(complete) => {
                    prop_assert_eq!(complete, whole.is_ok());
                }
                Err(_) => {
                    let e = whole.expect_err("refused text that std accepts");
                    prop_assert!(e.error_len().is_some(), "refused a valid prefix");
                }
            }
            if let Err(e) = whole {
                if e.error_len().is_some() {
                    prop_assert!(pieces(&data, &cuts).is_err());
                }
            }
        }
    }
}
