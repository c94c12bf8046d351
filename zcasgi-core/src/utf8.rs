//! Incremental UTF-8 validation that carries state across fragments (RFC 6455 §8.1).
//!
//! Text arrives in pieces: TCP reads, frames, fragments. A code point may be split anywhere.
//! [`Utf8Validator`] keeps the (at most three) bytes of an unfinished code point between calls
//! and fails on the first byte that can never be part of valid UTF-8, so a connection can be
//! failed before the rest of a bad message arrives.

/// Why validation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Streaming UTF-8 validator.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next chunk of the text.
    ///
    /// # Errors
    /// As soon as the bytes seen so far cannot be a prefix of valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let width = utf8_width(self.partial[0]);
            let take = (width - have).min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let filled = have + take;
            match std::str::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid, unfinished prefix: the input is exhausted.
                    self.partial_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            input = &input[take..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Checks that the text does not end inside a code point.
    ///
    /// # Errors
    /// If the last code point is unfinished.
    pub fn finish(&self) -> Result<(), Utf8Error> {
        if self.partial_len == 0 {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }

    /// Whether the validator is at a code point boundary.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.partial_len == 0
    }
}

/// Width of the code point that starts with `lead` (1 for bytes that cannot start one: the
/// validator reports those as errors anyway).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all_splits(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes).is_ok();
        // Whole.
        let mut v = Utf8Validator::new();
        let whole = v.feed(bytes).is_ok() && v.finish().is_ok();
        assert_eq!(whole, expected, "{bytes:x?}");
        // One byte at a time.
        let mut v = Utf8Validator::new();
        let bytewise =
            bytes.iter().all(|b| v.feed(std::slice::from_ref(b)).is_ok()) && v.finish().is_ok();
        assert_eq!(bytewise, expected, "bytewise {bytes:x?}");
        // Every two-way split.
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let ok = v.feed(&bytes[..cut]).is_ok()
                && v.feed(&bytes[cut..]).is_ok()
                && v.finish().is_ok();
            assert_eq!(ok, expected, "cut {cut} {bytes:x?}");
        }
    }

    #[test]
    fn valid_texts() {
        for s in
            ["", "hello", "κόσμε", "€", "𝄞 clef", "\u{10FFFF}", "\u{FFFF}\u{E000}", "a\u{7f}\u{80}"]
        {
            check_all_splits(s.as_bytes());
        }
    }

    #[test]
    fn invalid_texts() {
        let cases: &[&[u8]] = &[
            &[0xff],
            &[0xc0, 0x80],             // overlong
            &[0xe0, 0x80, 0x80],       // overlong
            &[0xed, 0xa0, 0x80],       // surrogate
            &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xf5, 0x80, 0x80, 0x80], // invalid lead
            &[0xce, 0xba, 0xe1, 0xbd], // truncated at end
            &[0x80],                   // lone continuation
            b"hello\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        ];
        for c in cases {
            check_all_splits(c);
        }
    }

    #[test]
    fn fails_fast() {
        // Autobahn 6.4.x: the error is reported on the byte that makes the text invalid, before
        // the rest of the message arrives.
        let mut v = Utf8Validator::new();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(v.feed(&[0xf4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xed]).is_ok());
        assert_eq!(v.feed(&[0xa0]), Err(Utf8Error));
    }

    #[test]
    fn exhaustive_two_and_three_byte_sequences() {
        for a in 0u8..=255 {
            for b in 0u8..=255 {
                let bytes = [a, b];
                let expected = std::str::from_utf8(&bytes).is_ok();
                let mut v = Utf8Validator::new();
                let split = v.feed(&[a]).is_ok() && v.feed(&[b]).is_ok() && v.finish().is_ok();
                assert_eq!(split, expected, "{bytes:x?}");
            }
        }
        for a in 0xE0u8..=0xF4 {
            for b in 0x80u8..=0xBF {
                for c in [0x7f, 0x80, 0xbf, 0xc0] {
                    check_all_splits(&[a, b, c, 0x80]);
                }
            }
        }
    }
}
